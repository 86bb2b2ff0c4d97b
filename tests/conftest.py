"""Real parts on loopback: moto's S3 server over HTTP, a grpc.aio gateway on
port 0, and a real stub. Each test gets its own bucket, so tests share one
moto server without seeing each other's objects."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aioboto3
import grpc
import pytest
from moto.server import ThreadedMotoServer
from server_process import ServerProcess

from blobgate.server.app import Gateway, start_gateway
from blobgate.server.core.settings import Settings
from blobgate.server.storage.factory import memory_config
from blobgate.server.storage.memory.backend import MemoryBackend
from blobgate.v1 import storage_pb2_grpc

MiB = 1024 * 1024

# The contract suites' ``stores`` fixture (both store kinds in turn).
pytest_plugins = ["contract_stores", "localstack"]

# botocore's credential chain reads these; moto accepts any.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
for _name in [name for name in os.environ if name.startswith("BLOBGATE_")]:
    del os.environ[_name]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 as a real HTTP server on 127.0.0.1, shared by the session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
async def s3(moto_endpoint: str) -> AsyncIterator[Any]:
    """A plain aioboto3 client to look at S3 behind the gateway's back."""
    session = aioboto3.Session()
    async with session.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1") as client:
        yield client


@pytest.fixture
def bucket() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def gateway_settings(moto_endpoint: str, bucket: str, **overrides: Any) -> Settings:
    """Settings for a test gateway: port 0, this test's bucket, small parts."""
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "s3_endpoint": moto_endpoint,
        "s3_region": "us-east-1",
        "default_bucket": bucket,
        "create_buckets": True,
        "part_size": 5 * MiB,
        "health_interval": 0.2,
        "shutdown_grace": 5.0,
        "drain_delay": 0.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def gateway(
    request: pytest.FixtureRequest, moto_endpoint: str, bucket: str
) -> AsyncIterator[Gateway]:
    """A gateway on moto, or on the in-memory store for tests marked
    ``@pytest.mark.store("memory")`` (a module's ``pytestmark``; a test's own
    ``store("s3")`` marker overrides it): those only talk gRPC, and the
    store contract suite keeps both stores the same."""
    settings = gateway_settings(moto_endpoint, bucket)
    marker = request.node.get_closest_marker("store")
    backend = (
        MemoryBackend(memory_config(settings)) if marker and marker.args == ("memory",) else None
    )
    gw = await start_gateway(settings, backend=backend)
    yield gw
    await stop_gateway(gw)


async def stop_gateway(gw: Gateway, grace: float = 1.0) -> None:
    """Stop a test gateway; if that hangs, show every task's stack and fail."""
    try:
        await asyncio.wait_for(gw.stop(grace=grace), grace + 20)
    except TimeoutError:
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stderr)
        raise


@pytest.fixture
async def channel(gateway: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> storage_pb2_grpc.StorageServiceStub:
    return storage_pb2_grpc.StorageServiceStub(channel)


@pytest.fixture
async def processes() -> AsyncIterator[list[ServerProcess]]:
    """blobgate-server subprocesses a test starts; killed when it ends."""
    started: list[ServerProcess] = []
    yield started
    await asyncio.gather(*(server.kill() for server in started))


async def assert_nothing_left(s3: Any, bucket: str, key: str) -> None:
    """The "commit nothing" check: no object at key, no multipart upload left."""
    listing = await s3.list_objects_v2(Bucket=bucket, Prefix=key)
    assert [o["Key"] for o in listing.get("Contents", [])] == []
    uploads = await s3.list_multipart_uploads(Bucket=bucket)
    assert uploads.get("Uploads", []) == []
