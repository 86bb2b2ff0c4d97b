"""The audit log: one line per call that changes something or hands out
access (logger ``blobgate.audit``, INFO), whatever it ended with, refusals
included: who (principal, peer), what (action, method, bucket, key, bytes),
how it ended (outcome, the status name) and the request id that ties it to
the access line (the server's own; an id the caller proposed is beside it as
``caller_request_id``).

``AuditInterceptor`` writes its line from the access log's ``CallRecord``
(request id; the principal once authentication has set it; Upload's object
and bytes in as the upload stream counts them), the call's request, its
response, and the same final status the access line has; its place in the
chain, and why, is given in ``rpc.chain``. Calls that only read (Stat,
List, QueryUploadStatus) pass through unwrapped; a Download has a line
only when it was a direct read (it hands out a URL: ``rpc.direct``), with
``direct`` true, the bytes its URL selects and when the URL expires.

Never logged: an upload id (a CancelResumableUpload's line names the bucket
decoded from it, not the id), a presigned URL or its signature, headers,
metadata, a token, a status message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC
from typing import Any

import grpc
from google.protobuf.message import Message

from blobgate.server.core.errors import InvalidArgument
from blobgate.server.rpc import upload_id as upload_id_codec
from blobgate.server.rpc.access_log import CallRecord, call_record, capped, final_status
from blobgate.server.rpc.interceptors import Behaviour, Handler, MethodInterceptor, rewrap
from blobgate.v1 import storage_pb2

AUDIT_LOGGER = "blobgate.audit"
log = logging.getLogger(AUDIT_LOGGER)
_errors = logging.getLogger(__name__)

pb = storage_pb2

# The audited methods and their action, in the rights' vocabulary (write
# covers Upload, the resumable RPCs and SetTags); Copy is a read and a write at once.
ACTIONS: dict[str, str] = {
    "Upload": "write",
    "StartResumableUpload": "write",
    "CancelResumableUpload": "write",
    "PresignUploadPart": "write",
    "PresignUploadParts": "write",
    "CompleteDirectUpload": "write",
    "Delete": "delete",
    "BatchDelete": "delete",
    "Copy": "copy",
    "Presign": "presign",
    "SetTags": "write",
    "Download": "read",  # direct reads only (_ONLY_WHEN)
}

# Methods audited only when their call record says so.
_ONLY_WHEN: dict[str, Callable[[CallRecord], bool]] = {
    "Download": lambda record: record.direct,
}

Details = Callable[[Any, Any, dict[str, Any]], None]
"""Adds a method's own fields from its request and response (None when the
call failed) to a line's fields."""


def _cancel(request: Any, response: Any, fields: dict[str, Any]) -> None:
    # The bucket is in the upload id; the id itself is a secret handle.
    try:
        fields["bucket"] = upload_id_codec.decode(request.upload_id)[0]
    except InvalidArgument:
        fields["bucket"] = None  # not a session's: no bucket


def _upload(request: Any, response: Any, fields: dict[str, Any]) -> None:
    if isinstance(response, pb.UploadResponse) and response.object.version_id:
        fields["version_id"] = response.object.version_id


def _delete(request: Any, response: Any, fields: dict[str, Any]) -> None:
    if request.version_id:  # removed for good: the purge right's act
        fields["action"] = "purge"
        fields["version_id"] = request.version_id
    if isinstance(response, pb.DeleteResponse) and response.version_id:
        fields["version_id"] = response.version_id
        fields["delete_marker"] = response.delete_marker


def _batch_delete(request: Any, response: Any, fields: dict[str, Any]) -> None:
    fields["keys"] = len(request.entries)
    fields["versions"] = sum(1 for entry in request.entries if entry.version_id)
    if isinstance(response, pb.BatchDeleteResponse):
        fields["failed"] = sum(1 for result in response.results if result.code != 0)


def _copy(request: Any, response: Any, fields: dict[str, Any]) -> None:
    fields["source_bucket"] = request.source_bucket
    fields["source_key"] = request.source_key
    if request.source_version_id:
        fields["source_version_id"] = request.source_version_id
    if isinstance(response, pb.CopyResponse):
        fields["bytes"] = response.object.size
        if response.object.version_id:
            fields["version_id"] = response.object.version_id


def _presign(request: Any, response: Any, fields: dict[str, Any]) -> None:
    method = request.method  # an open enum: a number no name has arrives as it is
    name = pb.HttpMethod.Name(method) if method in pb.HttpMethod.values() else str(method)
    fields["http_method"] = name.removeprefix("HTTP_METHOD_")
    if isinstance(response, pb.PresignResponse):
        fields["expires_at"] = response.expires_at.ToDatetime(tzinfo=UTC).isoformat(
            timespec="seconds"
        )


def _download(request: Any, response: Any, fields: dict[str, Any]) -> None:
    record = call_record()
    fields["direct"] = True
    fields["bytes"] = record.direct_bytes
    if record.direct_expires_at:
        fields["expires_at"] = record.direct_expires_at


def _direct_upload(request: Any, response: Any, fields: dict[str, Any]) -> None:
    # Bucket and key are the session's (its handler sets them); never the id or URL.
    record = call_record()
    fields["direct"] = True
    fields["bytes"] = record.direct_bytes
    if isinstance(request, pb.PresignUploadPartRequest):
        fields["part_number"] = request.part_number
        if record.direct_expires_at:
            fields["expires_at"] = record.direct_expires_at
    elif isinstance(request, pb.PresignUploadPartsRequest):
        fields["parts"] = len(request.parts)
        if record.direct_expires_at:
            fields["expires_at"] = record.direct_expires_at
    elif record.version_id:
        fields["version_id"] = record.version_id


_DETAILS: dict[str, Details] = {
    "PresignUploadPart": _direct_upload,
    "PresignUploadParts": _direct_upload,
    "CompleteDirectUpload": _direct_upload,
    "Download": _download,
    "Upload": _upload,
    "Delete": _delete,
    "CancelResumableUpload": _cancel,
    "BatchDelete": _batch_delete,
    "Copy": _copy,
    "Presign": _presign,
}


class AuditInterceptor(MethodInterceptor):
    """Writes the audit line of every mutating StorageService call
    (``default_bucket`` stands for a request's empty bucket)."""

    def __init__(self, default_bucket: str) -> None:
        super().__init__()
        self._default_bucket = default_bucket

    def wrap(self, handler: Handler, method: str) -> Handler:
        action = ACTIONS.get(method)
        if action is None:
            return handler
        return rewrap(handler, lambda behaviour: self._audited(behaviour, method, action))

    def _audited(self, behaviour: Behaviour, method: str, action: str) -> Behaviour:
        details = _DETAILS.get(method)
        only_when = _ONLY_WHEN.get(method)

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            response: Any = None
            error: BaseException | None = None
            try:
                response = await behaviour(request, context)
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                if log.isEnabledFor(logging.INFO) and (
                    only_when is None or only_when(call_record())
                ):
                    try:
                        self._log(method, action, details, request, response, context, error)
                    except Exception:
                        # The call's own outcome stands; the failure is on record.
                        _errors.exception("the audit line of a %s call was not written", method)

        return call

    def _log(
        self,
        method: str,
        action: str,
        details: Details | None,
        request: Any,
        response: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        error: BaseException | None,
    ) -> None:
        record = call_record()
        fields: dict[str, Any] = {
            "request_id": record.request_id,
            "principal": record.principal,
            "peer": record.peer,
            "action": action,
            "method": method,
            "bucket": record.bucket,
            "key": record.key,
            "bytes": record.bytes_in,
        }
        # Upload's request is its stream: its details come from the response.
        if details is not None and (isinstance(request, Message) or method == "Upload"):
            details(request, response, fields)
        status = final_status(context, error)
        # A bucket None: the call named none; "": the default bucket.
        for name in ("bucket", "source_bucket"):
            if name in fields:
                bucket = fields[name]
                fields[name] = "" if bucket is None else bucket or self._default_bucket
        for name in (
            "bucket",
            "key",
            "source_bucket",
            "source_key",
            "version_id",
            "source_version_id",
        ):
            if name in fields:
                fields[name] = capped(fields[name])
        fields["outcome"] = status.name
        if record.caller_request_id:
            fields["caller_request_id"] = record.caller_request_id
        if record.trace_id:
            fields["trace_id"] = record.trace_id
        log.info("%s %s %s", fields["action"], fields["method"], status.name, extra=fields)


__all__ = ["ACTIONS", "AuditInterceptor"]
