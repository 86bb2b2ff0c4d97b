"""SyncClient, the blocking twin of Client, against a gateway subprocess.

The tests are plain functions: a blocking call from an async test would
freeze the loop that an in-process gateway runs on."""

from __future__ import annotations

import gc
import hashlib
import io
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from blobgate.client import BlobgateError, ObjectInfo, SyncClient
from blobgate.client.sync_client import SyncUploadSource
from tests.support import ROOT
from tests.support.helpers import payload
from tests.support.server_process import LISTENING, SERVER, SOURCE_PATH

# Every test talks to a blobgate-server subprocess.
pytestmark = pytest.mark.slow

MiB = 1024 * 1024
Code = grpc.StatusCode


@pytest.fixture(scope="module")
def sync_bucket() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def server_address(moto_endpoint: str, sync_bucket: str) -> Iterator[str]:
    """A blobgate-server subprocess for this module; its host:port."""
    proc = subprocess.Popen(
        [
            *SERVER,
            "--listen",
            "127.0.0.1:0",
            "--s3-endpoint",
            moto_endpoint,
            "--s3-region",
            "us-east-1",
            "--default-bucket",
            sync_bucket,
            "--create-buckets",
            "--shutdown-grace",
            "1",
            "--drain-delay",
            "0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": SOURCE_PATH},
    )
    assert proc.stderr is not None
    log: list[bytes] = []
    port = None
    deadline = time.monotonic() + 30
    while port is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        assert line, b"server exited before listening:\n" + b"".join(log)
        log.append(line)
        if match := LISTENING.search(line):
            port = int(match.group(1))
    assert port is not None, b"".join(log)
    # Keep reading the log so the server never blocks on a full pipe.
    drain = threading.Thread(target=lambda: log.extend(proc.stderr or ()), daemon=True)
    drain.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=30)
        drain.join(timeout=10)
        proc.stderr.close()


@pytest.fixture
def client(server_address: str) -> Iterator[SyncClient]:
    with SyncClient(server_address) as c:
        yield c


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own (the module shares one bucket)."""
    return f"{uuid.uuid4().hex[:8]}/"


def test_round_trip(client: SyncClient, sync_bucket: str, prefix: str, tmp_path: Path) -> None:
    data = payload(2 * MiB + 3)
    info = client.upload(f"{prefix}a.txt", data, metadata={"owner": "ops"})
    assert isinstance(info, ObjectInfo)
    assert (info.bucket, info.key, info.size) == (sync_bucket, f"{prefix}a.txt", len(data))
    assert info.sha256 == hashlib.sha256(data).digest()

    stat = client.stat(f"{prefix}a.txt")
    assert (stat.etag, stat.metadata["owner"]) == (info.etag, "ops")

    chunks = list(client.download(f"{prefix}a.txt"))
    assert len(chunks) == 3 and b"".join(chunks) == data
    assert b"".join(client.download(f"{prefix}a.txt", offset=-10)) == data[-10:]

    target = tmp_path / "copy"
    assert client.download_to(f"{prefix}a.txt", target).etag == info.etag
    assert target.read_bytes() == data

    with client.open_download(f"{prefix}a.txt") as stream:
        assert stream.info.size == len(data)
        assert next(stream) == data[:MiB]  # then closed early: the call is cancelled


def test_upload_sources(client: SyncClient, prefix: str, tmp_path: Path) -> None:
    data = payload(MiB + 100, seed=2)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    sources: dict[str, SyncUploadSource] = {
        "path": path,
        "file": io.BytesIO(data),
        "iterable": [data[:10], data[10:MiB], data[MiB:]],
        "generator": (data[i : i + 1000] for i in range(0, len(data), 1000)),
    }
    for name, source in sources.items():
        info = client.upload(f"{prefix}{name}", source)
        assert info.size == len(data), name
        assert b"".join(client.download(f"{prefix}{name}")) == data, name


def test_progress(client: SyncClient, prefix: str, tmp_path: Path) -> None:
    data = payload(2 * MiB)
    sent: list[tuple[int, int | None]] = []
    client.upload(f"{prefix}p", data, progress=lambda done, total: sent.append((done, total)))
    assert sent[0] == (0, len(data)) and sent[-1] == (len(data), len(data))

    received: list[tuple[int, int | None]] = []
    client.download_to(
        f"{prefix}p", tmp_path / "p", progress=lambda done, total: received.append((done, total))
    )
    assert received[0] == (0, len(data)) and received[-1] == (len(data), len(data))


def test_list_presign_delete(client: SyncClient, prefix: str) -> None:
    keys = [f"{prefix}k{i:02d}" for i in range(7)]
    for key in keys:
        client.upload(key, b"x")
    client.upload(f"{prefix}dir/inner", b"y")

    listing = client.list(prefix, page_size=3)
    assert not isinstance(listing, list)  # an iterator, paged lazily
    assert [o.key for o in listing] == sorted([*keys, f"{prefix}dir/inner"])
    page = client.list_page(prefix, delimiter="/")
    assert page.common_prefixes == [f"{prefix}dir/"]
    assert [o.key for o in page.objects] == keys

    url = client.presign(keys[0], expires_in=60)
    assert url.method == "GET" and url.url.startswith("http")

    client.delete(keys[0])
    with pytest.raises(BlobgateError) as caught:
        client.stat(keys[0])
    assert caught.value.code == Code.NOT_FOUND
    client.delete(keys[0])  # missing: fine


def test_errors_are_blobgate_errors(client: SyncClient, prefix: str) -> None:
    with pytest.raises(BlobgateError) as caught:
        client.stat(f"{prefix}missing")
    assert caught.value.code == Code.NOT_FOUND
    download = client.download(f"{prefix}missing")
    with pytest.raises(BlobgateError) as caught:
        next(download)
    assert caught.value.code == Code.NOT_FOUND
    with pytest.raises(BlobgateError) as caught:
        client.upload(f"{prefix}sized", b"abc", size=4)
    assert caught.value.code == Code.OUT_OF_RANGE
    with pytest.raises(ValueError):
        client.presign("k", method="POST")  # type: ignore[arg-type]


def _fails_unavailable_quickly(client: SyncClient) -> None:
    """A call on ``client`` raises UNAVAILABLE, well within 10 s."""
    started = time.monotonic()
    with pytest.raises(BlobgateError) as caught:
        client.stat("k")
    assert caught.value.code == Code.UNAVAILABLE
    assert time.monotonic() - started < 10


def test_unreachable_server_is_unavailable() -> None:
    with socket_port() as port, SyncClient(f"127.0.0.1:{port}", timeout=3) as client:
        _fails_unavailable_quickly(client)


def test_callbacks_cannot_call_back(client: SyncClient, prefix: str) -> None:
    errors: list[BaseException] = []

    def progress(done: int, total: int | None) -> None:
        try:
            client.stat(f"{prefix}x")
        except RuntimeError as exc:
            errors.append(exc)

    client.upload(f"{prefix}x", b"data", progress=progress)
    assert errors and "own callbacks" in str(errors[0])


def test_abandoned_download(client: SyncClient, prefix: str) -> None:
    client.upload(f"{prefix}big", payload(3 * MiB))
    chunks = client.download(f"{prefix}big")
    assert len(next(chunks)) == MiB
    del chunks  # closes the generator, which cancels the call
    gc.collect()
    assert client.stat(f"{prefix}big").size == 3 * MiB


def test_tls_against_plaintext_server(server_address: str) -> None:
    with SyncClient(server_address, tls=True, timeout=3) as client:
        _fails_unavailable_quickly(client)


def test_many_threads_share_one_client(client: SyncClient, prefix: str) -> None:
    def work(i: int) -> bytes:
        client.upload(f"{prefix}t{i}", payload(1000, seed=i))
        return b"".join(client.download(f"{prefix}t{i}"))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(16)))
    assert results == [payload(1000, seed=i) for i in range(16)]


def test_closed_client(server_address: str) -> None:
    client = SyncClient(server_address)
    with client:
        client.upload("closed/k", b"1")
        stream = client.open_download("closed/k")
    assert not client._runner.thread.is_alive()
    with pytest.raises(BlobgateError) as caught:
        client.stat("closed/k")
    assert caught.value.code == Code.CANCELLED
    stream.close()  # harmless after the client closed
    client.close()  # and so is a second close


def test_each_client_has_its_own_loop(server_address: str) -> None:
    with SyncClient(server_address) as one, SyncClient(server_address) as two:
        assert one._runner.loop is not two._runner.loop
        assert one._runner.thread is not two._runner.thread
        one.upload("loops/k", b"1")
        assert two.stat("loops/k").size == 1


class socket_port:
    """A loopback port with nothing listening on it (while the context lasts)."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc_info: object) -> None:
        self._sock.close()
