"""The client library against a real gateway on moto: round trips for every
kind of upload source, atomic download_to, paging, presign, delete, and
errors that arrive as BlobgateError with the right code."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
import urllib.request
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from blobgate.client import (
    BlobgateError,
    Client,
    ClientOptions,
    Endpoint,
    ObjectInfo,
)
from blobgate.client.download import range_size
from blobgate.client.pool import Pool
from blobgate.server.app import Gateway
from blobgate.shared.tls import TLSConfig
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.support.helpers import assert_nothing_left, free_port, payload
from tests.support.stat_server import TLS_NAME, Pems, StatOnly, issue

MiB = 1024 * 1024
Code = grpc.StatusCode


def names(directory: Path) -> list[str]:
    """The sorted file names in ``directory``."""
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[Client]:
    async with Client(f"127.0.0.1:{gateway.port}") as c:
        yield c


async def read_all(client: Client, key: str, **options: Any) -> bytes:
    return b"".join([chunk async for chunk in client.download(key, **options)])


async def test_bytes_round_trip(client: Client, bucket: str) -> None:
    data = payload(3000)
    info = await client.upload("docs/note.txt", data, metadata={"Owner": "ops"})

    assert isinstance(info, ObjectInfo)
    assert (info.bucket, info.key, info.size) == (bucket, "docs/note.txt", len(data))
    assert info.etag and '"' not in info.etag
    assert info.content_type == "text/plain"
    assert info.sha256 == hashlib.sha256(data).digest()
    assert info.last_modified is not None and info.last_modified.tzinfo is not None

    stat = await client.stat("docs/note.txt")
    assert stat.metadata.get("owner") == "ops"
    assert stat.sha256 == hashlib.sha256(data).digest()
    assert stat.etag == info.etag
    assert await read_all(client, "docs/note.txt") == data


async def test_empty_bytes(client: Client) -> None:
    info = await client.upload("empty.bin", b"")
    assert info.size == 0
    assert await read_all(client, "empty.bin") == b""


async def test_path_round_trip_multipart(client: Client, tmp_path: Path) -> None:
    # 12 MiB: three parts of the test gateway's 5 MiB, the last one short.
    data = payload(12 * MiB, seed=1)
    source = tmp_path / "big.bin"
    source.write_bytes(data)

    info = await client.upload("big.bin", str(source), content_type="application/x-test")
    assert info.size == len(data)
    assert info.content_type == "application/x-test"
    assert info.sha256 == hashlib.sha256(data).digest()

    target = tmp_path / "copy.bin"
    got = await client.download_to("big.bin", target)
    assert got.size == len(data)
    assert target.read_bytes() == data
    assert names(tmp_path) == ["big.bin", "copy.bin"]
    # Created like any new file (umask applies), not with a temp file's 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


async def test_async_iterator_any_chunk_sizes(client: Client) -> None:
    data = payload(4 * MiB + 123, seed=2)
    sizes = [1, 10, 3 * MiB, 5, MiB - 16]  # one chunk above the message size we send

    async def pieces() -> AsyncIterator[bytes]:
        pos = 0
        for size in [*sizes, len(data)]:
            yield data[pos : pos + size]
            pos += size
            await asyncio.sleep(0)

    info = await client.upload("stream.bin", pieces())
    assert info.size == len(data)
    assert (await client.stat("stream.bin")).sha256 == hashlib.sha256(data).digest()
    assert await read_all(client, "stream.bin") == data


async def test_file_object(client: Client) -> None:
    data = payload(MiB + 7, seed=3)
    info = await client.upload("file.dat", io.BytesIO(data), size=len(data))
    assert info.size == len(data)
    assert await read_all(client, "file.dat") == data


async def test_failing_source_raises_its_error_and_commits_nothing(
    client: Client, s3: Any, bucket: str
) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield payload(6 * MiB)  # enough for a multipart upload to start
        raise ValueError("source broke")

    with pytest.raises(ValueError, match="source broke"):
        await client.upload("broken.bin", broken())
    # The server aborts the multipart upload once it sees the cancel.
    deadline = time.monotonic() + 10
    while True:
        try:
            await assert_nothing_left(s3, bucket, "broken.bin")
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.both_s3s
async def test_upload_preconditions_and_size(client: Client) -> None:
    first = await client.upload("p.txt", b"one", if_none_match=True)
    with pytest.raises(BlobgateError) as caught:
        await client.upload("p.txt", b"two", if_none_match=True)
    assert caught.value.code == Code.FAILED_PRECONDITION

    with pytest.raises(BlobgateError) as caught:
        await client.upload("p.txt", b"two", if_match="not-the-etag")
    assert caught.value.code == Code.FAILED_PRECONDITION
    await client.upload("p.txt", b"two", if_match=first.etag)

    with pytest.raises(BlobgateError) as caught:
        await client.upload("p.txt", io.BytesIO(b"three"), size=4)
    assert caught.value.code == Code.OUT_OF_RANGE
    assert await read_all(client, "p.txt") == b"two"


async def test_bad_key_is_invalid_argument(client: Client) -> None:
    with pytest.raises(BlobgateError) as caught:
        await client.upload("/leading-slash", b"x")
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert caught.value.message


async def test_download_ranges(client: Client) -> None:
    data = payload(2 * MiB + 10, seed=4)
    await client.upload("r.bin", data)
    assert await read_all(client, "r.bin", offset=5, limit=100) == data[5:105]
    assert await read_all(client, "r.bin", offset=-10) == data[-10:]
    assert await read_all(client, "r.bin", offset=MiB) == data[MiB:]
    with pytest.raises(BlobgateError) as caught:
        await read_all(client, "r.bin", offset=len(data) + 1)
    assert caught.value.code == Code.OUT_OF_RANGE


async def test_open_download_describes_first(client: Client) -> None:
    info = await client.upload("d.json", b"{}")
    async with await client.open_download("d.json") as stream:
        assert stream.info.etag == info.etag
        assert stream.info.content_type == "application/json"
        assert [chunk async for chunk in stream] == [b"{}"]


async def test_failed_download_to_leaves_no_file(client: Client, tmp_path: Path) -> None:
    await client.upload("here.txt", b"new content")
    kept = tmp_path / "kept.txt"
    kept.write_bytes(b"old content")

    with pytest.raises(BlobgateError) as caught:
        await client.download_to("missing.txt", tmp_path / "missing.txt")
    assert caught.value.code == Code.NOT_FOUND

    with pytest.raises(BlobgateError) as caught:
        await client.download_to("here.txt", kept, if_match="wrong-etag")
    assert caught.value.code == Code.FAILED_PRECONDITION

    assert names(tmp_path) == ["kept.txt"]
    assert kept.read_bytes() == b"old content"


async def test_checksum_mismatch_raises_and_leaves_no_file(
    client: Client, s3: Any, bucket: str, tmp_path: Path
) -> None:
    # Written behind the gateway's back with a sha256 that does not match.
    await s3.put_object(
        Bucket=bucket, Key="bad.bin", Body=b"actual bytes", Metadata={"sha256": "00" * 32}
    )
    with pytest.raises(BlobgateError) as caught:
        await client.download_to("bad.bin", tmp_path / "bad.bin")
    assert caught.value.code == Code.DATA_LOSS
    assert names(tmp_path) == []

    with pytest.raises(BlobgateError) as caught:
        await read_all(client, "bad.bin")
    assert caught.value.code == Code.DATA_LOSS
    # A range is not checked against the whole object's sha256.
    assert await read_all(client, "bad.bin", offset=0, limit=6) == b"actual"


async def test_error_in_the_middle_of_a_download_is_wrapped(
    gateway: Gateway, client: Client
) -> None:
    await client.upload("mid.bin", payload(24 * MiB, seed=5))
    async with Client(f"127.0.0.1:{gateway.port}", stream_timeout=1.0) as slow:
        stream = slow.download("mid.bin")
        first = await anext(stream)
        assert first
        await asyncio.sleep(1.5)  # past the deadline, long before the end
        with pytest.raises(BlobgateError) as caught:
            async for _ in stream:
                pass
    assert caught.value.code == Code.DEADLINE_EXCEEDED


async def test_list_pages(client: Client) -> None:
    keys = [f"many/{i:02d}.txt" for i in range(7)]
    for key in keys:
        await client.upload(key, key.encode())
    await client.upload("other.txt", b"x")

    page = await client.list_page("many/", page_size=3)
    assert [o.key for o in page.objects] == keys[:3]
    assert page.next_page_token
    page = await client.list_page("many/", page_size=3, page_token=page.next_page_token)
    assert [o.key for o in page.objects] == keys[3:6]

    listed = [o async for o in client.list("many/", page_size=3)]
    assert [o.key for o in listed] == keys
    assert all(o.size == len(o.key) for o in listed)
    assert len([o async for o in client.list()]) == 8


async def test_list_common_prefixes(client: Client) -> None:
    for key in ["d/a/1", "d/a/2", "d/b/1", "d/top"]:
        await client.upload(key, b"x")
    page = await client.list_page("d/", delimiter="/")
    assert page.common_prefixes == ["d/a/", "d/b/"]
    assert [o.key for o in page.objects] == ["d/top"]
    assert page.next_page_token == ""


async def test_presign_get_url_works(client: Client) -> None:
    await client.upload("shared.txt", b"hello over http")
    before = datetime.now(UTC)
    presigned = await client.presign("shared.txt", expires_in=120)
    assert presigned.method == "GET"
    assert presigned.url.startswith("http")
    assert "shared.txt" in presigned.url
    assert presigned.expires_at is not None
    assert before + timedelta(seconds=100) < presigned.expires_at
    assert presigned.expires_at < before + timedelta(seconds=200)

    def fetch() -> bytes:
        with urllib.request.urlopen(presigned.url, timeout=10) as response:
            body: bytes = response.read()
            return body

    assert await asyncio.to_thread(fetch) == b"hello over http"


async def test_presign_put_and_bad_expiry(client: Client) -> None:
    presigned = await client.presign("up.txt", method="PUT", content_type="text/plain")
    assert presigned.method == "PUT"
    assert presigned.url.startswith("http")
    with pytest.raises(BlobgateError) as caught:
        await client.presign("up.txt", expires_in=8 * 24 * 3600)
    assert caught.value.code == Code.INVALID_ARGUMENT


async def test_delete(client: Client) -> None:
    info = await client.upload("gone.txt", b"bye")
    with pytest.raises(BlobgateError) as caught:
        await client.delete("gone.txt", if_match="wrong-etag")
    assert caught.value.code == Code.FAILED_PRECONDITION
    await client.delete("gone.txt", if_match=info.etag)
    with pytest.raises(BlobgateError) as caught:
        await client.stat("gone.txt")
    assert caught.value.code == Code.NOT_FOUND
    await client.delete("gone.txt")  # missing is fine


async def test_bucket_outside_allowed_set_is_permission_denied(client: Client) -> None:
    other = "not-an-allowed-bucket"
    calls = [
        client.stat("k", bucket=other),
        client.upload("k", b"x", bucket=other),
        # Refused after the spec while the client still has megabytes to send.
        client.upload("k", payload(12 * MiB), bucket=other),
        client.delete("k", bucket=other),
        client.list_page(bucket=other),
        read_all(client, "k", bucket=other),
    ]
    for call in calls:
        with pytest.raises(BlobgateError) as caught:
            await call
        assert caught.value.code == Code.PERMISSION_DENIED
        assert not isinstance(caught.value, grpc.aio.AioRpcError)
        assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)


async def test_unreachable_server_is_unavailable() -> None:
    port = free_port()
    async with Client(f"127.0.0.1:{port}", timeout=5) as c:
        with pytest.raises(BlobgateError) as caught:
            await c.stat("k")
    assert caught.value.code == Code.UNAVAILABLE
    assert str(caught.value).startswith("UNAVAILABLE: ")


def test_a_write_that_lost_the_status_is_named_and_retryable() -> None:
    """grpc.aio replaces a call's status with INTERNAL "Internal error from
    Core" when a write fails as the stream ends (grpc/grpc#36066; seen when
    the gateway is SIGKILLed mid-upload, tests/client/test_resume.py). The
    error is built here from grpc.aio's own error type, since no real part
    produces that race on demand."""
    lost = BlobgateError.from_rpc_error(
        grpc.aio.AioRpcError(
            Code.INTERNAL,
            details="Internal error from Core",
            debug_error_string='Failed "execute_batch": (SendMessageOperation,)',
        )
    )
    assert lost.code == Code.INTERNAL and lost.status_lost and lost.retryable
    assert "ended while data was being sent" in lost.message
    server_said = BlobgateError.from_rpc_error(
        grpc.aio.AioRpcError(Code.INTERNAL, details="internal error (request id 1f2e)")
    )
    assert not server_said.status_lost and not server_said.retryable
    assert server_said.message == "internal error (request id 1f2e)"
    assert BlobgateError(Code.UNAVAILABLE, "down").retryable


def test_a_call_the_server_cancelled_is_retryable() -> None:
    """A server shutting down cancels the calls it has not started
    (grpc/grpc#41785; seen in tests/server/test_lifecycle.py): CANCELLED, which is
    worth another attempt unless this process cancelled the call itself. Built
    from grpc.aio's own error type: the race does not happen on demand."""
    cancelled = grpc.aio.AioRpcError(Code.CANCELLED, details="CANCELLED")
    by_server = BlobgateError.from_rpc_error(cancelled)
    assert by_server.code == Code.CANCELLED and by_server.retryable
    assert "server cancelled the call" in by_server.message
    by_us = BlobgateError.from_rpc_error(
        grpc.aio.AioRpcError(Code.CANCELLED, details="Locally cancelled by application!")
    )
    assert not by_us.retryable
    assert not BlobgateError(Code.CANCELLED, "client is closed").retryable


async def test_closed_client_raises_blobgate_error(gateway: Gateway) -> None:
    c = Client(f"127.0.0.1:{gateway.port}")
    await c.close()
    with pytest.raises(BlobgateError):
        await c.stat("k")


async def test_unsupported_source_type(gateway: Gateway) -> None:
    async with Client(f"127.0.0.1:{gateway.port}") as c:
        with pytest.raises(TypeError, match="cannot upload int"):
            await c.upload("k", 42)  # type: ignore[arg-type]


class Recorder:
    """A progress callback that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))


def assert_steady(calls: list[tuple[int, int | None]], end: int, total: int | None) -> None:
    """Starts at 0, never goes back, ends at ``end``, always the same total."""
    assert calls[0] == (0, total)
    assert calls[-1] == (end, total)
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert {t for _, t in calls} == {total}


async def test_upload_progress_bytes_and_path(client: Client, tmp_path: Path) -> None:
    data = payload(2 * MiB + 5)
    seen = Recorder()
    await client.upload("p/bytes", data, progress=seen)
    assert_steady(seen.calls, len(data), len(data))
    assert len(seen.calls) == 4  # 0, then each of the 3 chunks

    path = tmp_path / "f.bin"
    path.write_bytes(data)
    seen = Recorder()
    await client.upload("p/path", path, progress=seen)
    assert_steady(seen.calls, len(data), len(data))


async def test_upload_progress_unknown_size(client: Client) -> None:
    data = payload(MiB + 1)
    seen = Recorder()
    await client.upload("p/stream", io.BytesIO(data), progress=seen)
    assert_steady(seen.calls, len(data), None)

    seen = Recorder()
    await client.upload("p/sized", io.BytesIO(data), size=len(data), progress=seen)
    assert_steady(seen.calls, len(data), len(data))


async def test_upload_progress_empty(client: Client) -> None:
    seen = Recorder()
    await client.upload("p/empty", b"", progress=seen)
    assert seen.calls == [(0, 0)]


async def test_download_progress(client: Client, tmp_path: Path) -> None:
    data = payload(2 * MiB + 7)
    await client.upload("p/obj", data)

    seen = Recorder()
    assert await read_all(client, "p/obj", progress=seen) == data
    assert_steady(seen.calls, len(data), len(data))

    seen = Recorder()
    await client.download_to("p/obj", tmp_path / "out", progress=seen)
    assert_steady(seen.calls, len(data), len(data))

    seen = Recorder()
    async with await client.open_download("p/obj", offset=-100, progress=seen) as stream:
        assert b"".join([c async for c in stream]) == data[-100:]
    assert_steady(seen.calls, 100, 100)

    seen = Recorder()
    assert (
        await read_all(client, "p/obj", offset=10, limit=MiB, progress=seen) == data[10 : MiB + 10]
    )
    assert_steady(seen.calls, MiB, MiB)


async def test_failing_progress_callback(client: Client) -> None:
    await client.upload("p/cb", payload(10))

    def broken(done: int, total: int | None) -> None:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await read_all(client, "p/cb", progress=broken)
    with pytest.raises(ZeroDivisionError):
        await client.upload("p/cb2", payload(10), progress=broken)
    with pytest.raises(BlobgateError) as caught:
        await client.stat("p/cb2")
    assert caught.value.code == Code.NOT_FOUND  # nothing committed
    assert await read_all(client, "p/cb") == payload(10)  # the client still works


def test_range_size() -> None:
    assert range_size(100, 0, 0) == 100
    assert range_size(100, 90, 50) == 10
    assert range_size(100, -30, 10) == 10
    assert range_size(100, -300, 0) == 100
    assert range_size(0, 0, 0) == 0


# TLS: a small TLS server answering Stat (tests.support.stat_server).


@pytest.fixture(scope="module")
def ca() -> Pems:
    return issue("blobgate test CA")


@pytest.fixture(params=[False, True], ids=["tls", "mtls"])
async def tls_server(request: Any, ca: Pems) -> AsyncIterator[tuple[str, bool]]:
    """A TLS server for TLS_NAME answering Stat; whether it requires a client certificate."""
    require_client_cert = bool(request.param)
    leaf = issue(TLS_NAME, ca)
    server = grpc.aio.server()
    storage_pb2_grpc.add_StorageServiceServicer_to_server(StatOnly(), server)
    credentials = grpc.ssl_server_credentials(
        [(leaf.key, leaf.cert)],
        root_certificates=ca.cert if require_client_cert else None,
        require_client_auth=require_client_cert,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    yield f"127.0.0.1:{port}", require_client_cert
    await server.stop(0)


async def test_tls_round_trip(tls_server: tuple[str, bool], ca: Pems) -> None:
    address, require_client_cert = tls_server
    me = issue("client.test", ca)
    async with Client(
        address,
        root_certificates=ca.cert,
        private_key=me.key,
        certificate_chain=me.cert,
        server_name_override=TLS_NAME,
    ) as client:
        assert client.tls is not None
        assert (await client.stat("k")).key == "k"

    if require_client_cert:  # and none given: the handshake fails
        async with Client(
            address, root_certificates=ca.cert, server_name_override=TLS_NAME, timeout=3
        ) as client:
            with pytest.raises(BlobgateError) as caught:
                await client.stat("k")
            assert caught.value.code == Code.UNAVAILABLE
    else:
        async with Client(
            address, root_certificates=ca.cert, server_name_override=TLS_NAME
        ) as client:
            assert (await client.stat("k")).size == 7


async def test_tls_refuses_an_untrusted_or_misnamed_server(
    tls_server: tuple[str, bool], ca: Pems
) -> None:
    address, _ = tls_server
    other_ca = issue("another CA")
    me = issue("client.test", ca)
    for roots, name in [(other_ca.cert, TLS_NAME), (ca.cert, "wrong.test")]:
        async with Client(
            address,
            root_certificates=roots,
            private_key=me.key,
            certificate_chain=me.cert,
            server_name_override=name,
            timeout=3,
        ) as client:
            started = time.monotonic()
            with pytest.raises(BlobgateError) as caught:
                await client.stat("k")
            assert caught.value.code == Code.UNAVAILABLE
            assert time.monotonic() - started < 10


async def test_tls_client_against_plaintext_gateway(gateway: Gateway, ca: Pems) -> None:
    for options in [{"tls": True}, {"root_certificates": ca.cert}]:
        async with Client(f"127.0.0.1:{gateway.port}", timeout=3, **options) as client:
            started = time.monotonic()
            with pytest.raises(BlobgateError) as caught:
                await client.stat("k")
            assert caught.value.code == Code.UNAVAILABLE
            assert caught.value.message
            assert time.monotonic() - started < 10


async def test_tls_config(ca: Pems) -> None:
    me = issue("client.test", ca)
    config = TLSConfig(ca.cert, me.key, me.cert, TLS_NAME)
    assert isinstance(config.credentials(), grpc.ChannelCredentials)
    assert config.channel_options() == [("grpc.ssl_target_name_override", TLS_NAME)]
    assert TLSConfig().channel_options() == []
    async with Client("127.0.0.1:1") as plain, Client("127.0.0.1:1", tls=True) as secure:
        assert plain.tls is None
        assert secure.tls == TLSConfig()
    with pytest.raises(ValueError, match="both or neither"):
        TLSConfig(private_key=me.key)
    with pytest.raises(ValueError, match="both or neither"):
        Client("127.0.0.1:1", certificate_chain=me.cert)
    with pytest.raises(ValueError, match="root_certificates is not PEM"):
        Client("127.0.0.1:1", root_certificates=b"junk")


async def test_tls_applies_to_instances_added_later(tls_server: tuple[str, bool], ca: Pems) -> None:
    """Discovery adds instances through Pool.update: they get the TLS credentials too."""
    address, _ = tls_server
    me = issue("client.test", ca)
    config = TLSConfig(ca.cert, me.key, me.cert, TLS_NAME)
    pool = Pool([], config.channel_options(), credentials=config.credentials())
    try:
        pool.update([address])
        endpoint = pool.acquire()
        assert endpoint is not None
        response = await endpoint.stub.Stat(storage_pb2.StatRequest(key="k"), timeout=5)
        assert response.object.key == "k"
        pool.release(endpoint)
    finally:
        await pool.close()


async def test_download_to_a_file_object(client: Client) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 5)
    await client.upload("to-file-object.bin", blob)
    sink = io.BytesIO()
    info = await client.download_to("to-file-object.bin", sink)
    assert sink.getvalue() == blob
    assert info.size == len(blob)
    assert info.sha256 == hashlib.sha256(blob).digest()


@dataclass
class PlainEndpoint:
    address: str
    channel: grpc.aio.Channel
    stub: Any


class OrderedTransport:
    """A transport of the test's own: its addresses in order, the first one
    a call does not avoid; it keeps what the client told it."""

    def __init__(self, *addresses: str) -> None:
        self.target = "ordered"
        self.endpoints = [
            PlainEndpoint(
                a,
                channel := grpc.aio.insecure_channel(a),
                storage_pb2_grpc.StorageServiceStub(channel),
            )
            for a in addresses
        ]
        self.acquired: list[tuple[str, frozenset[str]]] = []
        self.released: list[tuple[str, Code | None]] = []
        self.started = False

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(e.address for e in self.endpoints)

    def call_counts(self) -> dict[str, int]:
        return {a: sum(1 for b, _ in self.acquired if a == b) for a in self.addresses}

    def start(self) -> None:
        self.started = True

    async def acquire(self, avoid: Collection[str], time_left: float | None) -> Endpoint:
        endpoint = next(e for e in self.endpoints if e.address not in avoid)
        self.acquired.append((endpoint.address, frozenset(avoid)))
        return endpoint

    def release(self, endpoint: Endpoint, failure: BlobgateError | None = None) -> None:
        self.released.append((endpoint.address, failure.code if failure else None))

    async def close(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.channel.close()


async def test_a_transport_of_ones_own(client: Client, gateway: Gateway) -> None:
    await client.upload("own.txt", b"through my transport")
    dead = f"127.0.0.1:{free_port()}"
    live = f"127.0.0.1:{gateway.port}"
    transport = OrderedTransport(dead, live)
    async with Client(transport, timeout=10) as own:
        assert transport.started
        assert (own.target, own.instances) == ("ordered", (dead, live))
        assert (await own.stat("own.txt")).size == len(b"through my transport")
        # The dead address failed the call, was avoided by the retry, and told of it.
        assert transport.acquired == [(dead, frozenset()), (live, frozenset({dead}))]
        assert transport.released == [(dead, Code.UNAVAILABLE), (live, None)]
        assert own.call_counts() == {dead: 1, live: 1}

        transport.acquired.clear()
        transport.released.clear()
        assert await read_all(own, "own.txt") == b"through my transport"
        assert transport.acquired == [(dead, frozenset()), (live, frozenset({dead}))]
        assert transport.released == [(dead, Code.UNAVAILABLE), (live, None)]


async def test_options_object(gateway: Gateway, bucket: str) -> None:
    address = f"127.0.0.1:{gateway.port}"
    options = ClientOptions(bucket="not-an-allowed-bucket", chunk_size=512 * 1024)
    async with Client(address, options=options) as client:
        assert client.options is options
        with pytest.raises(BlobgateError) as caught:
            await client.stat("k")  # the options' bucket
        assert caught.value.code == Code.PERMISSION_DENIED
        data = payload(2 * MiB + 5)
        seen = Recorder()
        info = await client.upload("opt/k", data, bucket=bucket, progress=seen)
        assert info.bucket == bucket
        assert len(seen.calls) == 6  # 0, then each of the 5 chunks of 512 KiB
        assert await read_all(client, "opt/k", bucket=bucket) == data

    # Keywords apply over the options object.
    async with Client(address, options=options, timeout=5, bucket=bucket) as client:
        assert (client.timeout, client.options.chunk_size) == (5, 512 * 1024)
        assert (await client.stat("opt/k")).size == len(data)
    with pytest.raises(ValueError, match="max_attempts"):
        ClientOptions(max_attempts=0)
    with pytest.raises(ValueError, match="chunk_size"):
        ClientOptions(chunk_size=5 * MiB)
    assert ClientOptions.build(None, {"server_name_override": "x"}).tls == TLSConfig(
        server_name_override="x"
    )


def test_tls_takes_a_tls_config_or_the_keywords_not_both() -> None:
    """tls=TLSConfig(...) used to be taken as a plain "use TLS" and its
    certificates silently dropped."""
    pem = issue("a CA").cert
    config = TLSConfig(root_certificates=pem, server_name_override="gw")
    assert ClientOptions.build(None, {"tls": config}).tls is config
    built = ClientOptions.build(None, {"root_certificates": pem}).tls
    assert built is not None and built.root_certificates == pem
    with pytest.raises(ValueError, match="not both"):
        ClientOptions.build(None, {"tls": config, "root_certificates": pem})


def test_the_package_names_load_on_first_use() -> None:
    """blobgate.client imports its names lazily (so the CLI can quiet gRPC
    before gRPC is imported): each one listed still loads."""
    import blobgate.client as package

    for name in package.__all__:
        value = getattr(package, name)
        # Classes carry their name; Progress and UploadSource are type aliases.
        assert getattr(value, "__name__", name) in (name, "Callable"), name
    with pytest.raises(AttributeError):
        package.NoSuchThing  # noqa: B018
