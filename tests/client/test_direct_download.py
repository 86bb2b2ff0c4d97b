"""The Python client's direct downloads: it asks for them always, reads the
bytes from S3 when the server offers it, checks the whole object, asks
again when the object changed since it was described, and reads through
the gateway on its own when S3 cannot be reached; and its whole-object
check by CRC32C (sha256 when asked, or when the object has no CRC32C)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import crc32c
import grpc
import pytest
from aiohttp import web

from blobgate.client import BlobgateError, Client, SyncClient
from blobgate.client.direct import DirectFetcher
from blobgate.client.models import ObjectInfo
from blobgate.client.verify import ContentCheck
from blobgate.server.app import Gateway
from blobgate.v1 import storage_pb2
from tests.support.gateways import gateway_settings
from tests.support.helpers import free_port, lines_of, payload, running_gateway

Code = grpc.StatusCode
MiB = 1024 * 1024
ACCESS = "blobgate.access"


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=ACCESS)
    return caplog


@pytest.fixture
async def direct_client(s3_endpoint: str, bucket: str) -> AsyncIterator[Client]:
    settings = gateway_settings(s3_endpoint, bucket, direct_transfers=True)
    async with running_gateway(settings) as (gw, _, _), Client(f"127.0.0.1:{gw.port}") as client:
        yield client


def downloads(caplog: pytest.LogCaptureFixture) -> list[tuple[bool, int]]:
    """Each Download's line: (direct, bytes through the gateway)."""
    return [
        (bool(line.get("direct")), line["bytes_out"])
        for line in lines_of(caplog, ACCESS)
        if line["method"] == "Download"
    ]


async def read_all(client: Client, key: str, **fields: Any) -> tuple[ObjectInfo, bytes]:
    async with await client.open_download(key, **fields) as stream:
        data = b"".join([chunk async for chunk in stream])
    return stream.info, data


@pytest.mark.both_s3s
async def test_the_client_reads_straight_from_s3(
    direct_client: Client, logged: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    blob = payload(3 * MiB + 17, seed=21)
    stored = await direct_client.upload("c/whole.bin", blob)
    info, data = await read_all(direct_client, "c/whole.bin")
    assert data == blob and info.etag == stored.etag and info.crc32c is not None
    path = tmp_path / "whole.bin"
    await direct_client.download_to("c/whole.bin", path)
    assert path.read_bytes() == blob
    _, part = await read_all(direct_client, "c/whole.bin", offset=-1000, limit=600)
    assert part == blob[-1000:-400]
    assert downloads(logged) == [(True, 0)] * 3  # no byte through the gateway


@pytest.mark.both_s3s
async def test_an_object_replaced_after_the_answer_is_asked_for_again(
    direct_client: Client, monkeypatch: pytest.MonkeyPatch, logged: pytest.LogCaptureFixture
) -> None:
    """The URL pins the described ETag: S3 refuses the replaced object, the
    client asks again and gets the new object, described as it is."""
    old, new = payload(5000, seed=22), payload(5000, seed=23)
    await direct_client.upload("c/changing.bin", old)
    real_get = DirectFetcher.get
    replaced: list[bool] = []

    async def replaced_first(self: DirectFetcher, direct: Any, *args: Any) -> Any:
        if not replaced:
            replaced.append(True)
            await direct_client.upload("c/changing.bin", new)
        return await real_get(self, direct, *args)

    monkeypatch.setattr(DirectFetcher, "get", replaced_first)
    info, data = await read_all(direct_client, "c/changing.bin")
    assert data == new
    assert info.sha256 == hashlib.sha256(new).digest()
    assert downloads(logged) == [(True, 0), (True, 0)]


async def test_bytes_that_do_not_match_the_description_are_data_loss(
    direct_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were S3 to ignore the pinned ETag (here the pin is dropped; moto does
    not check signatures), the whole-object check still catches the other
    bytes."""
    await direct_client.upload("c/swapped.bin", payload(5000, seed=24))
    real_get = DirectFetcher.get

    async def unpinned(self: DirectFetcher, direct: Any, *args: Any) -> Any:
        await direct_client.upload("c/swapped.bin", payload(5000, seed=25))
        bare = storage_pb2.DirectDownload()
        bare.CopyFrom(direct)
        del bare.headers["If-Match"]
        return await real_get(self, bare, *args)

    monkeypatch.setattr(DirectFetcher, "get", unpinned)
    with pytest.raises(BlobgateError) as caught:
        await read_all(direct_client, "c/swapped.bin")
    assert caught.value.code == Code.DATA_LOSS
    assert "CRC32C" in caught.value.details


@pytest.mark.both_s3s
async def test_when_s3_cannot_be_reached_the_client_reads_through_the_gateway(
    s3_endpoint: str, bucket: str, logged: pytest.LogCaptureFixture
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = gateway_settings(
        s3_endpoint, bucket, direct_transfers=True, s3_public_endpoint=closed
    )
    blob = payload(2 * MiB + 3, seed=26)
    async with running_gateway(settings) as (gw, _, _), Client(f"127.0.0.1:{gw.port}") as client:
        await client.upload("c/fallback.bin", blob)
        info, data = await read_all(client, "c/fallback.bin")
    assert data == blob and info.size == len(blob)
    assert downloads(logged) == [(True, 0), (False, len(blob))]


async def test_a_client_that_does_not_ask_and_a_server_that_does_not_offer(
    direct_client: Client, gateway: Gateway, logged: pytest.LogCaptureFixture
) -> None:
    blob = payload(MiB + 1, seed=27)
    await direct_client.upload("c/plain.bin", blob)
    target = direct_client.target
    async with Client(target, direct_downloads=False) as plain:
        assert (await read_all(plain, "c/plain.bin"))[1] == blob
    async with Client(f"127.0.0.1:{gateway.port}") as offered_none:  # direct_transfers off
        await offered_none.upload("c/plain.bin", blob)
        assert (await read_all(offered_none, "c/plain.bin"))[1] == blob
    assert downloads(logged) == [(False, len(blob))] * 2


@pytest.mark.parametrize(
    ("crc", "sha", "asked", "algorithm"),
    [
        (True, True, False, "crc32c"),
        (True, True, True, "sha256"),
        (False, True, False, "sha256"),
        (True, False, True, "crc32c"),  # asked, but there is no sha256
        (False, False, False, "size"),
    ],
)
def test_the_check_is_crc32c_unless_sha256_is_asked_for_or_the_only_one(
    crc: bool, sha: bool, asked: bool, algorithm: str
) -> None:
    blob = payload(10_000, seed=28)
    info = ObjectInfo(
        bucket="b",
        key="k",
        size=len(blob),
        etag="e",
        content_type="",
        last_modified=None,
        metadata={},
        sha256=hashlib.sha256(blob).digest() if sha else None,
        crc32c=crc32c.crc32c(blob) if crc else None,
    )
    check = ContentCheck(info, sha256=asked)
    assert check.algorithm == algorithm
    check.update(memoryview(blob)[:4000])
    check.update(blob[4000:])
    check.verify()
    wrong = ContentCheck(info, sha256=asked)
    wrong.update(blob[:-1] + b"\x00" if blob[-1] else blob[:-1] + b"\x01")
    if algorithm == "size":
        wrong.verify()  # nothing to check but the size
    else:
        with pytest.raises(BlobgateError) as caught:
            wrong.verify()
        assert caught.value.code == Code.DATA_LOSS


async def test_a_wrong_stored_crc32c_is_data_loss_through_the_gateway(
    gateway: Gateway, s3: Any, bucket: str
) -> None:
    """The proxied path checks by CRC32C too: an object written behind the
    gateway's back with a CRC32C that does not match its bytes."""
    await s3.put_object(
        Bucket=bucket, Key="bad-crc.bin", Body=b"actual bytes", Metadata={"crc32c": "12345"}
    )
    async with Client(f"127.0.0.1:{gateway.port}") as client:
        with pytest.raises(BlobgateError) as caught:
            await read_all(client, "bad-crc.bin")
        assert caught.value.code == Code.DATA_LOSS
        assert "CRC32C" in caught.value.details


async def test_the_sync_client_reads_straight_from_s3_too(
    s3_endpoint: str, bucket: str, logged: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    settings = gateway_settings(s3_endpoint, bucket, direct_transfers=True)
    blob = payload(MiB + 5, seed=29)
    async with running_gateway(settings) as (gw, _, _):

        def use() -> bytes:
            with SyncClient(f"127.0.0.1:{gw.port}") as client:
                client.upload("c/sync.bin", blob)
                client.download_to("c/sync.bin", tmp_path / "sync.bin")
            return (tmp_path / "sync.bin").read_bytes()

        assert await asyncio.to_thread(use) == blob
    assert downloads(logged) == [(True, 0)]


async def test_the_deadline_bounds_a_direct_download_too(s3_endpoint: str, bucket: str) -> None:
    settings = gateway_settings(s3_endpoint, bucket, direct_transfers=True)
    async with running_gateway(settings) as (gw, _, _):
        async with Client(f"127.0.0.1:{gw.port}") as client:
            await client.upload("c/slow.bin", payload(24 * MiB, seed=30))
        async with Client(f"127.0.0.1:{gw.port}", stream_timeout=1.0) as slow:
            stream = slow.download("c/slow.bin")
            assert await anext(stream)
            await asyncio.sleep(1.2)  # past the deadline, long before the end
            with pytest.raises(BlobgateError) as caught:
                async for _ in stream:
                    pass
    assert caught.value.code == Code.DEADLINE_EXCEEDED


async def test_the_deadline_ends_a_read_that_waits_for_s3() -> None:
    """A body that stalls halfway (an HTTP server on loopback that sends 1 MiB
    of a 4 MiB body, then nothing): the read waiting for it ends with
    DEADLINE_EXCEEDED at the call's deadline, not at the socket's 60 s read
    timeout. (The deadline is one timer for the whole body.)"""

    async def stalling(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(4 * MiB)})
        await response.prepare(request)
        await response.write(b"x" * MiB)
        await asyncio.wait_for(stop.wait(), 30)
        return response

    stop = asyncio.Event()
    app = web.Application()
    app.router.add_get("/object", stalling)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fetcher = DirectFetcher(connect_timeout=5)
    try:
        direct = storage_pb2.DirectDownload(url=f"http://127.0.0.1:{port}/object")
        loop = asyncio.get_running_loop()
        body = await fetcher.get(direct, 4 * MiB, deadline=time.monotonic() + 1.0)
        received = 0
        started = loop.time()
        with pytest.raises(BlobgateError) as caught:
            while True:
                data = await body.read()
                assert data is not grpc.aio.EOF
                received += len(data)
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert received == MiB
        assert loop.time() - started < 10  # the deadline, not the 60 s read timeout
    finally:
        stop.set()
        await fetcher.close()
        await runner.cleanup()
