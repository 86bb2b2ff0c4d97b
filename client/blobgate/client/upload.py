"""The Upload call: the spec first, the server's acceptance in its initial
metadata, then the data (see Upload in protos/blobgate/v1/storage.proto)."""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any, TypeVar

import grpc

from blobgate.client.errors import BlobgateError, is_lost_status, translate_errors
from blobgate.client.models import ObjectInfo
from blobgate.client.progress import Progress, counted
from blobgate.client.retry import CallBudget, connected
from blobgate.client.sources import PreparedSource, close_chunks
from blobgate.client.transport import Endpoint, Transport
from blobgate.client.wire import UPLOAD_ACCEPTED, UPLOAD_ACCEPTED_KEY, call_metadata
from blobgate.v1 import storage_pb2

T = TypeVar("T")
Call = grpc.aio.StreamUnaryCall[storage_pb2.UploadRequest, storage_pb2.UploadResponse]


class _Refused(Exception):
    """The server ended an upload without accepting its spec."""


def _settled(coroutine: Coroutine[Any, Any, T]) -> T | None:
    """The value of a coroutine that ends without waiting (a done call's
    status and metadata); None if it would wait."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    coroutine.close()
    return None


class _FirstStatus:
    """The status of an Upload as grpc.aio first sets it. A write that fails
    as the server ends the call sets INTERNAL "Internal error from Core"
    (grpc/grpc#36066), before or after the server's status arrives, and the
    later one replaces the earlier: one of the two is the server's. The done
    callback runs once, when the first is set, and reads it without waiting."""

    def __init__(self, call: Call) -> None:
        self.error: grpc.aio.AioRpcError | None = None
        call.add_done_callback(self._done)

    def _done(self, call: Call) -> None:
        code = _settled(call.code())
        if code is None or code == grpc.StatusCode.OK:
            return
        self.error = grpc.aio.AioRpcError(
            code,
            _settled(call.initial_metadata()) or grpc.aio.Metadata(),
            _settled(call.trailing_metadata()) or grpc.aio.Metadata(),
            _settled(call.details()),
        )

    def real(self, error: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
        """The server's status for a failed call: ``error``, unless grpc.aio
        lost it and it was seen first."""
        if is_lost_status(error) and self.error is not None and not is_lost_status(self.error):
            return self.error
        return error


def upload_spec(
    key: str,
    prepared: PreparedSource,
    *,
    bucket: str,
    content_type: str,
    metadata: Mapping[str, str] | None,
    if_none_match: bool,
    if_match: str,
    size: int | None,
    tags: Mapping[str, str] | None = None,
    storage_class: str = "",
    expire_days: int = 0,
) -> storage_pb2.UploadSpec:
    """The spec of an upload of ``prepared`` as ``key``: the content type
    guessed from the key's extension unless given, the size declared (else
    the source's when known) and the sha256 when known."""
    spec = storage_pb2.UploadSpec(
        bucket=bucket,
        key=key,
        content_type=content_type or mimetypes.guess_type(key)[0] or "",
        metadata=metadata or {},
        if_none_match=if_none_match,
        if_match=if_match,
        tags=tags or {},
        storage_class=storage_class,
        expire_days=expire_days,
    )
    declared = size if size is not None else prepared.size
    if declared is not None:
        spec.size = declared
    if prepared.sha256 is not None:
        spec.expected.sha256 = prepared.sha256
    return spec


async def upload_once(
    transport: Transport,
    budget: CallBudget,
    spec: storage_pb2.UploadSpec,
    chunks: AsyncIterator[bytes],
    progress: Progress | None,
) -> ObjectInfo:
    """One Upload of ``spec`` and ``chunks`` within ``budget``'s deadline.
    Only connecting is retried (within ``budget``), never the call once
    started: a stream is not replayed, and the server may have seen it."""
    try:
        endpoint = await connected(transport, budget)
    except BaseException:
        await close_chunks(chunks)
        raise
    if progress is not None:
        chunks = counted(chunks, progress, spec.size if spec.HasField("size") else None)
    first = storage_pb2.UploadRequest(spec=spec)
    try:
        info = await send_upload(endpoint, first, chunks, budget.remaining())
    except BlobgateError as exc:
        transport.release(endpoint, exc)
        raise
    except BaseException:
        transport.release(endpoint)
        raise
    transport.release(endpoint)
    return info


async def send_upload(
    endpoint: Endpoint,
    first: storage_pb2.UploadRequest,
    chunks: AsyncIterator[bytes],
    time_left: float | None,
) -> ObjectInfo:
    """Send ``first`` (a spec or a resume), wait for the server to accept it,
    then send ``chunks``; the committed object. ``chunks`` is closed in any case."""
    call = endpoint.stub.Upload(timeout=time_left, metadata=call_metadata())
    first_status = _FirstStatus(call)
    with translate_errors():
        try:
            await call.write(first)
            # Wait for the server to accept the spec before writing data: a
            # refused spec then ends the call with no write in flight (a
            # grpc.aio write that races the server's status replaces that
            # status with INTERNAL: grpc/grpc#36066).
            metadata = await call.initial_metadata()
            if dict(metadata or ()).get(UPLOAD_ACCEPTED_KEY) != UPLOAD_ACCEPTED:
                raise _Refused
            async for chunk in chunks:
                if call.done():
                    # The server ended the call early; awaiting it below says why.
                    break
                await call.write(storage_pb2.UploadRequest(data=chunk))
            else:
                await call.done_writing()
        except _Refused:
            pass  # the call is ending: awaiting it below gives the server's status
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            # A write found the call over; its status is the error to report.
            if not call.done():
                raise
        except BaseException:
            # The source failed (or we were cancelled): abort, so nothing is committed.
            call.cancel()
            raise
        finally:
            await close_chunks(chunks)
        try:
            response: storage_pb2.UploadResponse = await call
        except grpc.aio.AioRpcError as error:
            real = first_status.real(error)
            if real is error:
                raise
            raise real from error
    return ObjectInfo.from_proto(response.object)
