"""Resumable upload sessions: state in S3 (the multipart upload and the
session record), a persisted size that is part-aligned and never decreases,
resumption from it (on another instance too), how much of it a killed
instance loses, cancel, expiry by the janitor, and the whole-object checks of
the session's spec; on moto and on LocalStack."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from blobgate.server.app import Gateway
from blobgate.server.storage.s3.sha256_records import record_key
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes.s3_fault_proxy import FaultProxy, Predicate, upload_part
from tests.support.gateways import gateway_settings
from tests.support.helpers import (
    PART,
    HeldUpload,
    MiB,
    assert_exact,
    eventually,
    expect_status,
    payload,
    resume_requests,
    running_gateway,
    sessions_left,
    sha256,
    upload_requests,
    wait_multipart_started,
    wait_nothing_left,
)
from tests.support.server_process import ServerProcess
from tests.support.sessions import interrupted, persisted

pytestmark = pytest.mark.both_s3s


async def start(
    stub: storage_pb2_grpc.StorageServiceStub, key: str, **fields: Any
) -> storage_pb2.StartResumableUploadResponse:
    request = storage_pb2.StartResumableUploadRequest(
        spec=storage_pb2.UploadSpec(key=key, **fields)
    )
    response: storage_pb2.StartResumableUploadResponse = await stub.StartResumableUpload(
        request, timeout=10
    )
    return response


async def test_one_stream_commits_the_object_and_ends_the_session(
    gateway: Gateway, stub: storage_pb2_grpc.StorageServiceStub, s3: Any, bucket: str
) -> None:
    blob = payload(2 * PART + 123, seed=1)
    started = await start(stub, "one.bin", size=len(blob))
    assert started.part_size == PART
    assert started.expires_after_idle.ToSeconds() == 7 * 86400
    obj = await upload_requests(gateway, resume_requests(started.upload_id, 0, blob))
    assert obj.size == len(blob)
    assert obj.checksums.sha256 == sha256(blob)
    await assert_exact(s3, bucket, "one.bin", blob)
    assert await sessions_left(s3, bucket) == ([], [])
    await expect_status(grpc.StatusCode.NOT_FOUND, persisted(stub, started.upload_id))


async def test_an_interrupted_session_resumes_from_whole_parts(
    gateway: Gateway, stub: storage_pb2_grpc.StorageServiceStub, s3: Any, bucket: str
) -> None:
    blob = payload(3 * PART + 777, seed=2)
    started = await start(stub, "resumed.bin", size=len(blob), content_type="text/plain")
    whole = await interrupted(stub, started.upload_id, blob, stop_at=2 * PART + MiB)
    assert whole == 2 * PART
    # The session outlives the call; its persisted size does not go back.
    await asyncio.sleep(0.3)
    assert await persisted(stub, started.upload_id) == 2 * PART
    records, uploads = await sessions_left(s3, bucket)
    assert len(records) == 1 and uploads == ["resumed.bin"]
    listed = await stub.List(storage_pb2.ListRequest(), timeout=10)
    assert [o.key for o in listed.objects] == []  # the record is not the caller's
    obj = await upload_requests(gateway, resume_requests(started.upload_id, whole, blob))
    assert obj.size == len(blob)
    assert obj.content_type == "text/plain"
    # sha256 is computed over every byte, across both calls.
    assert obj.checksums.sha256 == sha256(blob)
    await assert_exact(s3, bucket, "resumed.bin", blob)
    assert await sessions_left(s3, bucket) == ([], [])


async def test_the_expected_sha256_is_checked_across_calls(
    gateway: Gateway, stub: storage_pb2_grpc.StorageServiceStub, s3: Any, bucket: str
) -> None:
    blob = payload(2 * PART + 5, seed=3)
    expected = storage_pb2.Checksums(sha256=sha256(blob))
    started = await start(stub, "checked.bin", expected=expected)
    whole = await interrupted(stub, started.upload_id, blob, stop_at=PART + 10)
    corrupt = blob[:-1] + bytes([blob[-1] ^ 1])
    error = await expect_status(
        grpc.StatusCode.INVALID_ARGUMENT,
        upload_requests(gateway, resume_requests(started.upload_id, whole, corrupt)),
    )
    assert "sha256 mismatch" in str(error.details())
    # A wrong whole object cannot be mended by resuming: the session is over.
    await wait_nothing_left(s3, bucket, "checked.bin")
    assert await sessions_left(s3, bucket) == ([], [])


async def test_a_wrong_write_offset_is_out_of_range(
    gateway: Gateway, stub: storage_pb2_grpc.StorageServiceStub, s3: Any, bucket: str
) -> None:
    blob = payload(PART + 10, seed=4)
    started = await start(stub, "offset.bin")
    for offset in (10, PART, -1):
        error = await expect_status(
            grpc.StatusCode.OUT_OF_RANGE,
            upload_requests(gateway, resume_requests(started.upload_id, offset, blob)),
        )
        assert "persisted size, 0" in str(error.details())
    assert await persisted(stub, started.upload_id) == 0
    obj = await upload_requests(gateway, resume_requests(started.upload_id, 0, blob))
    assert obj.checksums.sha256 == sha256(blob)


async def test_cancel_deletes_what_the_session_stored(
    gateway: Gateway, stub: storage_pb2_grpc.StorageServiceStub, s3: Any, bucket: str
) -> None:
    blob = payload(2 * PART, seed=5)
    started = await start(stub, "cancelled.bin")
    await interrupted(stub, started.upload_id, blob, stop_at=PART + 1)
    cancel = storage_pb2.CancelResumableUploadRequest(upload_id=started.upload_id)
    await stub.CancelResumableUpload(cancel, timeout=10)
    await wait_nothing_left(s3, bucket, "cancelled.bin")
    assert await sessions_left(s3, bucket) == ([], [])
    await expect_status(grpc.StatusCode.NOT_FOUND, persisted(stub, started.upload_id))
    await expect_status(grpc.StatusCode.NOT_FOUND, stub.CancelResumableUpload(cancel, timeout=10))
    await expect_status(
        grpc.StatusCode.NOT_FOUND,
        upload_requests(gateway, resume_requests(started.upload_id, 0, blob)),
    )


async def test_an_empty_object_through_a_session(
    gateway: Gateway, stub: storage_pb2_grpc.StorageServiceStub, s3: Any, bucket: str
) -> None:
    started = await start(stub, "empty.txt", size=0)
    obj = await upload_requests(gateway, resume_requests(started.upload_id, 0, b""))
    assert obj.size == 0
    await assert_exact(s3, bucket, "empty.txt", b"")
    assert await sessions_left(s3, bucket) == ([], [])


async def test_a_precondition_that_fails_at_commit_ends_the_session(
    gateway: Gateway, stub: storage_pb2_grpc.StorageServiceStub, s3: Any, bucket: str
) -> None:
    blob = payload(PART + 3, seed=6)
    started = await start(stub, "race.bin", if_none_match=True)
    await s3.put_object(Bucket=bucket, Key="race.bin", Body=b"the winner")
    await expect_status(
        grpc.StatusCode.FAILED_PRECONDITION,
        upload_requests(gateway, resume_requests(started.upload_id, 0, blob)),
    )
    body = await (await s3.get_object(Bucket=bucket, Key="race.bin"))["Body"].read()
    assert body == b"the winner"
    assert await sessions_left(s3, bucket) == ([], [])


def encoded(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("make_id", "code"),
    [
        (lambda bucket: "", grpc.StatusCode.INVALID_ARGUMENT),
        (lambda bucket: "not base64 at all!", grpc.StatusCode.INVALID_ARGUMENT),
        (lambda bucket: encoded(bucket), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda bucket: encoded(f"{bucket}/short"), grpc.StatusCode.INVALID_ARGUMENT),
        # Well-formed, but for a bucket this gateway does not serve...
        (lambda bucket: encoded(f"other/{'A' * 43}"), grpc.StatusCode.PERMISSION_DENIED),
        # ...or for a session that never existed.
        (lambda bucket: encoded(f"{bucket}/{'A' * 43}"), grpc.StatusCode.NOT_FOUND),
    ],
)
async def test_bad_upload_ids_get_clear_statuses(
    stub: storage_pb2_grpc.StorageServiceStub,
    bucket: str,
    make_id: Callable[[str], str],
    code: grpc.StatusCode,
) -> None:
    upload_id = make_id(bucket)
    await expect_status(code, persisted(stub, upload_id))
    cancel = storage_pb2.CancelResumableUploadRequest(upload_id=upload_id)
    await expect_status(code, stub.CancelResumableUpload(cancel, timeout=10))


async def test_a_bad_spec_is_refused_before_a_session_exists(
    stub: storage_pb2_grpc.StorageServiceStub, s3: Any, bucket: str
) -> None:
    await expect_status(grpc.StatusCode.INVALID_ARGUMENT, start(stub, ""))
    await expect_status(grpc.StatusCode.INVALID_ARGUMENT, start(stub, ".blobgate/uploads/x"))
    await expect_status(grpc.StatusCode.INVALID_ARGUMENT, start(stub, "k", size=-1))
    await expect_status(grpc.StatusCode.PERMISSION_DENIED, start(stub, "k", bucket="elsewhere"))
    await s3.put_object(Bucket=bucket, Key="taken", Body=b"x")
    await expect_status(
        grpc.StatusCode.FAILED_PRECONDITION, start(stub, "taken", if_none_match=True)
    )
    assert await sessions_left(s3, bucket) == ([], [])


async def test_the_janitor_aborts_idle_sessions_and_orphaned_uploads(
    s3_endpoint: str, s3: Any, bucket: str
) -> None:
    # Long enough for the first part to be stored before the session, idle
    # since its start, expires (on a loaded machine too).
    settings = gateway_settings(s3_endpoint, bucket, session_expiry=3.0, janitor_interval=0.3)
    async with running_gateway(settings) as (_, stub, _):
        blob = payload(PART + 1, seed=7)
        started = await start(stub, "idle.bin")
        await interrupted(stub, started.upload_id, blob, stop_at=PART + 1)
        # A plain multipart upload nothing owns, as a killed instance leaves.
        await s3.create_multipart_upload(Bucket=bucket, Key="orphan.bin")

        async def swept() -> None:
            assert await sessions_left(s3, bucket) == ([], [])

        await eventually(swept, within=15)
        await expect_status(grpc.StatusCode.NOT_FOUND, persisted(stub, started.upload_id))


async def test_a_live_session_survives_the_janitor(s3_endpoint: str, s3: Any, bucket: str) -> None:
    settings = gateway_settings(s3_endpoint, bucket, session_expiry=60.0, janitor_interval=0.1)
    async with running_gateway(settings) as (gw, stub, _):
        blob = payload(PART + 1, seed=8)
        started = await start(stub, "live.bin")
        whole = await interrupted(stub, started.upload_id, blob, stop_at=PART + 1)
        await asyncio.sleep(0.5)  # several sweeps
        assert await persisted(stub, started.upload_id) == whole
        obj = await upload_requests(gw, resume_requests(started.upload_id, whole, blob))
        assert obj.checksums.sha256 == sha256(blob)


# The idle expiry of the instance that takes over from a killed one. moto
# dates every multipart upload in 2010, so an orphan is older than any
# expiry at once; LocalStack dates them truthfully, so there the orphan is
# left to age past the expiry before the session's last progress, which
# keeps the session live for this long after it.
TAKEOVER_EXPIRY = 6.0


async def test_a_session_outlives_a_killed_instance_and_resumes_on_another(
    store_kind: str, s3_endpoint: str, s3: Any, bucket: str, processes: list[ServerProcess]
) -> None:
    """The gateway SIGKILLed mid-upload: a plain Upload in flight leaves a
    multipart upload that the janitor of the next instance aborts; the session
    resumes on that instance and commits the exact object."""
    first = await ServerProcess.start(
        "--listen", "127.0.0.1:0",
        "--s3-endpoint", s3_endpoint,
        "--default-bucket", bucket,
        "--create-buckets",
        "--part-size", "5MiB",
    )  # fmt: skip
    processes.append(first)
    port = await first.wait_listening()
    blob = payload(3 * PART + 99, seed=9)
    plain = HeldUpload("plain.bin", payload(2 * PART, seed=10), hold_at=PART + MiB)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        in_flight = stub.Upload(plain.requests(), timeout=60)
        await plain.holding()
        await wait_multipart_started(s3, bucket, "plain.bin")
        if store_kind == "localstack":
            await asyncio.sleep(TAKEOVER_EXPIRY + 1.5)  # S3 dates uploads to the second
        started = await start(stub, "survivor.bin", size=len(blob))
        await interrupted(stub, started.upload_id, blob, stop_at=2 * PART + MiB)
        await first.kill()
        with pytest.raises(grpc.aio.AioRpcError):
            await in_flight
    _, uploads = await sessions_left(s3, bucket)
    assert sorted(uploads) == ["plain.bin", "survivor.bin"]

    settings = gateway_settings(
        s3_endpoint, bucket, session_expiry=TAKEOVER_EXPIRY, janitor_interval=0.2
    )
    async with running_gateway(settings) as (second, stub, _):
        # The orphan is older than the expiry; the session's own upload is live.
        async def orphan_gone() -> None:
            assert (await sessions_left(s3, bucket))[1] == ["survivor.bin"]

        await eventually(orphan_gone)
        offset = await persisted(stub, started.upload_id)
        assert offset == 2 * PART
        obj = await upload_requests(second, resume_requests(started.upload_id, offset, blob))
    assert obj.checksums.sha256 == sha256(blob)
    await assert_exact(s3, bucket, "survivor.bin", blob)
    assert await sessions_left(s3, bucket) == ([], [])
    listing = await s3.list_objects_v2(Bucket=bucket)
    # Beside the object, only its sha256 record (it declared none).
    keys = sorted(o["Key"] for o in listing.get("Contents", []))
    assert keys == [record_key("survivor.bin"), "survivor.bin"]


IN_FLIGHT = 4  # --parts-in-flight of the instance the next test kills
# What can be in transit on an Upload stream (docs/api.md): the receive window
# the gateway gives each stream (grpc.http2.lookahead_bytes in blobgate.server.listeners)
# the one message the stream holds while it waits for room (rpc.upload_stream),
# and up to two messages in the client's gRPC (resume_requests sends 1 MiB).
IN_TRANSIT = 4 * MiB + 1 * MiB + 2 * MiB


def part_number(number: int) -> Predicate:
    """The UploadPart requests of part ``number``."""
    return lambda request: upload_part(request) and request.query["partNumber"] == [str(number)]


@pytest.mark.parametrize(
    ("kill_at", "slow_part"),
    [(14 * MiB, None), (36 * MiB, None), (None, 2)],
    ids=["early", "late", "while-part-2-is-slow"],
)
async def test_a_killed_instance_loses_at_most_the_parts_in_flight(
    s3_endpoint: str,
    s3: Any,
    bucket: str,
    processes: list[ServerProcess],
    kill_at: int | None,
    slow_part: int | None,
) -> None:
    """SIGKILL the instance while a session streams at full speed, or while
    S3 holds back one early part (as a retried request would) and the stream
    runs on as far as the gateway lets it: the persisted size trails the
    bytes the client sent by at most (parts_in_flight + 1) parts plus what
    was in transit, and the parts S3 holds by at most parts_in_flight
    (docs/api.md, Resumable uploads). Another instance then resumes the
    session to the exact object."""
    blob = payload(48 * MiB, seed=12)
    sent = 0  # data whose write completed
    sent_at_kill = -1
    with FaultProxy(s3_endpoint) as proxy:
        first = await ServerProcess.start(
            "--listen", "127.0.0.1:0",
            "--s3-endpoint", proxy.url,
            "--default-bucket", bucket,
            "--create-buckets",
            "--part-size", "5MiB",
            "--parts-in-flight", str(IN_FLIGHT),
        )  # fmt: skip
        processes.append(first)
        port = await first.wait_listening()
        if slow_part is not None:
            slow = proxy.delay(60.0, match=part_number(slow_part))

        def kill() -> None:
            nonlocal sent_at_kill
            sent_at_kill = sent
            first.proc.kill()

        async def requests(upload_id: str) -> AsyncIterator[storage_pb2.UploadRequest]:
            nonlocal sent
            for request in resume_requests(upload_id, 0, blob):
                yield request
                sent += len(request.data)
                if sent == kill_at:
                    kill()  # at once, with the stream at full speed
                    await asyncio.Event().wait()

        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            started = await start(stub, "killed.bin", size=len(blob))
            call = stub.Upload(requests(started.upload_id), timeout=90)
            if slow_part is not None:

                async def part_held() -> None:
                    assert slow.fired == 1

                await eventually(part_held)
                async with asyncio.timeout(60):
                    while True:  # until the gateway stops taking data
                        before = sent
                        await asyncio.sleep(1.0)
                        if sent == before:
                            break
                kill()
            with pytest.raises(grpc.aio.AioRpcError):
                await call
        await first.kill()
    assert sent_at_kill > 0

    uploads = (await s3.list_multipart_uploads(Bucket=bucket))["Uploads"]
    assert [u["Key"] for u in uploads] == ["killed.bin"]
    listed = await s3.list_parts(Bucket=bucket, Key="killed.bin", UploadId=uploads[0]["UploadId"])
    held = {int(p["PartNumber"]): int(p["Size"]) for p in listed.get("Parts", [])}
    settings = gateway_settings(s3_endpoint, bucket)
    async with running_gateway(settings) as (second, stub, _):
        offset = await persisted(stub, started.upload_id)
        counted = offset // PART
        measured = (
            f"sent {sent_at_kill / MiB:g} MiB, persisted {offset / MiB:g} MiB, "
            f"S3 holds parts {sorted(held)}"
        )
        assert offset % PART == 0, measured
        assert all(held.get(n) == PART for n in range(1, counted + 1)), measured
        assert max(held, default=0) - counted <= IN_FLIGHT, measured
        assert sent_at_kill - offset <= (IN_FLIGHT + 1) * PART + IN_TRANSIT, measured
        if slow_part is not None:
            assert counted < slow_part, measured  # the held part never reached S3
        obj = await upload_requests(second, resume_requests(started.upload_id, offset, blob))
    assert obj.checksums.sha256 == sha256(blob)
    await assert_exact(s3, bucket, "killed.bin", blob)
    assert await sessions_left(s3, bucket) == ([], [])


async def test_a_stale_stream_cannot_move_a_session_back(
    gateway: Gateway, stub: storage_pb2_grpc.StorageServiceStub, s3: Any, bucket: str
) -> None:
    """Two streams on one session (a client retried while its first call
    still ran): the one that continued first wins, the stale one fails when
    it tries to persist, and the persisted size never goes back."""
    blob = payload(3 * PART + 10, seed=11)
    started = await start(stub, "contested.bin", size=len(blob))
    more = asyncio.Event()

    async def stale() -> AsyncIterator[storage_pb2.UploadRequest]:
        requests = list(resume_requests(started.upload_id, 0, blob))
        first_part = 1 + PART // MiB  # the resume message and one part of data
        for request in requests[: first_part + 1]:
            yield request
        await more.wait()
        for request in requests[first_part + 1 :]:
            yield request

    stale_call = stub.Upload(stale(), timeout=60)

    async def one_part() -> None:
        assert await persisted(stub, started.upload_id) == PART

    await eventually(one_part)
    # The retry continues from the persisted size and gets a part further.
    fresh: asyncio.Event = asyncio.Event()

    async def retried() -> AsyncIterator[storage_pb2.UploadRequest]:
        requests = list(resume_requests(started.upload_id, PART, blob))
        for request in requests[: 1 + PART // MiB + 1]:
            yield request
        await fresh.wait()
        for request in requests[1 + PART // MiB + 1 :]:
            yield request

    retry_call = stub.Upload(retried(), timeout=60)

    async def two_parts() -> None:
        assert await persisted(stub, started.upload_id) == 2 * PART

    await eventually(two_parts)
    more.set()  # the stale stream goes on and stores its second part
    with pytest.raises(grpc.aio.AioRpcError) as stale_error:
        await stale_call
    assert stale_error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "another Upload continued" in str(stale_error.value.details())
    assert await persisted(stub, started.upload_id) == 2 * PART
    fresh.set()
    committed = await retry_call
    assert committed.object.checksums.sha256 == sha256(blob)
    await assert_exact(s3, bucket, "contested.bin", blob)
    assert await sessions_left(s3, bucket) == ([], [])


async def test_a_session_whose_parts_s3_removed_is_over(
    gateway: Gateway, stub: storage_pb2_grpc.StorageServiceStub, s3: Any, bucket: str
) -> None:
    """A bucket lifecycle rule (AbortIncompleteMultipartUpload) removed the
    session's multipart upload: the session answers NOT_FOUND and its record
    goes too."""
    started = await start(stub, "lifecycled.bin")
    uploads = (await s3.list_multipart_uploads(Bucket=bucket))["Uploads"]
    await s3.abort_multipart_upload(
        Bucket=bucket, Key="lifecycled.bin", UploadId=uploads[0]["UploadId"]
    )
    error = await expect_status(grpc.StatusCode.NOT_FOUND, persisted(stub, started.upload_id))
    assert "no longer holds" in str(error.details())
    assert await sessions_left(s3, bucket) == ([], [])
