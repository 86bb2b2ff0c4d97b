"""Small helpers shared by the contract tests: building upload streams,
reading downloads, checking status codes, polling S3, and gateways or moto
servers of a test's own."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import socket
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aioboto3
import grpc
import pytest
from botocore.exceptions import ClientError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moto.server import ThreadedMotoServer

from blobgate.server.app import Gateway, start_gateway
from blobgate.server.core.settings import Settings
from blobgate.server.logs import JsonFormatter
from blobgate.server.storage.protocols import SHA256_RECORD_KEY
from blobgate.server.storage.s3.sessions import CHECKPOINT_PREFIX
from blobgate.server.storage.s3.sha256_records import record_key
from blobgate.v1 import storage_pb2, storage_pb2_grpc

MiB = 1024 * 1024
PART = 5 * MiB  # the part size gateway_settings() gives every test gateway
SERVICE_NAME = "blobgate.v1.StorageService"

# Keys the contract forbids: empty, over 1024 bytes, leading "/", with a NUL.
BAD_KEYS = ["", "k" * 1025, "/leading-slash", "nul\x00inside"]

Code = grpc.StatusCode


def payload(size: int, seed: int = 0) -> bytes:
    """Reproducible random bytes (incompressible, unlike repeated patterns)."""
    return random.Random(seed).randbytes(size)


# A 1000-byte object and the ranges every reader must serve from it: the
# gateway's Download and each store's open (offset, limit, the bytes read).
RANGED_SIZE = 1000
RANGED_BLOB = payload(RANGED_SIZE, seed=3)
RANGES = [
    pytest.param(0, 0, RANGED_BLOB, id="whole"),
    pytest.param(100, 0, RANGED_BLOB[100:], id="offset"),
    pytest.param(100, 50, RANGED_BLOB[100:150], id="offset-limit"),
    pytest.param(0, 1, RANGED_BLOB[:1], id="first-byte"),
    pytest.param(RANGED_SIZE - 1, 0, RANGED_BLOB[-1:], id="last-byte"),
    pytest.param(-100, 0, RANGED_BLOB[-100:], id="last-100"),
    pytest.param(-100, 30, RANGED_BLOB[-100:-70], id="negative-offset-limit"),
    pytest.param(-RANGED_SIZE, 0, RANGED_BLOB, id="negative-whole"),
    pytest.param(-RANGED_SIZE * 3, 0, RANGED_BLOB, id="negative-past-start"),
    pytest.param(990, 50, RANGED_BLOB[990:], id="limit-clipped"),
    pytest.param(0, RANGED_SIZE * 5, RANGED_BLOB, id="limit-past-end"),
    pytest.param(RANGED_SIZE, 0, b"", id="offset-at-end"),
]


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def spec(key: str, **fields: Any) -> storage_pb2.UploadRequest:
    return storage_pb2.UploadRequest(spec=storage_pb2.UploadSpec(key=key, **fields))


def data(chunk: bytes) -> storage_pb2.UploadRequest:
    return storage_pb2.UploadRequest(data=chunk)


def chunks(blob: bytes, sizes: Sequence[int] = (), rest: int = MiB) -> Iterator[bytes]:
    """``blob`` cut into pieces of the given sizes, then pieces of ``rest``."""
    view = memoryview(blob)
    pos = 0
    for size in sizes:
        yield bytes(view[pos : pos + size])
        pos += size
    while pos < len(blob):
        yield bytes(view[pos : pos + rest])
        pos += rest


def upload_stream(
    key: str, blob: bytes, sizes: Sequence[int] = (), **fields: Any
) -> Iterator[storage_pb2.UploadRequest]:
    """The requests of one well-formed upload: the spec, then data messages."""
    yield spec(key, **fields)
    for piece in chunks(blob, sizes):
        yield data(piece)


def resume_requests(
    upload_id: str, offset: int, blob: bytes
) -> Iterator[storage_pb2.UploadRequest]:
    """An Upload continuing a session at ``offset`` with ``blob[offset:]``."""
    yield storage_pb2.UploadRequest(
        resume=storage_pb2.UploadResume(upload_id=upload_id, write_offset=offset)
    )
    for piece in chunks(blob[offset:]):
        yield data(piece)


def _upload_blocking(
    port: int, requests: Iterable[storage_pb2.UploadRequest], rpc_timeout: float
) -> storage_pb2.Object:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        return stub.Upload(iter(requests), timeout=rpc_timeout).object


async def upload_requests(
    gateway: Gateway,
    requests: Iterable[storage_pb2.UploadRequest],
    rpc_timeout: float = 60.0,
) -> storage_pb2.Object:
    """Send ``requests`` as one Upload; return the committed Object.

    This uses grpc's synchronous client in a thread, not grpc.aio: when a
    server ends a client stream early (as every failing upload should), a
    grpc.aio write still in flight replaces the server's status with
    INTERNAL "Internal error from Core" (grpc/grpc#36066). The synchronous
    client reports the status the server sent."""
    return await asyncio.to_thread(_upload_blocking, gateway.port, requests, rpc_timeout)


async def upload(
    gateway: Gateway,
    key: str,
    blob: bytes = b"",
    *,
    sizes: Sequence[int] = (),
    rpc_timeout: float = 60.0,
    **fields: Any,
) -> storage_pb2.Object:
    """Upload ``blob`` as ``key``; return the committed Object."""
    return await upload_requests(gateway, upload_stream(key, blob, sizes, **fields), rpc_timeout)


async def upload_aio(
    stub: storage_pb2_grpc.StorageServiceStub, key: str, blob: bytes = b"", **fields: Any
) -> storage_pb2.Object:
    """Upload with grpc.aio (only for uploads expected to succeed: see upload_requests)."""
    response = await stub.Upload(upload_stream(key, blob, **fields), timeout=60)
    return response.object


async def write_all(call: Any, requests: Iterable[storage_pb2.UploadRequest]) -> None:
    """Write requests on a stream-unary call; stop quietly once the server has
    ended the call (the test then checks the call's status)."""
    for request in requests:
        if call.done():
            return
        try:
            await call.write(request)
        except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
            return


@dataclass
class Downloaded:
    object: storage_pb2.Object
    data: bytes
    message_sizes: list[int]


async def download(
    stub: storage_pb2_grpc.StorageServiceStub,
    key: str,
    *,
    rpc_timeout: float = 60.0,
    **fields: Any,
) -> Downloaded:
    """Read a whole Download stream, checking its shape: the Object first and
    only first, then data messages of at most 1 MiB."""
    call = stub.Download(storage_pb2.DownloadRequest(key=key, **fields), timeout=rpc_timeout)
    first: storage_pb2.Object | None = None
    pieces: list[bytes] = []
    async for message in call:
        kind = message.WhichOneof("message")
        if first is None:
            assert kind == "object", f"first Download message is {kind!r}, not 'object'"
            first = message.object
            continue
        assert kind == "data", f"a later Download message is {kind!r}, not 'data'"
        assert len(message.data) <= MiB, f"data message of {len(message.data)} bytes > 1 MiB"
        pieces.append(message.data)
    assert first is not None, "Download ended without the Object message"
    return Downloaded(first, b"".join(pieces), [len(p) for p in pieces])


def assert_status(error: Any, code: grpc.StatusCode) -> None:
    """The code is the one the contract names; the message says something
    useful and leaks no Python internals."""
    details = error.details() or ""
    assert error.code() == code, f"expected {code.name}, got {error.code().name}: {details!r}"
    assert details.strip(), f"{code.name} with an empty message"
    assert "Traceback" not in details, details
    assert 'File "' not in details, details


async def expect_status(code: grpc.StatusCode, awaitable: Awaitable[Any]) -> grpc.RpcError:
    """Await ``awaitable``; it must fail with ``code`` (grpc.aio or sync client)."""
    with pytest.raises(grpc.RpcError) as info:
        await awaitable
    assert_status(info.value, code)
    return info.value


async def eventually(
    check: Callable[[], Awaitable[None]], within: float = 15.0, interval: float = 0.05
) -> None:
    """Poll ``check`` until it stops raising AssertionError, or re-raise the
    last failure after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await check()
            return
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(interval)


async def assert_nothing_left(s3: Any, bucket: str, key: str) -> None:
    """The "commit nothing" check: no object at key, no multipart upload left."""
    listing = await s3.list_objects_v2(Bucket=bucket, Prefix=key)
    assert [o["Key"] for o in listing.get("Contents", [])] == []
    uploads = await s3.list_multipart_uploads(Bucket=bucket)
    assert uploads.get("Uploads", []) == []


async def wait_nothing_left(s3: Any, bucket: str, key: str, within: float = 15.0) -> None:
    """assert_nothing_left, polled: a gateway aborts a multipart upload after
    the call has ended for the client, so give it a moment."""
    await eventually(lambda: assert_nothing_left(s3, bucket, key), within=within, interval=0.1)


async def wait_multipart_started(s3: Any, bucket: str, key: str, within: float = 15.0) -> None:
    """Wait until S3 shows a multipart upload for ``key``: the gateway is mid-object."""

    async def started() -> None:
        uploads = (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", [])
        assert key in [u["Key"] for u in uploads], "no multipart upload started yet"

    await eventually(started, within=within, interval=0.05)


@asynccontextmanager
async def running_gateway(
    settings: Settings,
) -> AsyncIterator[tuple[Gateway, storage_pb2_grpc.StorageServiceStub, grpc.aio.Channel]]:
    """A gateway with a test's own settings, a channel to it and a stub."""
    gw = await start_gateway(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            yield gw, storage_pb2_grpc.StorageServiceStub(channel), channel
    finally:
        await gw.stop(grace=1.0)


async def health(channel: grpc.aio.Channel, service: str) -> int:
    """The gateway's health status for ``service`` ("" is the whole server)."""
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(response.status)


class LocalMoto:
    """A moto S3 server of a test's own, to stop and restart under a gateway.

    moto keeps its state per process, not per server, so buckets and objects
    made through one server are visible through every other in the process
    (including the session's ``moto_endpoint``)."""

    def __init__(self, port: int = 0) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.running = False
        self.port = port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        self.running = True
        return self.endpoint

    async def stop(self) -> None:
        if self.running:
            self.running = False
            # Joining the server thread takes up to its 0.5 s poll interval.
            await asyncio.to_thread(self._server.stop)


async def ensure_bucket(endpoint: str, bucket: str) -> None:
    """Create ``bucket`` through ``endpoint`` with a plain S3 client."""
    session = aioboto3.Session()
    async with session.client("s3", endpoint_url=endpoint, region_name="us-east-1") as client:
        try:
            await client.create_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """A plain HTTP request, as a browser or curl would make it (no proxies)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with opener.open(request, timeout=30) as response:
        return response.status, response.read()


class HeldUpload:
    """Upload requests that pause after ``hold_at`` bytes until ``release()``:
    a call the test keeps in flight while it does something to the server."""

    def __init__(self, key: str, blob: bytes, hold_at: int) -> None:
        self.key = key
        self.blob = blob
        self._hold_at = hold_at
        self._holding = asyncio.Event()
        self._released = asyncio.Event()

    async def requests(self) -> AsyncIterator[storage_pb2.UploadRequest]:
        yield spec(self.key, size=len(self.blob))
        for i in range(0, len(self.blob), MiB):
            if i == self._hold_at:
                self._holding.set()
                await self._released.wait()
            yield data(self.blob[i : i + MiB])

    async def holding(self, within: float = 30.0) -> None:
        """Wait until the first ``hold_at`` bytes are sent."""
        await asyncio.wait_for(self._holding.wait(), within)

    def release(self) -> None:
        self._released.set()

    async def completes(self, upload: Awaitable[storage_pb2.UploadResponse]) -> None:
        """``release()``, then ``upload`` (the Upload call of ``requests()``)
        must end within 60 s, having stored every byte."""
        self.release()
        response = await asyncio.wait_for(upload, 60)
        assert response.object.size == len(self.blob)


async def sessions_left(s3: Any, bucket: str) -> tuple[list[str], list[str]]:
    """The session records and the multipart uploads in ``bucket``."""
    records = await s3.list_objects_v2(Bucket=bucket, Prefix=CHECKPOINT_PREFIX)
    uploads = await s3.list_multipart_uploads(Bucket=bucket)
    return (
        [o["Key"] for o in records.get("Contents", [])],
        [u["Key"] for u in uploads.get("Uploads", [])],
    )


async def assert_exact(s3: Any, bucket: str, key: str, blob: bytes) -> None:
    body = await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read()
    assert sha256(body) == sha256(blob)
    head = await s3.head_object(Bucket=bucket, Key=key)
    if "sha256" in head["Metadata"]:
        assert head["Metadata"]["sha256"] == hashlib.sha256(blob).hexdigest()
    else:  # a multipart upload without a declared sha256: in its record
        record = await s3.get_object(Bucket=bucket, Key=record_key(key))
        fields = json.loads(await record["Body"].read())
        assert fields["tag"] == head["Metadata"][SHA256_RECORD_KEY]
        assert fields["etag"] == head["ETag"].strip('"')
        assert fields["sha256"] == hashlib.sha256(blob).hexdigest()


def free_port() -> int:
    """A loopback port nothing listens on right now: for a server that must
    keep its port across restarts, or an address that refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def lines_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[dict[str, Any]]:
    """The lines ``logger`` wrote so far (caplog), as their JSON objects."""
    return [
        json.loads(JsonFormatter().format(record))
        for record in caplog.records
        if record.name == logger
    ]
