"""What the gateway asks of S3, counted from botocore's own events on the
gateway's clients: one PutObject per small upload (the preconditions ride on
it as conditional headers, after one HEAD that checks them before the upload
is accepted), no HEAD after a commit. And the byte paths behind those requests:
parts sent from the received buffers (exact, also when a part is resent),
downloads read as received and cut at the message size (exact for every
range), and a GetObject body that S3 stalls still ending the call."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

import aiohttp.payload
import botocore.utils
import grpc
import pytest

from blobgate.client.wire import UPLOAD_ACCEPTED, UPLOAD_ACCEPTED_KEY
from blobgate.server.app import Gateway
from blobgate.server.storage.byte_budget import ByteBudget, Claim
from blobgate.server.storage.s3.connection import EXPECT_CONTINUE_FROM
from blobgate.server.storage.s3.parts import PartBody, cut_parts
from blobgate.v1 import storage_pb2
from tests.fakes.s3_fault_proxy import FaultProxy, Request, put_object, upload_part
from tests.support.gateways import gateway_settings
from tests.support.helpers import (
    PART,
    Code,
    MiB,
    assert_status,
    data,
    download,
    expect_status,
    payload,
    running_gateway,
    sha256,
    spec,
    upload,
    wait_nothing_left,
)

SMALL = 64 * 1024
MULTIPART = 2 * PART + 1000  # three parts


class S3Calls:
    """The S3 operations a gateway's clients call on object keys (bucket-level
    calls such as the health probe's HeadBucket are left out), in order."""

    def __init__(self, gateway: Gateway) -> None:
        self.calls: list[tuple[str, str]] = []
        connection = gateway.storage.backend.connection  # type: ignore[attr-defined]
        for client in (connection.client, connection.transfers):
            client.meta.events.register(
                "before-parameter-build.s3", self._record, unique_id=f"test-calls-{id(self)}"
            )

    def _record(self, params: Any, model: Any, **_: Any) -> None:
        key = params.get("Key") if isinstance(params, dict) else None
        if isinstance(key, str):
            self.calls.append((str(model.name), key))

    def names(self, key: str | None = None) -> list[str]:
        return [name for name, k in self.calls if key is None or k == key]

    def clear(self) -> None:
        self.calls.clear()


async def _stored(s3: Any, bucket: str, key: str) -> bytes:
    response = await s3.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as body:
        return bytes(await body.read())


async def assert_exact(s3: Any, bucket: str, key: str, blob: bytes) -> None:
    """S3 holds exactly ``blob`` at ``key`` (by sha256), and no multipart upload."""
    assert sha256(await _stored(s3, bucket, key)) == sha256(blob)
    assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []


# --- one request per small upload ------------------------------------------------


@pytest.mark.parametrize("condition", ["none", "if_none_match", "if_match"])
async def test_a_small_upload_is_exactly_one_put_object(
    gateway: Gateway, stub: Any, s3: Any, bucket: str, condition: str
) -> None:
    """One PutObject, after one HEAD when the upload has a precondition (the
    check before the upload is accepted)."""
    key = f"small-{condition}.bin"
    fields: dict[str, Any] = {}
    if condition == "if_none_match":
        fields["if_none_match"] = True
    elif condition == "if_match":
        old = await s3.put_object(Bucket=bucket, Key=key, Body=b"old")
        fields["if_match"] = old["ETag"].strip('"')
    calls = S3Calls(gateway)
    blob = payload(SMALL, seed=1)

    obj = await upload(gateway, key, blob, **fields)

    assert calls.names() == (["PutObject"] if condition == "none" else ["HeadObject", "PutObject"])
    assert await _stored(s3, bucket, key) == blob
    # Described from PutObject's answer: what Stat says, with no HEAD of its own.
    stat = (await stub.Stat(storage_pb2.StatRequest(key=key))).object
    assert obj.etag == stat.etag
    assert obj.checksums == stat.checksums
    assert obj.HasField("last_modified")
    modified = obj.last_modified.ToDatetime(tzinfo=UTC)
    assert abs((modified - stat.last_modified.ToDatetime(tzinfo=UTC)).total_seconds()) <= 1


def _asks_to_continue(r: Request) -> bool:
    return r.headers.get("expect", "").lower() == "100-continue"


async def test_a_small_put_object_sends_its_body_without_waiting_to_continue(
    moto_endpoint: str, s3: Any, bucket: str
) -> None:
    """A PutObject under EXPECT_CONTINUE_FROM bytes goes with its body at once
    (botocore would ask for ``Expect: 100-continue`` on any file-like body, a
    round trip before the body); a bigger PutObject and the parts of a
    multipart upload still ask first. S3 holds exactly the bytes."""
    small, big = payload(SMALL, seed=3), payload(EXPECT_CONTINUE_FROM, seed=4)
    parted = payload(MULTIPART, seed=5)
    assert len(big) < PART < len(parted)  # big: still one PutObject
    with FaultProxy(moto_endpoint) as proxy:
        settings = gateway_settings(moto_endpoint, bucket, s3_endpoint=proxy.url)
        async with running_gateway(settings) as (gw, _stub, _channel):
            for key, blob in (("small.bin", small), ("big.bin", big), ("parted.bin", parted)):
                assert (await upload(gw, key, blob)).size == len(blob)
                await assert_exact(s3, bucket, key, blob)

    def sent(kind: Any, key: str, *, asking: bool) -> int:
        return proxy.seen(lambda r: kind(r) and r.key == key and _asks_to_continue(r) == asking)

    assert (
        sent(put_object, "small.bin", asking=False),
        sent(put_object, "small.bin", asking=True),
    ) == (1, 0)
    assert (
        sent(put_object, "big.bin", asking=False),
        sent(put_object, "big.bin", asking=True),
    ) == (0, 1)
    assert (
        sent(upload_part, "parted.bin", asking=False),
        sent(upload_part, "parted.bin", asking=True),
    ) == (0, 3)


def _refusal(case: str) -> dict[str, Any]:
    return {"if_none_match": True} if case == "exists" else {"if_match": "0123456789abcdef"}


@pytest.mark.both_s3s
@pytest.mark.parametrize("case", ["exists", "etag-differs", "no-object"])
async def test_a_small_upload_refused_by_its_check_sends_nothing_to_s3(
    gateway: Gateway, s3: Any, bucket: str, case: str
) -> None:
    """The HEAD before acceptance refuses it: FAILED_PRECONDITION, no write
    request, and S3 holds what it held."""
    key = f"refused-{case}.bin"
    if case != "no-object":
        await s3.put_object(Bucket=bucket, Key=key, Body=b"before")
    calls = S3Calls(gateway)

    error = await expect_status(
        Code.FAILED_PRECONDITION, upload(gateway, key, payload(SMALL), **_refusal(case))
    )

    assert_status(error, Code.FAILED_PRECONDITION)
    assert calls.names() == ["HeadObject"]
    if case == "no-object":
        await wait_nothing_left(s3, bucket, key)
    else:
        assert await _stored(s3, bucket, key) == b"before"


@pytest.mark.both_s3s
@pytest.mark.parametrize("case", ["exists", "etag-differs", "no-object"])
async def test_a_small_upload_raced_past_its_check_is_refused_by_s3(
    gateway: Gateway, stub: Any, s3: Any, bucket: str, case: str
) -> None:
    """The object changes after the check, while the client sends the data:
    the condition on the PutObject itself makes S3 refuse it (412, or 404 for
    If-Match on a missing key), the call is FAILED_PRECONDITION, and S3 holds
    the racing writer's object."""
    key = f"raced-{case}.bin"
    fields: dict[str, Any] = {"if_none_match": True}
    if case != "exists":
        old = await s3.put_object(Bucket=bucket, Key=key, Body=b"before")
        fields = {"if_match": old["ETag"].strip('"')}
    calls = S3Calls(gateway)
    blob = payload(SMALL)
    call = stub.Upload(timeout=30)
    await call.write(spec(key, size=len(blob), **fields))
    assert dict(await call.initial_metadata())[UPLOAD_ACCEPTED_KEY] == UPLOAD_ACCEPTED
    if case == "no-object":
        await s3.delete_object(Bucket=bucket, Key=key)
    else:
        await s3.put_object(Bucket=bucket, Key=key, Body=b"racer")
    await call.write(data(blob))
    await call.done_writing()

    error = await expect_status(Code.FAILED_PRECONDITION, call)

    assert_status(error, Code.FAILED_PRECONDITION)
    assert calls.names() == ["HeadObject", "PutObject"]
    if case == "no-object":
        await wait_nothing_left(s3, bucket, key)
    else:
        assert await _stored(s3, bucket, key) == b"racer"


@pytest.mark.both_s3s
async def test_a_multipart_upload_with_a_failing_precondition_sends_no_part(
    gateway: Gateway, s3: Any, bucket: str
) -> None:
    await s3.put_object(Bucket=bucket, Key="big.bin", Body=b"before")
    calls = S3Calls(gateway)

    await expect_status(
        Code.FAILED_PRECONDITION,
        upload(gateway, "big.bin", payload(MULTIPART), if_none_match=True),
    )

    assert calls.names() == ["HeadObject"]  # no CreateMultipartUpload, no UploadPart
    assert await _stored(s3, bucket, "big.bin") == b"before"
    assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []


@pytest.mark.both_s3s
async def test_a_multipart_upload_checks_its_precondition_first(
    gateway: Gateway, s3: Any, bucket: str
) -> None:
    calls = S3Calls(gateway)
    blob = payload(MULTIPART, seed=4)

    await upload(gateway, "new-big.bin", blob, if_none_match=True)

    names = calls.names("new-big.bin")
    assert names[:2] == ["HeadObject", "CreateMultipartUpload"]
    assert names.count("UploadPart") == 3
    assert "CompleteMultipartUpload" in names
    await assert_exact(s3, bucket, "new-big.bin", blob)


async def test_copy_is_described_from_its_answer(gateway: Gateway, stub: Any, s3: Any) -> None:
    """A small Copy: the source's HEAD, then one CopyObject; no HEAD after."""
    await upload(gateway, "source.bin", payload(SMALL, seed=5))
    calls = S3Calls(gateway)

    copied = await stub.Copy(
        storage_pb2.CopyRequest(source_key="source.bin", destination_key="copy.bin")
    )

    assert calls.names("copy.bin") == ["CopyObject"]
    assert calls.names("source.bin") == ["HeadObject"]
    stat = (await stub.Stat(storage_pb2.StatRequest(key="copy.bin"))).object
    assert copied.object.etag == stat.etag
    assert copied.object.HasField("last_modified")


# --- parts sent from the received buffers --------------------------------------


def _part_body(blob: bytes, sizes: list[int]) -> PartBody:
    views, at = [], 0
    for size in sizes:
        views.append(memoryview(blob)[at : at + size])
        at += size
    assert at == len(blob)
    return PartBody(views)


def test_a_part_body_is_the_file_botocore_expects() -> None:
    blob = payload(3 * MiB + 17, seed=6)
    body = _part_body(blob, [1, MiB - 1, 2 * MiB, 17])
    assert body.tell() == len(blob)  # as cut: at its end, like a written BytesIO
    body.seek(0)
    assert botocore.utils.determine_content_length(body) == len(blob) == len(body)
    # Read as botocore's signer and checksums do (1 MiB reads), then rewound.
    read = b"".join(iter(lambda: body.read(MiB), b""))
    assert read == blob
    assert body.read(10) == b""
    body.seek(0)
    assert body.read() == blob
    body.seek(5)
    assert body.read(3) == blob[5:8]
    assert body.seek(-2, io.SEEK_END) == len(blob) - 2
    assert body.read() == blob[-2:]
    assert body.seek(MiB, io.SEEK_SET) == MiB
    assert body.seek(1, io.SEEK_CUR) == MiB + 1


class _Writer:
    """What aiohttp's payload writes, as written."""

    def __init__(self) -> None:
        self.pieces: list[Any] = []

    async def write(self, chunk: Any) -> None:
        self.pieces.append(chunk)


async def _sent(body: PartBody) -> list[Any]:
    """What aiohttp sends for ``body`` (through its payload registry), twice:
    as a first attempt and as aiohttp's own resend of the same request."""
    payload_ = aiohttp.payload.PAYLOAD_REGISTRY.get(body, disposition=None)
    assert payload_.size == len(body) - body.tell()
    assert not payload_.consumed
    first, again = _Writer(), _Writer()
    await payload_.write_with_length(first, payload_.size)
    await payload_.write_with_length(again, None)
    assert [bytes(p) for p in first.pieces] == [bytes(p) for p in again.pieces]
    return first.pieces


async def test_a_part_body_is_sent_as_its_views_from_where_it_stands() -> None:
    blob = payload(2 * MiB + 3, seed=7)
    body = _part_body(blob, [MiB, 3, MiB])
    body.seek(0)
    sent = await _sent(body)
    assert all(isinstance(piece, memoryview) for piece in sent)
    assert [piece.obj for piece in sent] == [blob, blob, blob]  # no copy
    assert b"".join(sent) == blob
    body.seek(MiB + 1)  # botocore left it here: the request starts here
    assert b"".join(await _sent(body)) == blob[MiB + 1 :]
    body.close()
    assert len(body) == 0


async def _messages(*sizes: int, seed: int = 8) -> tuple[bytes, AsyncIterator[memoryview]]:
    blob = payload(sum(sizes), seed=seed)

    async def chunks() -> AsyncIterator[memoryview]:
        at = 0
        for size in sizes:
            # Like the Upload codec: a view into a message's own bytes.
            yield memoryview(b"\x12" + blob[at : at + size])[1:]
            at += size

    return blob, chunks()


async def test_parts_hold_views_and_copy_only_a_chunk_that_spans_two() -> None:
    part = 4 * MiB
    blob, body = await _messages(MiB, MiB, MiB, MiB, MiB + 5, 3 * MiB)
    budget = ByteBudget(3 * part)
    parts: list[tuple[PartBody, Claim]] = []
    async for piece, reserved in cut_parts(body, part, budget, None):
        parts.append((piece, reserved))
    assert [len(p) for p, _ in parts] == [part, part, 5]
    # Each part covers its bytes a step (1 MiB) at a time: the last, 5 bytes, one step.
    assert [r.taken for _, r in parts] == [part, part, MiB]
    assert budget.used == 2 * part + MiB
    first, second, last = (p for p, _ in parts)
    # Whole messages are views of the received bytes...
    assert [len(v) for v in first.views] == [MiB] * 4
    assert all(isinstance(v.obj, bytes) and len(v.obj) == MiB + 1 for v in first.views)
    # ...and the message that spans two parts is copied into each, so no
    # part pins bytes that another part's budget counts.
    assert [len(v) for v in second.views] == [MiB + 5, 3 * MiB - 5]
    assert len(second.views[0].obj) == MiB + 6
    assert len(second.views[1].obj) == 3 * MiB - 5  # its own copy
    assert len(last.views[0].obj) == 5  # its own copy
    joined = b"".join(bytes(v) for p, _ in parts for v in p.views)
    assert joined == blob


@pytest.mark.parametrize("fault", ["none", "cut-once", "slow-down-twice"])
async def test_parts_sent_from_views_are_exact_also_when_resent(
    moto_endpoint: str, s3: Any, bucket: str, fault: str
) -> None:
    """Odd message sizes, so that messages span part boundaries; a part whose
    connection is cut after 1 MiB, or that S3 throttles, is sent again from
    its views (rewound by botocore), and S3 holds exactly the bytes."""
    sizes = [1, 3 * MiB + 7, 2 * MiB - 3, 3 * MiB, 1000, 3 * MiB + 1]
    blob = payload(sum(sizes) + 2 * MiB + 11, seed=9)
    with FaultProxy(moto_endpoint) as proxy:
        settings = gateway_settings(moto_endpoint, bucket, s3_endpoint=proxy.url)
        async with running_gateway(settings) as (gw, _stub, _channel):
            if fault == "cut-once":
                hit = proxy.cut_request(MiB, match=upload_part, times=1)
            elif fault == "slow-down-twice":
                hit = proxy.slow_down(match=upload_part, times=2)
            obj = await upload(gw, "views.bin", blob, sizes=sizes)
            assert obj.size == len(blob)
            assert obj.checksums.sha256 == sha256(blob)
            await assert_exact(s3, bucket, "views.bin", blob)
            if fault != "none":
                assert hit.fired >= 1
                assert proxy.seen(upload_part) > 3


# --- downloads ------------------------------------------------------------------


@pytest.mark.parametrize("size", [MiB - 1, MiB, MiB + 1, 2 * MiB, 3 * MiB + 5])
async def test_downloads_are_exact_around_the_message_size(
    stub: Any, s3: Any, bucket: str, size: int
) -> None:
    blob = payload(size, seed=size)
    await s3.put_object(Bucket=bucket, Key="d.bin", Body=blob)
    ranges = [
        (0, 0),
        (1, 0),
        (MiB - 1, 2),
        (MiB, 0),
        (size - 1, 0),
        (3, MiB),
        (-1, 0),
        (-(MiB + 1), 0),
        (-size, 5),
        (17, size - 18),
    ]
    for offset, limit in ranges:
        if offset >= size:
            continue
        got = await download(stub, "d.bin", offset=offset, limit=limit)
        start = offset if offset >= 0 else max(0, size + offset)
        end = size if not limit else min(size, start + limit)
        assert got.data == blob[start:end], (offset, limit)
        # Full messages, but for the last: the reader cuts at the message size.
        assert all(n == MiB for n in got.message_sizes[:-1]), got.message_sizes


class _StallingS3:
    """A fake S3 on loopback that answers HEAD (the health probe) and sends
    GetObject's headers and the first ``sent`` bytes of its body, then
    nothing more, with the connection left open."""

    def __init__(self, size: int, sent: int) -> None:
        self.size = size
        self.sent = sent
        self._server: asyncio.Server | None = None
        self.port = 0
        self._done = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method = head.split(b" ", 1)[0]
                common = (
                    b'ETag: "0123456789abcdef0123456789abcdef"\r\n'
                    b"Last-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\n"
                    b"Content-Type: application/octet-stream\r\n"
                )
                if method == b"GET":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\n"
                        + common
                        + f"Content-Length: {self.size}\r\n\r\n".encode()
                        + payload(self.sent, seed=10)
                    )
                    await writer.drain()
                    await self._done.wait()  # never another byte
                    return
                writer.write(b"HTTP/1.1 200 OK\r\n" + common + b"Content-Length: 0\r\n\r\n")
                await writer.drain()

    async def __aenter__(self) -> _StallingS3:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._done.set()
        for writer in self._writers:
            writer.close()
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1)


async def test_a_stalled_s3_body_ends_the_download_unavailable(
    moto_endpoint: str, bucket: str
) -> None:
    """aiohttp's per-piece read timer is switched off for download bodies:
    the reader's own watchdog must still end a body S3 stops sending, after
    s3_read_timeout, as UNAVAILABLE (the client keeps reading meanwhile)."""
    async with _StallingS3(size=3 * MiB, sent=MiB + MiB // 2) as fake:
        settings = gateway_settings(
            moto_endpoint,
            bucket,
            s3_endpoint=f"http://127.0.0.1:{fake.port}",
            create_buckets=False,
            s3_read_timeout=1.0,
            s3_max_attempts=1,
        )
        async with running_gateway(settings) as (_gw, stub, _channel):
            loop = asyncio.get_running_loop()
            started = loop.time()
            received = 0
            call = stub.Download(storage_pb2.DownloadRequest(key="stalled.bin"), timeout=30)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for message in call:
                    if message.WhichOneof("message") == "data":
                        received += len(message.data)
            took = loop.time() - started
    assert_status(info.value, Code.UNAVAILABLE)
    assert received == MiB  # the whole first message, then the error
    assert 0.9 <= took < 10, took
