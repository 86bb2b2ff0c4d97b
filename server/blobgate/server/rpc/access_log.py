"""The access log and request ids: one line per StorageService call (logger
``blobgate.access``, INFO) with its request id, peer, principal, method,
bucket, key, bytes in and out, duration and final status.

``AccessLogInterceptor`` opens a ``CallRecord`` per call and makes it the
call's record (a contextvar, so the call's task and the tasks it starts
share it); ``call_record()`` is the one way to reach it, and what fills it
in gets it from there or as an argument (see ``CallRecord``). Its place in
the chain is given in ``rpc.chain``. The request id is the server's own,
new for every call, so that no caller can make its lines share an id with
another's; the caller gets it back in the call's trailing metadata, and
``status_codes`` quotes it in an INTERNAL status. An id the caller proposed
in ``x-request-id`` metadata is logged beside it as ``caller_request_id``,
cut to a short token of safe characters.

Nothing else from a request is logged: not an upload id, not a status
message (either may carry one). The audit log (``rpc.audit``) writes its
line of a mutating call from the same record.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from blobgate.server.rpc.interceptors import Behaviour, Handler, MethodInterceptor, rewrap
from blobgate.shared.wire import REQUEST_ID_KEY

log = logging.getLogger("blobgate.access")

# What is kept of a request id a caller proposes: at most this many of the
# characters that are safe in a log line, a header and a file name (a UUID fits).
MAX_CALLER_ID = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# Longer keys are refused anyway (api.md, Keys); the log line stays bounded.
_MAX_LOGGED = 1024


@dataclass(slots=True)
class CallRecord:
    """What the access log line of one call says. The access log interceptor
    sets the request id, method, peer and, for unary calls, the object from
    the request; the rest is filled in by what learns it, each through the
    record it is given or ``call_record()``: the principal by authentication,
    the trace id by tracing, Upload's object and bytes in by its stream
    (``UploadStream``), a resumed Upload's object and Download's bytes out by
    their handlers, a direct Download's fields by ``rpc.direct``. ``bucket``
    None: the call names no bucket; "" means the default bucket. A record
    made with no arguments belongs to no call and is never logged."""

    request_id: str = ""
    method: str = ""
    peer: str = ""
    principal: str = ""  # who called (rpc.authentication); empty: no identity source
    bucket: str | None = None
    key: str = ""
    bytes_in: int = 0  # object bytes received (Upload)
    bytes_out: int = 0  # object bytes sent (Download)
    trace_id: str = ""  # set when the call is traced (rpc.tracing)
    # A Download answered with a presigned GET (rpc.direct): the bytes its URL
    # selects (read from S3 by the caller, not counted in bytes_out) and when
    # the URL expires (ISO 8601). The URL itself is never recorded.
    direct: bool = False
    direct_bytes: int = 0
    direct_parts: int = 0  # parts a direct upload's call signed URLs for
    direct_expires_at: str = ""
    version_id: str = ""  # the version the request names (Copy: its source's)
    caller_request_id: str = ""  # the id the caller proposed, sanitized; "" if none


_current: ContextVar[CallRecord | None] = ContextVar("blobgate_call", default=None)


def call_record() -> CallRecord:
    """The record of the call running in this task. Outside a call (a
    handler or stream run on its own, in a test) a new record that belongs
    to no call, so what writes to it never has to ask."""
    record = _current.get()
    return CallRecord() if record is None else record


def new_request_id() -> str:
    """A call's own id: 16 hex digits (64 random bits), never chosen by a caller."""
    return os.urandom(8).hex()


def caller_request_id(metadata: Any) -> str:
    """The caller's ``x-request-id``, if it proposed one, as it may be
    logged: letters, digits, ``.``, ``_`` and ``-`` only (the rest dropped),
    at most MAX_CALLER_ID of them; "" for none."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            return _UNSAFE.sub("", value[: MAX_CALLER_ID * 4])[:MAX_CALLER_ID]
    return ""


def final_status(
    context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None
) -> grpc.StatusCode:
    """The status a call ends with, once its handler returned or raised ``error``."""
    code: grpc.StatusCode | None = context.code()  # set by abort
    if code is not None:
        return code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _object(bucket: str, key: str = "") -> Callable[[Any], tuple[str, str]]:
    return lambda request: (getattr(request, bucket), getattr(request, key) if key else "")


# Where a unary request names its object (Upload's stream says it itself).
_TARGETS: dict[str, Callable[[Any], tuple[str, str]]] = {
    "Download": _object("bucket", "key"),
    "Stat": _object("bucket", "key"),
    "Presign": _object("bucket", "key"),
    "Delete": _object("bucket", "key"),
    "SetTags": _object("bucket", "key"),
    "List": _object("bucket"),
    "BatchDelete": _object("bucket"),
    "Copy": _object("destination_bucket", "destination_key"),
    "StartResumableUpload": lambda request: (request.spec.bucket, request.spec.key),
}
# Where a request names a version of its object (Copy: of its source).
_VERSIONS = {
    "Download": "version_id",
    "Stat": "version_id",
    "Presign": "version_id",
    "Delete": "version_id",
    "Copy": "source_version_id",
}


def capped(text: str) -> str:
    """``text``, cut to a length a log line can carry."""
    return text if len(text) <= _MAX_LOGGED else f"{text[:_MAX_LOGGED]}...(truncated)"


class AccessLogInterceptor(MethodInterceptor):
    """Gives every StorageService call its request id and logs its line
    (``default_bucket`` stands for a request's empty bucket)."""

    def __init__(self, default_bucket: str) -> None:
        super().__init__()
        self._default_bucket = default_bucket

    def wrap(self, handler: Handler, method: str) -> Handler:
        return rewrap(handler, lambda behaviour: self._logged(behaviour, method))

    def _logged(self, behaviour: Behaviour, method: str) -> Behaviour:
        target = _TARGETS.get(method)
        version_field = _VERSIONS.get(method)

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            record = CallRecord(new_request_id(), method, context.peer())
            record.caller_request_id = caller_request_id(context.invocation_metadata())
            if target is not None and isinstance(request, Message):
                record.bucket, record.key = target(request)
                if version_field is not None:
                    record.version_id = getattr(request, version_field)
            context.set_trailing_metadata(((REQUEST_ID_KEY, record.request_id),))
            token = _current.set(record)
            error: BaseException | None = None
            try:
                return await behaviour(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                _current.reset(token)
                self._log(record, final_status(context, error), time.perf_counter() - started)

        return call

    def _log(self, record: CallRecord, status: grpc.StatusCode, seconds: float) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        bucket = record.bucket
        if bucket == "":
            bucket = self._default_bucket
        fields: dict[str, Any] = {
            "request_id": record.request_id,
            "peer": record.peer,
            "principal": record.principal,
            "method": record.method,
            "bucket": capped(bucket or ""),
            "key": capped(record.key),
            "bytes_in": record.bytes_in,
            "bytes_out": record.bytes_out,
            "duration_ms": round(seconds * 1000, 3),
            "status": status.name,
        }
        if record.direct:
            fields["direct"] = True
            fields["direct_bytes"] = record.direct_bytes
            if record.direct_parts:
                fields["direct_parts"] = record.direct_parts
        if record.version_id:  # only where a request names one
            fields["version_id"] = capped(record.version_id)
        if record.caller_request_id:
            fields["caller_request_id"] = record.caller_request_id
        if record.trace_id:
            fields["trace_id"] = record.trace_id
        log.info("%s %s", record.method, status.name, extra=fields)
