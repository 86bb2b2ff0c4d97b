"""The Upload call: the spec first, the server's acceptance in its initial
metadata, then the data (see Upload in protos/blobgate/v1/storage.proto)."""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import AsyncIterator, Mapping

import grpc

from blobgate.client.errors import BlobgateError, translate_errors
from blobgate.client.models import ObjectInfo
from blobgate.client.progress import Progress, counted
from blobgate.client.retry import CallBudget
from blobgate.client.sources import PreparedSource, close_chunks
from blobgate.client.transport import Endpoint, Transport
from blobgate.client.wire import UPLOAD_ACCEPTED, UPLOAD_ACCEPTED_KEY, call_metadata
from blobgate.v1 import storage_pb2


class _Refused(Exception):
    """The server ended an upload without accepting its spec."""


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
    """One Upload of ``spec`` and ``chunks`` within ``budget``'s deadline,
    never retried: a stream is not replayed."""
    try:
        endpoint = await transport.acquire(budget.tried, budget.remaining())
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
        response: storage_pb2.UploadResponse = await call
    return ObjectInfo.from_proto(response.object)
