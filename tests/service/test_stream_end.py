"""A request stream that did not end cleanly never commits.

grpc.aio ends the request iterator in the same way on a clean half-close and
on a failed receive (blobgate.server.rpc.stream_end). Before the fix, an Upload without a
declared size or checksum whose stream broke could replace the object at its
key with what had arrived so far (empty, for an oversized first message).
Each test keeps an object at the key and checks S3 afterwards: the original
bytes, no multipart upload left, and the server still healthy. The races
are timing-dependent, so each way of breaking is tried several times."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from blobgate.server.app import Gateway
from blobgate.server.core.errors import Cancelled
from blobgate.server.rpc import stream_end
from blobgate.server.rpc.upload_stream import UploadMessage, UploadStream
from blobgate.server.storage.protocols import ObjectRef, PutOptions
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes.raw_h2 import RawCall, grpc_frame
from tests.support.helpers import Code, MiB, data, health, payload, spec, wait_nothing_left
from tests.support.server_process import ServerProcess

UPLOAD = "/blobgate.v1.StorageService/Upload"
ORIGINAL = b"the object that must survive"
ATTEMPTS = 10


async def keep_original(s3: Any, bucket: str, key: str) -> None:
    await s3.put_object(Bucket=bucket, Key=key, Body=ORIGINAL)


async def assert_original(s3: Any, bucket: str, key: str) -> None:
    """The original object is still there, whole, and nothing is half-done."""
    body = await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read()
    assert body == ORIGINAL, f"a broken upload replaced the object with {len(body)} bytes"
    uploads = await s3.list_multipart_uploads(Bucket=bucket)
    assert uploads.get("Uploads", []) == []


async def settled(s3: Any, bucket: str, key: str) -> None:
    """Give a gateway that is still finishing the call a moment, then check."""
    await asyncio.sleep(0.1)
    await assert_original(s3, bucket, key)


async def test_a_failed_receive_commits_nothing(gateway: Gateway, s3: Any, bucket: str) -> None:
    """The reported defect, made deterministic: the store reads a stream whose
    iterator ends as grpc.aio's does after a failed receive (it writes grpc's
    record, then stops) before core's cancellation reaches the task. That
    order is a race no real client can force; the tests below produce the
    real thing, and test_grpc_still_reports_a_failed_receive shows grpc
    writes the record. Before the fix this replaced the object every time."""
    await keep_original(s3, bucket, "k")

    async def failing_receive() -> AsyncIterator[UploadMessage]:
        yield spec("k")
        yield memoryview(b"what arrived before the receive failed")
        logging.getLogger(stream_end.GRPC_LOGGER).debug(
            '%s: Failed "execute_batch"', stream_end.FAILED_RECEIVE
        )

    stream = UploadStream(failing_receive(), 1 << 30)
    await stream.read_first()
    with pytest.raises(Cancelled, match="broke before its end"):
        await gateway.store.put(
            ObjectRef(bucket, "k"), stream.chunks(), PutOptions("text/plain", {})
        )
    await assert_original(s3, bucket, "k")


async def test_oversized_message_without_size_never_commits(
    moto_endpoint: str, bucket: str, s3: Any, processes: list[ServerProcess]
) -> None:
    """As reported: a first data message over max_message_size, no size and
    no checksum declared, against a gateway process of its own. Before the
    fix, 3 of 30 attempts here replaced the object with an empty one."""
    server = await ServerProcess.start(
        "--listen", "127.0.0.1:0",
        "--s3-endpoint", moto_endpoint,
        "--default-bucket", bucket,
        "--create-buckets",
        "--drain-delay", "0",
    )  # fmt: skip
    processes.append(server)
    port = await server.wait_listening()
    await keep_original(s3, bucket, "k")
    big = data(payload(9 * MiB))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        for _ in range(6 * ATTEMPTS):
            call = stub.Upload()
            await call.write(spec("k"))
            try:
                await call.write(big)
                await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == Code.RESOURCE_EXHAUSTED, info.value
            await settled(s3, bucket, "k")
        assert await health(channel, "") == 1


async def test_grpc_still_reports_a_failed_receive(
    gateway: Gateway, stub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The record blobgate.server.rpc.stream_end relies on: if a grpc release drops or
    rewords it, this fails (and the tests above start to flake)."""
    caplog.set_level(logging.DEBUG, logger="grpc")
    for _ in range(ATTEMPTS):
        call = stub.Upload()
        await call.write(spec("probe"))
        try:
            await call.write(data(payload(9 * MiB)))
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        await asyncio.sleep(0.05)
        if any(
            r.name == stream_end.GRPC_LOGGER
            and r.getMessage().startswith(stream_end.FAILED_RECEIVE)
            for r in caplog.records
        ):
            return
    pytest.fail(f"no {stream_end.FAILED_RECEIVE!r} record from {stream_end.GRPC_LOGGER}")


async def test_client_cancel_mid_stream_never_commits(
    gateway: Gateway, stub: Any, s3: Any, bucket: str
) -> None:
    """A grpc client that cancels after sending data (no size declared)."""
    await keep_original(s3, bucket, "k")

    async def requests(sent: asyncio.Event) -> AsyncIterator[storage_pb2.UploadRequest]:
        yield spec("k")
        yield data(payload(MiB))
        sent.set()
        await asyncio.sleep(30)

    for _ in range(ATTEMPTS):
        sent = asyncio.Event()
        call = stub.Upload(requests(sent))
        await sent.wait()
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await settled(s3, bucket, "k")


def _spec_message(key: str) -> bytes:
    return spec(key).SerializeToString()


def _data_message(size: int) -> bytes:
    return data(payload(size)).SerializeToString()


async def _raw_oversized(call: RawCall) -> None:
    """A message over the limit, then a clean half-close."""
    await call.send_messages([_spec_message("k"), _data_message(9 * MiB)])


async def _raw_reset(call: RawCall) -> None:
    """Data, then RST_STREAM."""
    await call.send_messages([_spec_message("k"), _data_message(MiB)], end_stream=False)
    await asyncio.sleep(0.05)
    await call.reset_stream()


async def _raw_cut_frame(call: RawCall) -> None:
    """A frame that announces more bytes than arrive before END_STREAM.

    gRPC core drops such a partial last message and reports a clean end
    (grpc/grpc#5268, open), so no server can tell; the declared size is what
    refuses the stream here (docs: declare size or sha256; the Python client
    always does)."""
    declared = spec("k", size=MiB + 1000).SerializeToString()
    await call.send_messages([declared, _data_message(MiB)], end_stream=False)
    whole = grpc_frame(_data_message(1000))
    await call.send(whole[:100], end_stream=True)


async def _raw_bad_flag(call: RawCall) -> None:
    """A message flagged compressed without a grpc-encoding, then END_STREAM."""
    await call.send_messages([_spec_message("k"), _data_message(MiB)], end_stream=False)
    await call.send(grpc_frame(_data_message(1000), compressed=True), end_stream=True)


async def _raw_dropped(call: RawCall) -> None:
    """Data, then the TCP connection dropped."""
    await call.send_messages([_spec_message("k"), _data_message(MiB)], end_stream=False)
    await asyncio.sleep(0.05)
    call.abort()


@pytest.mark.parametrize(
    "breaking",
    [_raw_oversized, _raw_reset, _raw_cut_frame, _raw_bad_flag, _raw_dropped],
    ids=["oversized", "reset", "cut-frame", "bad-flag", "dropped-connection"],
)
async def test_raw_http2_broken_stream_never_commits(
    breaking: Any, gateway: Gateway, channel: grpc.aio.Channel, s3: Any, bucket: str
) -> None:
    await keep_original(s3, bucket, "k")
    for _ in range(ATTEMPTS):
        call = await RawCall.open(gateway.port, UPLOAD)
        try:
            await breaking(call)
            await call.wait_end(within=5)
            if call.status is not None:
                assert call.status != "0", "a broken stream was answered OK"
        finally:
            await call.close()
        await settled(s3, bucket, "k")
    await wait_nothing_left_but_original(s3, bucket)
    assert await health(channel, "") == 1


async def wait_nothing_left_but_original(s3: Any, bucket: str) -> None:
    """Only the original object is in the bucket."""
    listing = await s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listing.get("Contents", [])] == ["k"]


async def test_raw_http2_clean_upload_commits(gateway: Gateway, s3: Any, bucket: str) -> None:
    """The same raw client, well-behaved: the check is not refusing everything."""
    call = await RawCall.open(gateway.port, UPLOAD)
    try:
        await call.send_messages([_spec_message("clean"), data(b"hello").SerializeToString()])
        await call.wait_end()
    finally:
        await call.close()
    assert call.status == "0", call.message
    body = await (await s3.get_object(Bucket=bucket, Key="clean"))["Body"].read()
    assert body == b"hello"
    await wait_nothing_left(s3, bucket, "never-there")


@pytest.mark.store("memory")
async def test_a_cancelled_download_writes_no_error(
    gateway: Gateway, stub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that cancels a download while the gateway is sending to it
    is not a server failure: grpc's "ExecuteBatchError" record (ERROR, with
    a traceback, once per cancel) is lowered to DEBUG."""
    blob = payload(12 * MiB)
    call = stub.Upload(
        iter([spec("big"), *(data(blob[i : i + MiB]) for i in range(0, len(blob), MiB))])
    )
    await call
    caplog.set_level(logging.INFO)
    for _ in range(3):
        download = stub.Download(storage_pb2.DownloadRequest(key="big"))
        await download.read()
        await download.read()
        await asyncio.sleep(0.5)  # the gateway is now blocked sending to us
        download.cancel()
        await asyncio.sleep(0.2)
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]
