"""Resumable sessions driven over gRPC: their persisted size, and a stream
dropped as a vanished client would drop it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.support.helpers import PART, eventually, resume_requests


async def persisted(stub: storage_pb2_grpc.StorageServiceStub, upload_id: str) -> int:
    request = storage_pb2.QueryUploadStatusRequest(upload_id=upload_id)
    return int((await stub.QueryUploadStatus(request, timeout=10)).persisted_size)


async def interrupted(
    stub: storage_pb2_grpc.StorageServiceStub, upload_id: str, blob: bytes, stop_at: int
) -> int:
    """Send ``blob[:stop_at]`` into a session, wait until S3 holds every whole
    part of it, then drop the call as a vanished client would; the persisted size."""
    sent = asyncio.Event()

    async def requests() -> AsyncIterator[storage_pb2.UploadRequest]:
        for request in resume_requests(upload_id, 0, blob[:stop_at]):
            yield request
        sent.set()
        await asyncio.Event().wait()  # never half-close: the call is cut

    call = stub.Upload(requests(), timeout=60)
    await asyncio.wait_for(sent.wait(), 30)
    whole = stop_at // PART * PART

    async def stored() -> None:
        assert await persisted(stub, upload_id) == whole

    await eventually(stored)
    call.cancel()
    return whole
