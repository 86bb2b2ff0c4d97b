"""Server-wide limits: the byte budget across uploads (backpressure, never
over the cap, no deadlock) and the cap on concurrent transfer streams."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from blobgate.server.app import start_gateway
from blobgate.server.storage.limits import ByteBudget
from blobgate.v1 import storage_pb2 as pb
from blobgate.v1 import storage_pb2_grpc
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import upload, upload_requests

MiB = 1024 * 1024


async def test_budget_waits_for_room_and_wakes_on_release() -> None:
    budget = ByteBudget(10, step=1)
    first = budget.claim(6, None)
    await first.cover(6)
    second = budget.claim(6, None)
    waiting = asyncio.create_task(second.cover(6))
    await asyncio.sleep(0.01)
    assert not waiting.done() and budget.used == 6
    first.release()
    await asyncio.wait_for(waiting, 1)
    assert budget.used == 6 and budget.peak == 6


async def test_budget_refuses_a_part_larger_than_a_share() -> None:
    """Every part fits a share (settings check part_size <= the share <=
    memory_budget), so no claim waits for more than there can ever be."""
    budget = ByteBudget(8, 4)
    with pytest.raises(ValueError, match="larger than a share"):
        budget.claim(5, "p")
    with pytest.raises(ValueError, match="between 1 and 8"):
        ByteBudget(8, 9)


async def test_uploads_share_the_budget_without_exceeding_it(
    moto_endpoint: str, bucket: str, s3: Any
) -> None:
    settings = gateway_settings(moto_endpoint, bucket, memory_budget=5 * MiB, parts_in_flight=2)
    gw = await start_gateway(settings)
    try:
        blobs = {f"budget-{i}.bin": os.urandom(12 * MiB + i) for i in range(2)}
        results = await asyncio.gather(
            *(upload(gw, key, blob, rpc_timeout=90) for key, blob in blobs.items())
        )
        for obj, (key, blob) in zip(results, blobs.items(), strict=True):
            assert obj.size == len(blob)
            assert obj.checksums.sha256 == hashlib.sha256(blob).digest()
            stored = await s3.get_object(Bucket=bucket, Key=key)
            assert await stored["Body"].read() == blob
        # Never more buffered than the budget: one part at a time, across both.
        assert gw.budget.peak == 5 * MiB
        assert gw.budget.used == 0
    finally:
        await stop_gateway(gw)


async def test_failed_upload_gives_its_budget_back(moto_endpoint: str, bucket: str) -> None:
    gw = await start_gateway(gateway_settings(moto_endpoint, bucket))
    try:
        bad = pb.Checksums(sha256=b"\0" * 32)
        requests = [pb.UploadRequest(spec=pb.UploadSpec(key="bad.bin", expected=bad))]
        requests += [pb.UploadRequest(data=os.urandom(MiB)) for _ in range(7)]
        with pytest.raises(grpc.RpcError) as failed:
            await upload_requests(gw, requests, rpc_timeout=60)
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert gw.budget.used == 0
    finally:
        await stop_gateway(gw)


async def test_streams_past_the_cap_are_refused(moto_endpoint: str, bucket: str) -> None:
    gw = await start_gateway(gateway_settings(moto_endpoint, bucket, max_streams=1))
    release = asyncio.Event()

    async def held_open() -> AsyncIterator[pb.UploadRequest]:
        yield pb.UploadRequest(spec=pb.UploadSpec(key="held.bin"))
        yield pb.UploadRequest(data=b"first")
        await release.wait()
        yield pb.UploadRequest(data=b" second")

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            first = asyncio.ensure_future(stub.Upload(held_open(), timeout=30))
            async with asyncio.timeout(10):
                while gw.budget.used == 0:  # noqa: ASYNC110 - the first upload is in
                    await asyncio.sleep(0.01)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in stub.Download(pb.DownloadRequest(key="held.bin"), timeout=10):
                    pass
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "concurrent transfers" in (refused.value.details() or "")
            with pytest.raises(grpc.RpcError) as refused_upload:
                await upload(gw, "other.bin", b"x", rpc_timeout=10)
            assert refused_upload.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            listing = await stub.List(pb.ListRequest(), timeout=10)  # unary calls are not capped
            assert list(listing.objects) == []
            release.set()
            assert (await first).object.size == len(b"first second")
            again = await upload(gw, "after.bin", b"ok", rpc_timeout=10)  # the slot is free again
            assert again.size == 2
    finally:
        await stop_gateway(gw)
