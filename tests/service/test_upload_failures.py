"""Upload, the failing paths: every failure commits nothing. Each test checks
S3 afterwards: no object at the key (or the old one, unchanged) and no
multipart upload left behind."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import google_crc32c
import pytest

from blobgate.v1 import storage_pb2
from tests.fakes.s3_fault_proxy import FaultProxy, create_multipart_upload
from tests.support.gateways import gateway_settings
from tests.support.helpers import (
    PART,
    Code,
    LocalMoto,
    MiB,
    assert_nothing_left,
    chunks,
    data,
    download,
    eventually,
    expect_status,
    payload,
    running_gateway,
    sha256,
    spec,
    upload,
    upload_requests,
    upload_stream,
    wait_multipart_started,
    wait_nothing_left,
    write_all,
)

SMALL = 1000
MULTIPART = 2 * PART + 1000  # three parts: the gateway must have started a multipart upload


# --- client cancel and deadline ---------------------------------------------


async def test_client_cancel_mid_small_stream(stub: Any, s3: Any, bucket: str) -> None:
    call = stub.Upload(timeout=30)
    await call.write(spec("cancelled.bin", size=SMALL))
    await call.write(data(payload(SMALL // 2)))
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await wait_nothing_left(s3, bucket, "cancelled.bin")


async def test_client_cancel_mid_multipart_stream(stub: Any, s3: Any, bucket: str) -> None:
    blob = payload(MULTIPART)
    call = stub.Upload(timeout=60)
    await call.write(spec("cancelled-big.bin"))
    # Send all but the last part, and wait until S3 shows the multipart upload.
    for piece in chunks(blob[: 2 * PART]):
        await call.write(data(piece))
    await wait_multipart_started(s3, bucket, "cancelled-big.bin")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await wait_nothing_left(s3, bucket, "cancelled-big.bin")


async def test_cancel_while_s3_creates_the_multipart_upload(
    moto_endpoint: str, s3: Any, bucket: str
) -> None:
    """The client cancels while S3 is creating the multipart upload and its
    answer is still on the way: the upload S3 created is aborted once the
    answer arrives, not left to the janitor."""
    with FaultProxy(moto_endpoint) as proxy:
        slow = proxy.delay_response(2.0, match=create_multipart_upload)
        settings = gateway_settings(proxy.url, bucket)
        async with running_gateway(settings) as (_gw, stub, _channel):
            call = stub.Upload(timeout=60)
            await call.write(spec("created-late.bin"))
            for piece in chunks(payload(PART + MiB)):
                await call.write(data(piece))

            async def creating() -> None:
                assert slow.fired == 1

            await eventually(creating)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await wait_multipart_started(s3, bucket, "created-late.bin")  # S3 made it
            await wait_nothing_left(s3, bucket, "created-late.bin")


@pytest.mark.parametrize("sent", [SMALL // 2, PART + MiB], ids=["small", "multipart"])
async def test_deadline_while_client_stalls(stub: Any, s3: Any, bucket: str, sent: int) -> None:
    call = stub.Upload(timeout=3.0)
    await call.write(spec("stalled.bin"))
    await write_all(call, (data(p) for p in chunks(payload(sent))))
    if sent > PART:
        await wait_multipart_started(s3, bucket, "stalled.bin")
    # The client sends nothing more and never half-closes: the deadline ends it.
    await expect_status(Code.DEADLINE_EXCEEDED, call)
    await wait_nothing_left(s3, bucket, "stalled.bin")


# --- verification: checksums and declared size -------------------------------


@pytest.mark.parametrize("size", [SMALL, MULTIPART], ids=["small", "multipart"])
async def test_sha256_mismatch(gateway: Any, s3: Any, bucket: str, size: int) -> None:
    blob = payload(size)
    wrong = storage_pb2.Checksums(sha256=sha256(blob + b"!"))
    await expect_status(Code.INVALID_ARGUMENT, upload(gateway, "bad-sha.bin", blob, expected=wrong))
    await wait_nothing_left(s3, bucket, "bad-sha.bin")


@pytest.mark.parametrize("size", [SMALL, MULTIPART], ids=["small", "multipart"])
async def test_crc32c_mismatch(gateway: Any, s3: Any, bucket: str, size: int) -> None:
    blob = payload(size)
    wrong = storage_pb2.Checksums(
        sha256=sha256(blob), crc32c=(google_crc32c.value(blob) + 1) % 2**32
    )
    await expect_status(Code.INVALID_ARGUMENT, upload(gateway, "bad-crc.bin", blob, expected=wrong))
    await wait_nothing_left(s3, bucket, "bad-crc.bin")


async def test_sha256_of_wrong_length(gateway: Any, s3: Any, bucket: str) -> None:
    wrong = storage_pb2.Checksums(sha256=b"\x01\x02\x03")
    await expect_status(
        Code.INVALID_ARGUMENT, upload(gateway, "short-sha.bin", b"abc", expected=wrong)
    )
    await wait_nothing_left(s3, bucket, "short-sha.bin")


@pytest.mark.parametrize(
    ("declared", "sent"),
    [
        pytest.param(SMALL + 1, SMALL, id="small-fewer"),
        pytest.param(SMALL - 1, SMALL, id="small-more"),
        pytest.param(1, 0, id="nothing-sent"),
        pytest.param(MULTIPART + 1, MULTIPART, id="multipart-fewer"),
        pytest.param(PART + 10, MULTIPART, id="multipart-more"),
        pytest.param(SMALL, MULTIPART, id="small-declared-multipart-sent"),
    ],
)
async def test_declared_size_mismatch(
    gateway: Any, s3: Any, bucket: str, declared: int, sent: int
) -> None:
    blob = payload(sent)
    await expect_status(Code.OUT_OF_RANGE, upload(gateway, "bad-size.bin", blob, size=declared))
    await wait_nothing_left(s3, bucket, "bad-size.bin")


# --- preconditions -----------------------------------------------------------


async def _assert_unchanged(
    stub: Any, s3: Any, bucket: str, key: str, old: Any, blob: bytes
) -> None:
    stat = (await stub.Stat(storage_pb2.StatRequest(key=key), timeout=10)).object
    assert stat.etag == old.etag
    assert stat.size == len(blob)
    assert (await download(stub, key)).data == blob
    assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []


@pytest.mark.both_s3s
@pytest.mark.parametrize("size", [SMALL, MULTIPART], ids=["small", "multipart"])
async def test_if_none_match_on_existing_key(
    gateway: Any, stub: Any, s3: Any, bucket: str, size: int
) -> None:
    old_blob = b"the original"
    old = await upload(gateway, "taken.bin", old_blob)
    await expect_status(
        Code.FAILED_PRECONDITION,
        upload(gateway, "taken.bin", payload(size), if_none_match=True),
    )
    await _assert_unchanged(stub, s3, bucket, "taken.bin", old, old_blob)


@pytest.mark.both_s3s
@pytest.mark.parametrize("size", [SMALL, MULTIPART], ids=["small", "multipart"])
async def test_if_match_with_a_wrong_etag(
    gateway: Any, stub: Any, s3: Any, bucket: str, size: int
) -> None:
    old_blob = b"the original"
    old = await upload(gateway, "guarded.bin", old_blob)
    wrong = "0" * 32
    assert wrong != old.etag
    await expect_status(
        Code.FAILED_PRECONDITION, upload(gateway, "guarded.bin", payload(size), if_match=wrong)
    )
    await _assert_unchanged(stub, s3, bucket, "guarded.bin", old, old_blob)


@pytest.mark.both_s3s
async def test_if_match_on_a_missing_key(gateway: Any, s3: Any, bucket: str) -> None:
    # "Replace only the object with this etag": there is no such object.
    await expect_status(
        Code.FAILED_PRECONDITION, upload(gateway, "absent.bin", b"data", if_match="0" * 32)
    )
    await wait_nothing_left(s3, bucket, "absent.bin")


# --- stream shape: spec first, exactly once ----------------------------------


async def test_data_before_spec(gateway: Any, s3: Any, bucket: str) -> None:
    requests = [data(b"early bytes"), spec("early.bin"), data(b"more")]
    await expect_status(Code.INVALID_ARGUMENT, upload_requests(gateway, requests))
    await wait_nothing_left(s3, bucket, "early.bin")


async def test_empty_stream_has_no_spec(gateway: Any) -> None:
    await expect_status(Code.INVALID_ARGUMENT, upload_requests(gateway, []))


async def test_first_message_with_nothing_set(gateway: Any) -> None:
    requests = [storage_pb2.UploadRequest(), data(b"bytes")]
    await expect_status(Code.INVALID_ARGUMENT, upload_requests(gateway, requests))


@pytest.mark.parametrize("before", [SMALL, PART + MiB], ids=["small", "multipart"])
async def test_spec_twice(gateway: Any, s3: Any, bucket: str, before: int) -> None:
    requests = [
        *upload_stream("twice.bin", payload(before)),
        spec("twice.bin"),
        data(b"after the second spec"),
    ]
    await expect_status(Code.INVALID_ARGUMENT, upload_requests(gateway, requests))
    await wait_nothing_left(s3, bucket, "twice.bin")


# --- size limit ----------------------------------------------------------------


async def test_object_size_limit(moto_endpoint: str, s3: Any, bucket: str) -> None:
    settings = gateway_settings(moto_endpoint, bucket, max_object_size=6 * MiB)
    async with running_gateway(settings) as (gw, stub, _channel):
        # Declared too big: refused (ideally before any byte is stored).
        await expect_status(
            Code.RESOURCE_EXHAUSTED, upload(gw, "declared.bin", payload(7 * MiB), size=7 * MiB)
        )
        await wait_nothing_left(s3, bucket, "declared.bin")

        # Not declared: refused once the streamed bytes pass the limit.
        await expect_status(Code.RESOURCE_EXHAUSTED, upload(gw, "streamed.bin", payload(7 * MiB)))
        await wait_nothing_left(s3, bucket, "streamed.bin")

        # One byte over.
        await expect_status(
            Code.RESOURCE_EXHAUSTED, upload(gw, "one-over.bin", payload(6 * MiB + 1))
        )
        await wait_nothing_left(s3, bucket, "one-over.bin")

        # Exactly the limit is fine.
        blob = payload(6 * MiB, seed=6)
        obj = await upload(gw, "at-limit.bin", blob, size=len(blob))
        assert obj.size == 6 * MiB
        assert (await download(stub, "at-limit.bin")).data == blob


# --- S3 failing under a stream ------------------------------------------------


async def test_s3_dies_mid_stream_is_unavailable(s3: Any, bucket: str) -> None:
    moto = LocalMoto()
    endpoint = moto.start()
    try:
        settings = gateway_settings(
            endpoint, bucket, s3_max_attempts=2, s3_connect_timeout=2.0, s3_read_timeout=10.0
        )
        async with running_gateway(settings) as (gw, stub, _channel):
            blob = payload(4 * PART)
            first_half_sent = threading.Event()
            resume = threading.Event()

            def requests() -> Iterator[storage_pb2.UploadRequest]:
                yield spec("doomed.bin")
                yield from (data(piece) for piece in chunks(blob[: PART + MiB]))
                first_half_sent.set()
                resume.wait(30)
                yield from (data(piece) for piece in chunks(blob[PART + MiB :]))

            call = asyncio.ensure_future(upload_requests(gw, requests(), rpc_timeout=60))
            try:
                await asyncio.to_thread(first_half_sent.wait, 30)
                # moto keeps its state per process: the session's client sees
                # this server's buckets, so it can tell when parts are under way.
                await wait_multipart_started(s3, bucket, "doomed.bin")
                await moto.stop()
            finally:
                resume.set()
            await expect_status(Code.UNAVAILABLE, call)

            # The gateway still serves calls that do not need S3.
            await expect_status(
                Code.INVALID_ARGUMENT, stub.Stat(storage_pb2.StatRequest(key=""), timeout=10)
            )
            presigned = await stub.Presign(
                storage_pb2.PresignRequest(key="doomed.bin", method=storage_pb2.HTTP_METHOD_GET),
                timeout=10,
            )
            assert presigned.url
        # Nothing was committed. (The multipart upload itself may be left: the
        # gateway could not reach S3 to abort it.)
        listing = await s3.list_objects_v2(Bucket=bucket, Prefix="doomed.bin")
        assert listing.get("Contents", []) == []
    finally:
        await moto.stop()


async def test_nothing_left_check_sees_a_committed_object(
    gateway: Any, s3: Any, bucket: str
) -> None:
    # Guards the guard: assert_nothing_left must fail when something is there.
    await upload(gateway, "present.bin", b"x")
    with pytest.raises(AssertionError):
        await assert_nothing_left(s3, bucket, "present.bin")
