"""Slow, stuck and abusive callers, each beside a well-behaved one (the victim):
idle uploads, downloads whose client stopped reading, calls whose messages
never finish, and floods of listings. The victim must keep working, and what
the abusive calls held (stream slots, memory budget, S3 connections) must
come back. Checked against S3 afterwards where something could be stored."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from blobgate.v1 import storage_pb2
from tests.fakes.raw_h2 import RawCall, grpc_frame
from tests.support.gateways import gateway_settings
from tests.support.helpers import (
    Code,
    MiB,
    assert_nothing_left,
    data,
    download,
    eventually,
    health,
    payload,
    running_gateway,
    spec,
    upload_aio,
)

IDLE = 1.0  # stream_idle_timeout of these gateways, seconds
UPLOAD = "/blobgate.v1.StorageService/Upload"


async def _idle_upload(stub: Any, key: str) -> Any:
    """An Upload that sends its spec, is accepted, then sends nothing."""
    call = stub.Upload()
    await call.write(spec(key))
    await asyncio.wait_for(call.initial_metadata(), 10)
    return call


async def test_idle_uploads_hold_no_budget_and_are_ended(
    moto_endpoint: str, bucket: str, s3: Any
) -> None:
    """Spec-only uploads used to take a whole part of memory_budget each and
    keep it forever: with a budget of one part, one of them made every other
    caller's upload, even of 5 bytes, hang until its deadline."""
    settings = gateway_settings(
        moto_endpoint, bucket, memory_budget=5 * MiB, stream_idle_timeout=IDLE
    )
    async with running_gateway(settings) as (gw, stub, _channel):
        idle = [await _idle_upload(stub, f"idle/{i}") for i in range(3)]
        victim = await asyncio.wait_for(upload_aio(stub, "victim.txt", b"hello"), 10)
        assert victim.size == 5
        assert gw.budget.used == 0
        for call in idle:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(call, 10 * IDLE)
            assert info.value.code() == Code.DEADLINE_EXCEEDED, info.value
            assert "sent nothing" in (info.value.details() or "")
        assert gw.storage.streams.active == 0
    for i in range(3):
        await assert_nothing_left(s3, bucket, f"idle/{i}")


async def test_an_upload_that_stops_midway_is_ended_and_stores_nothing(
    moto_endpoint: str, bucket: str, s3: Any
) -> None:
    """Data, then silence: the part it was filling gives its budget back."""
    settings = gateway_settings(moto_endpoint, bucket, stream_idle_timeout=IDLE)
    async with running_gateway(settings) as (gw, stub, _channel):
        call = await _idle_upload(stub, "stalled.bin")
        await call.write(data(payload(MiB)))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(call, 10 * IDLE)
        assert info.value.code() == Code.DEADLINE_EXCEEDED
        assert gw.budget.used == 0
    await assert_nothing_left(s3, bucket, "stalled.bin")


async def test_stalled_downloads_leave_unary_calls_and_health_alone(
    moto_endpoint: str, bucket: str
) -> None:
    """Downloads whose client stopped reading used to keep their S3
    connections: as many as the pool held, and every other caller's Stat and
    List timed out, and the health probe turned the instance NOT_SERVING."""
    settings = gateway_settings(
        moto_endpoint, bucket, s3_max_connections=2, stream_idle_timeout=3 * IDLE
    )
    blob = payload(24 * MiB)
    async with running_gateway(settings) as (gw, stub, channel):
        await upload_aio(stub, "big.bin", blob)
        stalled = []
        for _ in range(2):
            call = stub.Download(storage_pb2.DownloadRequest(key="big.bin"))
            await call.read()  # the Object; then this client reads no more
            stalled.append(call)
        await asyncio.sleep(0.5)  # the gateway fills the windows and blocks
        stat = await stub.Stat(storage_pb2.StatRequest(key="big.bin"), timeout=5)
        assert stat.object.size == len(blob)
        listed = await stub.List(storage_pb2.ListRequest(), timeout=5)
        assert [o.key for o in listed.objects] == ["big.bin"]
        await gw.probe.check_once()
        assert await health(channel, "") == health_pb2.HealthCheckResponse.SERVING
        # Past the idle timeout the stalled downloads are ended and give their
        # S3 connections back; reading again shows how they ended.
        await asyncio.sleep(3 * IDLE + 1.5)
        assert gw.storage.streams.active == 0
        for call in stalled:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                while await asyncio.wait_for(call.read(), 30) is not grpc.aio.EOF:
                    pass
            assert info.value.code() == Code.DEADLINE_EXCEEDED, info.value
        got = await download(stub, "big.bin", rpc_timeout=30)
        assert got.data == blob
        assert gw.storage.streams.active == 0


def _partial_message(size: int, sent: int) -> bytes:
    """The start of an UploadRequest of ``size`` bytes (under the 8 MiB
    message limit, so gRPC waits for the rest): ``sent`` of them."""
    message = data(b"x" * size).SerializeToString()
    return grpc_frame(message)[: sent + 5]


async def test_unfinished_messages_are_bounded_per_connection_and_server(
    moto_endpoint: str, bucket: str
) -> None:
    """Calls that announce a large message and never finish it never reach a
    handler, so max_streams does not count them; hundreds of them on one
    connection used to grow the server by gigabytes. One connection may open
    max_streams_per_connection of them, and max_calls bounds them all; a
    caller on another connection keeps working beside a connection at its
    limit."""
    settings = gateway_settings(moto_endpoint, bucket, max_streams_per_connection=4, max_calls=6)
    async with running_gateway(settings) as (gw, stub, channel):
        hog = await RawCall.open(gw.port, UPLOAD)
        try:
            assert await hog.peer_max_concurrent_streams() == 4
            await hog.send(_partial_message(7 * MiB, MiB))
            for _ in range(3):
                await hog.open_stream(UPLOAD)
                await hog.send(_partial_message(7 * MiB, MiB))
            with pytest.raises(RuntimeError, match="concurrent streams"):
                await hog.open_stream(UPLOAD)  # past this connection's limit
            # Another caller on its own connection still gets answers.
            stat = stub.Stat(storage_pb2.StatRequest(key="missing"), timeout=5)
            await expect_code(Code.NOT_FOUND, stat)
            # A second connection fills the server's max_calls.
            other = await RawCall.open(gw.port, UPLOAD)
            try:
                await other.send(_partial_message(7 * MiB, MiB))
                await other.open_stream(UPLOAD)
                await other.send(_partial_message(7 * MiB, MiB))
                await asyncio.sleep(0.2)
                full = stub.Stat(storage_pb2.StatRequest(key="missing"), timeout=5)
                await expect_code(Code.RESOURCE_EXHAUSTED, full)
            finally:
                await other.close()
        finally:
            await hog.close()

        # The abandoned calls end with their connections, and free their room.
        async def answers() -> None:
            await expect_code(Code.NOT_FOUND, stub.Stat(storage_pb2.StatRequest(key="missing")))

        await eventually(answers, within=10.0)
        assert await health(channel, "") == health_pb2.HealthCheckResponse.SERVING


async def expect_code(code: grpc.StatusCode, call: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value


async def test_a_flood_of_listings_does_not_hold_up_a_stat(
    moto_endpoint: str, bucket: str, s3: Any
) -> None:
    """Hundreds of concurrent large Lists used to slow a Stat from ~10 ms to
    seconds (it queued behind them), and calls queued past 30 s came back
    CANCELLED. Lists now run max_list_calls at a time in a line of their own,
    and a call that waits in line past unary_queue_timeout is
    RESOURCE_EXHAUSTED."""
    settings = gateway_settings(moto_endpoint, bucket, max_list_calls=2, unary_queue_timeout=2.0)
    async with running_gateway(settings) as (_gw, stub, _channel):
        for i in range(300):
            await s3.put_object(Bucket=bucket, Key=f"many/{i:04d}", Body=b"x")
        request = storage_pb2.ListRequest(prefix="many/", page_size=1000)
        await stub.List(request)  # the channel is up, with the server's settings
        flood = [asyncio.ensure_future(stub.List(request)) for _ in range(120)]
        await asyncio.sleep(0.1)  # the flood is in, two at a time
        stat = await stub.Stat(storage_pb2.StatRequest(key="many/0001"), timeout=10)
        finished_by_then = sum(call.done() for call in flood)
        assert stat.object.size == 1
        assert finished_by_then < len(flood) // 2, "the Stat waited behind the listings"
        results = await asyncio.gather(*flood, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    listed = [r for r in results if not isinstance(r, BaseException)]
    assert listed and all(len(page.objects) == 300 for page in listed)
    assert errors, "2 at a time, 120 Lists cannot all finish within the queue timeout"
    for error in errors:
        assert isinstance(error, grpc.aio.AioRpcError), error
        assert error.code() == Code.RESOURCE_EXHAUSTED, error
        assert "busy" in (error.details() or "")
