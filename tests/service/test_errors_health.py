"""The error table of docs/api.md, health and reflection.

Every failure is a specific status with a message that says what to fix; no
UNKNOWN, no traceback text (helpers.assert_status checks the message)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from botocore.exceptions import ClientError
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from blobgate.server.app import start_gateway
from blobgate.v1 import storage_pb2
from tests.support.gateways import gateway_settings
from tests.support.helpers import (
    BAD_KEYS,
    SERVICE_NAME,
    Code,
    LocalMoto,
    assert_nothing_left,
    download,
    ensure_bucket,
    eventually,
    expect_status,
    health,
    running_gateway,
    upload,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Call = Callable[[], Awaitable[Any]]


def rpc_calls(gateway: Any, stub: Any, bucket: str, key: str) -> dict[str, Call]:
    """One call of every RPC against ``bucket``/``key``."""
    return {
        "Upload": lambda: upload(gateway, key, b"some bytes", bucket=bucket, rpc_timeout=20),
        "Download": lambda: download(stub, key, bucket=bucket, rpc_timeout=20),
        "Stat": lambda: stub.Stat(storage_pb2.StatRequest(bucket=bucket, key=key), timeout=20),
        "List": lambda: stub.List(storage_pb2.ListRequest(bucket=bucket, prefix=key), timeout=20),
        "Presign": lambda: stub.Presign(
            storage_pb2.PresignRequest(bucket=bucket, key=key, method=storage_pb2.HTTP_METHOD_GET),
            timeout=20,
        ),
        "Delete": lambda: stub.Delete(
            storage_pb2.DeleteRequest(bucket=bucket, key=key), timeout=20
        ),
    }


KEYED_RPCS = ["Upload", "Download", "Stat", "Presign", "Delete"]
ALL_RPCS = [*KEYED_RPCS, "List"]


# --- bad keys --------------------------------------------------------------------


@pytest.mark.parametrize("rpc", KEYED_RPCS)
@pytest.mark.parametrize("key", BAD_KEYS, ids=["empty", "1025-bytes", "leading-slash", "nul"])
async def test_bad_key(gateway: Any, stub: Any, s3: Any, bucket: str, rpc: str, key: str) -> None:
    await expect_status(Code.INVALID_ARGUMENT, rpc_calls(gateway, stub, "", key)[rpc]())
    listing = await s3.list_objects_v2(Bucket=bucket)
    assert listing.get("Contents", []) == []


async def test_bad_key_upload_of_multipart_size_stores_nothing(
    gateway: Any, s3: Any, bucket: str
) -> None:
    await expect_status(
        Code.INVALID_ARGUMENT, upload(gateway, "/slash.bin", bytes(11 * 1024 * 1024))
    )
    await assert_nothing_left(s3, bucket, "")


# --- buckets ---------------------------------------------------------------------


@pytest.mark.parametrize("rpc", ALL_RPCS)
async def test_bucket_not_allowed(gateway: Any, stub: Any, s3: Any, rpc: str) -> None:
    # One bucket that exists in S3 and one that does not: both are refused alike.
    existing = f"t-other-{uuid.uuid4().hex[:8]}"
    await s3.create_bucket(Bucket=existing)
    for name in (existing, f"t-absent-{uuid.uuid4().hex[:8]}"):
        error = await expect_status(
            Code.PERMISSION_DENIED, rpc_calls(gateway, stub, name, "k.txt")[rpc]()
        )
        assert name in error.details(), "the message should name the refused bucket"
    assert (await s3.list_objects_v2(Bucket=existing)).get("Contents", []) == []


async def test_allowed_bucket_missing_in_s3(moto_endpoint: str, s3: Any, bucket: str) -> None:
    missing = f"missing-{uuid.uuid4().hex[:10]}"
    await s3.create_bucket(Bucket=bucket)
    settings = gateway_settings(
        moto_endpoint, bucket, allowed_buckets=[bucket, missing], create_buckets=False
    )
    async with running_gateway(settings) as (gw, stub, _channel):
        calls = rpc_calls(gw, stub, missing, "k.txt")
        for rpc in ["Upload", "Download", "Stat", "List", "Delete"]:
            error = await expect_status(Code.NOT_FOUND, calls[rpc]())
            assert missing in error.details(), f"{rpc}: the message should name the bucket"
        # The default bucket works.
        obj = await upload(gw, "fine.txt", b"fine")
        assert obj.bucket == bucket
    # The gateway did not create it behind the operator's back.
    with pytest.raises(ClientError, match=r"404|Not Found|NoSuchBucket"):
        await s3.head_bucket(Bucket=missing)


# --- S3 down -----------------------------------------------------------------------


async def test_s3_down_is_unavailable(bucket: str) -> None:
    moto = LocalMoto()
    endpoint = moto.start()
    try:
        settings = gateway_settings(endpoint, bucket, s3_max_attempts=1, s3_connect_timeout=2.0)
        async with running_gateway(settings) as (gw, stub, _channel):
            await upload(gw, "there.txt", b"before the outage")
            await moto.stop()
            calls = rpc_calls(gw, stub, "", "there.txt")
            for rpc in ["Upload", "Download", "Stat", "List", "Delete"]:
                await expect_status(Code.UNAVAILABLE, calls[rpc]())
    finally:
        await moto.stop()


# --- health --------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", SERVICE_NAME])
async def test_health_serving(channel: Any, service: str) -> None:
    async def serving() -> None:
        assert await health(channel, service) == SERVING

    await eventually(serving, within=10)


async def test_health_follows_s3(bucket: str) -> None:
    moto = LocalMoto()
    endpoint = moto.start()
    restarted: LocalMoto | None = None
    try:
        settings = gateway_settings(
            endpoint, bucket, s3_max_attempts=1, s3_connect_timeout=1.0, s3_read_timeout=2.0
        )
        async with running_gateway(settings) as (_gw, _stub, channel):

            def expect(status: int) -> Callable[[], Awaitable[None]]:
                async def check() -> None:
                    for service in ("", SERVICE_NAME):
                        assert await health(channel, service) == status, service

                return check

            await eventually(expect(SERVING), within=10)
            await moto.stop()
            await eventually(expect(NOT_SERVING), within=15)

            restarted = LocalMoto(port=moto.port)
            restarted.start()
            await ensure_bucket(restarted.endpoint, bucket)
            await eventually(expect(SERVING), within=15)
    finally:
        await moto.stop()
        if restarted is not None:
            await restarted.stop()


async def test_health_not_serving_once_shutdown_starts(moto_endpoint: str, bucket: str) -> None:
    gw = await start_gateway(gateway_settings(moto_endpoint, bucket))
    stopping: asyncio.Future[None] | None = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=20)
            seen = [(await watch.read()).status]
            while seen[-1] != SERVING:
                seen.append((await watch.read()).status)
            # The open Watch keeps the server in its grace period while it stops.
            stopping = asyncio.ensure_future(gw.stop(grace=2.0))
            update = await watch.read()
            assert update is not grpc.aio.EOF and update.status == NOT_SERVING, update
            watch.cancel()
    finally:
        await (stopping if stopping is not None else gw.stop(grace=1.0))


async def test_stop_never_hangs_on_the_health_probe(moto_endpoint: str, bucket: str) -> None:
    # A probe every 5 ms, and stops landing at different points of its cycle:
    # stopping must not depend on when a probe happens to finish.
    settings = gateway_settings(moto_endpoint, bucket, health_interval=0.005)
    for attempt in range(50):
        gw = await start_gateway(settings)
        await asyncio.sleep(0.003 * (attempt % 10))  # vary the phase, not synchronisation
        stopping = asyncio.ensure_future(gw.stop(grace=1.0))
        done, _ = await asyncio.wait([stopping], timeout=5)
        if not done:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping
            await asyncio.wait_for(gw.stop(grace=0), 10)
            pytest.fail(f"Gateway.stop() still running after 5 s (stop number {attempt + 1})")


# --- reflection ------------------------------------------------------------------------


@pytest.fixture
async def reflecting(moto_endpoint: str, bucket: str) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a gateway with the reflection setting on (off by default)."""
    async with running_gateway(gateway_settings(moto_endpoint, bucket, reflection=True)) as (
        _,
        _,
        channel,
    ):
        yield channel


async def _reflect(channel: Any, request: Any) -> Any:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([request]), timeout=10)
    responses = [response async for response in call]
    assert len(responses) == 1
    return responses[0]


async def test_reflection_lists_the_service(reflecting: grpc.aio.Channel) -> None:
    response = await _reflect(reflecting, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {service.name for service in response.list_services_response.service}
    assert SERVICE_NAME in names
    assert "grpc.health.v1.Health" in names


async def test_reflection_describes_the_service(reflecting: grpc.aio.Channel) -> None:
    response = await _reflect(
        reflecting, reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME)
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    [storage] = [f for f in files if f.package == "blobgate.v1"]
    [service] = storage.service
    expected = storage_pb2.DESCRIPTOR.services_by_name["StorageService"].methods
    assert sorted(m.name for m in service.method) == sorted(m.name for m in expected)
