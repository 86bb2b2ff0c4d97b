"""Real parts on loopback: an S3 server over HTTP, a grpc.aio gateway on
port 0, and a real stub. Each test gets its own bucket, so tests share one
S3 server without seeing each other's objects.

Which S3: moto's server (``moto_endpoint``) by default. Tests or modules
marked ``@pytest.mark.both_s3s`` run once on moto and once on LocalStack's
S3 (``localstack_endpoint``, a stricter S3: see tests/support/localstack.py), and
``both_s3s(memory=True)`` adds a run on the in-memory store first. The
``store_kind`` fixture names the run (``memory``, ``moto``, ``localstack``)
and ``s3_endpoint``, ``s3``, ``gateway`` and the contract suites' ``stores``
follow it; ``moto_endpoint`` stays moto's. ``--s3 moto`` or ``--s3
localstack`` keeps only that S3's runs of the marked tests (default: both).
``@pytest.mark.xfail_on_localstack(reason)`` marks a test's (or a
``pytest.param``'s) LocalStack run as a strict xfail: a known defect that
only the stricter S3 shows.

Which tests ``make test-fast`` leaves out (those that start a process or
talk to an S3 server) is tests/support/selection.py's business. Helpers the
tests share are in tests/support/, imported by name; the shared fixtures are
here."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aioboto3
import grpc
import pytest
from moto.server import ThreadedMotoServer

from blobgate.server.app import Gateway, start_gateway
from blobgate.server.storage.factory import memory_config
from blobgate.server.storage.memory.backend import MemoryBackend
from blobgate.v1 import storage_pb2_grpc
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.localstack import localstack_python, running_localstack
from tests.support.server_process import ServerProcess

# The markers slow and s3_server, which make test-fast leaves out.
pytest_plugins = ["tests.support.selection"]

# botocore's credential chain reads these. moto accepts any; LocalStack checks
# presigned URLs against the secret "test" (its default for any access key).
# Set, not defaulted: tests never sign with a developer's own credentials.
os.environ["AWS_ACCESS_KEY_ID"] = "test"
os.environ["AWS_SECRET_ACCESS_KEY"] = "test"
os.environ.pop("AWS_SESSION_TOKEN", None)
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


@pytest.fixture(scope="session")
def localstack_endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    """LocalStack's S3 endpoint, shared by the session; skipped (an error
    under CI) where LocalStack is not installed, and skipped with ``--s3 moto``."""
    if request.config.getoption("s3") == "moto":
        pytest.skip("LocalStack's runs are off (--s3 moto)")
    python = localstack_python()
    if python is None:
        reason = (
            "LocalStack is not installed: run `make localstack` "
            "(needs Python 3.13) or set LOCALSTACK_PYTHON"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with running_localstack(python) as endpoint:
        yield endpoint


S3_KINDS = ("moto", "localstack")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--s3",
        choices=[*S3_KINDS, "both"],
        default="both",
        help="the S3s that tests marked both_s3s run on (default: both)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked both_s3s runs once per S3 (and store kind)."""
    marker = metafunc.definition.get_closest_marker("both_s3s")
    if marker is None or "store_kind" not in metafunc.fixturenames:
        return
    chosen = metafunc.config.getoption("s3")
    kinds = [kind for kind in S3_KINDS if chosen in (kind, "both")]
    if marker.kwargs.get("memory"):
        kinds.insert(0, "memory")
    metafunc.parametrize("store_kind", kinds)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """xfail_on_localstack: a strict xfail on the LocalStack run only."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("store_kind") != "localstack":
            continue
        for marker in item.iter_markers("xfail_on_localstack"):
            item.add_marker(pytest.mark.xfail(strict=True, reason=marker.args[0]))


@pytest.fixture
def store_kind() -> str:
    """The store a test runs on: moto's S3, unless the test is marked
    both_s3s (then each of ``S3_KINDS`` in turn, and ``memory`` with
    ``memory=True``)."""
    return "moto"


@pytest.fixture
def s3_endpoint(request: pytest.FixtureRequest, store_kind: str) -> str:
    """The endpoint of this test's S3 (moto's for an in-memory run, which
    stores nothing there)."""
    kind = "moto" if store_kind == "memory" else store_kind
    endpoint: str = request.getfixturevalue(f"{kind}_endpoint")
    return endpoint


@pytest.fixture
async def s3(s3_endpoint: str) -> AsyncIterator[Any]:
    """A plain aioboto3 client to look at S3 behind the gateway's back."""
    session = aioboto3.Session()
    async with session.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1") as client:
        yield client


@pytest.fixture
def bucket() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def gateway(
    request: pytest.FixtureRequest, store_kind: str, s3_endpoint: str, bucket: str
) -> AsyncIterator[Gateway]:
    """A gateway on the test's S3, or on the in-memory store for an in-memory
    run and for tests marked ``@pytest.mark.store("memory")`` (a module's
    ``pytestmark``; a test's own ``store("s3")`` or ``both_s3s`` marker
    overrides it): those only talk gRPC, and the store contract suite keeps
    both stores the same."""
    settings = gateway_settings(s3_endpoint, bucket)
    marker = request.node.get_closest_marker("store")
    if request.node.get_closest_marker("both_s3s"):
        memory = store_kind == "memory"
    else:
        memory = bool(marker and marker.args == ("memory",))
    backend = MemoryBackend(memory_config(settings)) if memory else None
    gw = await start_gateway(settings, backend=backend)
    yield gw
    await stop_gateway(gw)


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
