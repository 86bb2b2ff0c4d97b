"""Direct uploads (StartResumableUploadRequest.direct, PresignUploadPart,
CompleteDirectUpload, the direct_transfers setting): the gateway opens the
session and checks it, the caller PUTs the parts straight to S3 through
presigned URLs that pin each part's CRC32C, and the commit checks the parts
S3 holds against the declared size and full-object CRC32C, on moto and on
LocalStack (which checks the URLs' signatures and the parts' checksums, as
AWS does)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import urllib.error
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import crc32c as crc32c_lib
import grpc
import pytest

from blobgate.server.app import Gateway
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.service.test_audit import every_formatted_line
from tests.support.gateways import gateway_settings
from tests.support.helpers import expect_status, http, payload, running_gateway

pb = storage_pb2
Code = grpc.StatusCode
MiB = 1024 * 1024
PART = 5 * MiB
Stub = storage_pb2_grpc.StorageServiceStub


def crc(data: bytes) -> int:
    return crc32c_lib.crc32c(data)


@pytest.fixture
async def direct_gateway(s3_endpoint: str, bucket: str) -> AsyncIterator[tuple[Gateway, Stub]]:
    settings = gateway_settings(s3_endpoint, bucket, direct_transfers=True)
    async with running_gateway(settings) as (gw, stub, _):
        yield gw, stub


async def start(stub: Stub, key: str, size: int | None = None, **spec: Any) -> Any:
    fields: dict[str, Any] = {"key": key, **spec}
    if size is not None:
        fields["size"] = size
    request = pb.StartResumableUploadRequest(spec=pb.UploadSpec(**fields), direct=True)
    return await stub.StartResumableUpload(request, timeout=20)


def parts_of(blob: bytes) -> list[bytes]:
    return [blob[i : i + PART] for i in range(0, len(blob), PART)] or [b""]


async def put_part(stub: Stub, upload_id: str, number: int, data: bytes) -> tuple[int, bytes]:
    """Presign part ``number`` for ``data`` and PUT it; S3's status and body."""
    signed = await stub.PresignUploadPart(
        pb.PresignUploadPartRequest(
            upload_id=upload_id, part_number=number, size=len(data), crc32c=crc(data)
        ),
        timeout=20,
    )
    return await put(signed, data)


async def put(signed: Any, data: bytes) -> tuple[int, bytes]:
    headers = dict(signed.headers)
    try:
        return await asyncio.to_thread(http, "PUT", signed.url, data, headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def complete(stub: Stub, upload_id: str, blob: bytes, **fields: Any) -> Any:
    request = pb.CompleteDirectUploadRequest(
        upload_id=upload_id, size=len(blob), crc32c=crc(blob), **fields
    )
    return await stub.CompleteDirectUpload(request, timeout=30)


async def stat(stub: Stub, key: str) -> Any:
    return (await stub.Stat(pb.StatRequest(key=key), timeout=20)).object


@pytest.mark.both_s3s
async def test_a_direct_upload_round_trip_with_its_checksums(direct_gateway: Any) -> None:
    _, stub = direct_gateway
    blob = payload(2 * PART + 12345, seed=31)
    started = await start(stub, "du/whole.bin", size=len(blob))
    assert started.direct and started.part_size == PART
    for number, data in enumerate(parts_of(blob), 1):
        status, _ = await put_part(stub, started.upload_id, number, data)
        assert status == 200
    query = pb.QueryUploadStatusRequest(upload_id=started.upload_id)
    assert (await stub.QueryUploadStatus(query, timeout=20)).persisted_size == 2 * PART
    sha = hashlib.sha256(blob).digest()
    done = await complete(stub, started.upload_id, blob, sha256=sha)
    assert done.object.size == len(blob)
    info = await stat(stub, "du/whole.bin")
    assert info.size == len(blob) and info.etag == done.object.etag
    assert info.checksums.crc32c == crc(blob)
    assert info.checksums.sha256 == sha
    call = stub.Download(pb.DownloadRequest(key="du/whole.bin"), timeout=30)
    assert b"".join([m.data async for m in call]) == blob
    # The session ended with the commit.
    await expect_status(Code.NOT_FOUND, stub.QueryUploadStatus(query, timeout=20))


@pytest.mark.both_s3s
async def test_an_empty_object_and_an_undeclared_size(direct_gateway: Any) -> None:
    _, stub = direct_gateway
    empty = await start(stub, "du/empty.bin", size=0)
    assert (await put_part(stub, empty.upload_id, 1, b""))[0] == 200
    await complete(stub, empty.upload_id, b"")
    assert (await stat(stub, "du/empty.bin")).size == 0
    blob = payload(PART + 1000, seed=32)
    open_ended = await start(stub, "du/open.bin")  # no size declared
    for number, data in enumerate(parts_of(blob), 1):
        assert (await put_part(stub, open_ended.upload_id, number, data))[0] == 200
    done = await complete(stub, open_ended.upload_id, blob)
    info = await stat(stub, "du/open.bin")
    assert info.size == len(blob) == done.object.size
    assert info.checksums.crc32c == crc(blob)
    assert not info.checksums.sha256  # none declared, and the gateway saw no byte


# LocalStack only: moto stores a part whatever its signed CRC32C says (checked below).
async def test_a_part_whose_bytes_differ_from_its_pinned_crc32c_is_refused_by_s3(
    localstack_endpoint: str, bucket: str
) -> None:
    settings = gateway_settings(localstack_endpoint, bucket, direct_transfers=True)
    async with running_gateway(settings) as (_, stub, _channel):
        blob = payload(PART + 10, seed=33)
        started = await start(stub, "du/tampered.bin", size=len(blob))
        first = blob[:PART]
        signed = await stub.PresignUploadPart(
            pb.PresignUploadPartRequest(
                upload_id=started.upload_id, part_number=1, size=PART, crc32c=crc(first)
            ),
            timeout=20,
        )
        changed = bytes([first[0] ^ 1]) + first[1:]  # same size, one bit flipped
        status, _ = await put(signed, changed)
        assert status in (400, 403)
        query = pb.QueryUploadStatusRequest(upload_id=started.upload_id)
        assert (await stub.QueryUploadStatus(query, timeout=20)).persisted_size == 0
        # Another header than the signed CRC32C breaks the signature.
        headers = {**dict(signed.headers), "x-amz-checksum-crc32c": "AAAAAA=="}
        forged = pb.PresignUploadPartResponse(url=signed.url, headers=headers)
        assert (await put(forged, changed))[0] in (400, 403)
        assert (await put(signed, first))[0] == 200  # the right bytes still go


@pytest.mark.both_s3s
@pytest.mark.parametrize("wrong", ["crc32c", "size"])
async def test_a_wrong_commit_is_refused_and_leaves_no_object(
    direct_gateway: Any, wrong: str, store_kind: str
) -> None:
    if wrong == "crc32c" and store_kind == "moto":
        pytest.skip(
            "moto lists no part CRC32Cs and completes whatever full-object CRC32C it is "
            "given: only a store that checks (LocalStack, AWS) refuses it"
        )
    _, stub = direct_gateway
    blob = payload(PART + 500, seed=34)
    started = await start(stub, f"du/wrong-{wrong}.bin")
    for number, data in enumerate(parts_of(blob), 1):
        assert (await put_part(stub, started.upload_id, number, data))[0] == 200
    request = pb.CompleteDirectUploadRequest(
        upload_id=started.upload_id, size=len(blob), crc32c=crc(blob)
    )
    if wrong == "crc32c":
        request.crc32c ^= 1
    else:
        request.size -= 1
    await expect_status(Code.INVALID_ARGUMENT, stub.CompleteDirectUpload(request, timeout=30))
    await expect_status(Code.NOT_FOUND, stat(stub, f"du/wrong-{wrong}.bin"))
    query = pb.QueryUploadStatusRequest(upload_id=started.upload_id)
    await expect_status(Code.NOT_FOUND, stub.QueryUploadStatus(query, timeout=20))


async def test_parts_missing_at_the_commit_keep_the_session(
    moto_endpoint: str, bucket: str
) -> None:
    settings = gateway_settings(moto_endpoint, bucket, direct_transfers=True)
    async with running_gateway(settings) as (_, stub, _channel):
        blob = payload(2 * PART + 7, seed=35)
        started = await start(stub, "du/gap.bin", size=len(blob))
        parts = parts_of(blob)
        assert (await put_part(stub, started.upload_id, 1, parts[0]))[0] == 200
        assert (await put_part(stub, started.upload_id, 3, parts[2]))[0] == 200
        error = await expect_status(
            Code.FAILED_PRECONDITION, complete(stub, started.upload_id, blob)
        )
        assert "first missing: part 2" in str(error.details())
        query = pb.QueryUploadStatusRequest(upload_id=started.upload_id)
        assert (await stub.QueryUploadStatus(query, timeout=20)).persisted_size == PART
        assert (await put_part(stub, started.upload_id, 2, parts[1]))[0] == 200
        assert (await complete(stub, started.upload_id, blob)).object.size == len(blob)


async def test_parts_are_checked_against_the_layout_and_the_limit(
    moto_endpoint: str, bucket: str
) -> None:
    settings = gateway_settings(
        moto_endpoint, bucket, direct_transfers=True, max_object_size=3 * PART
    )
    async with running_gateway(settings) as (_, stub, _channel):
        sized = await start(stub, "du/layout.bin", size=PART + 100)

        async def presign(upload_id: str, number: int, size: int) -> Any:
            request = pb.PresignUploadPartRequest(
                upload_id=upload_id, part_number=number, size=size, crc32c=0
            )
            return await stub.PresignUploadPart(request, timeout=20)

        for number, size in [(0, 10), (1, PART - 1), (2, 99), (3, 100), (1, PART + 1)]:
            await expect_status(Code.INVALID_ARGUMENT, presign(sized.upload_id, number, size))
        assert (await presign(sized.upload_id, 2, 100)).url
        unsized = await start(stub, "du/limit.bin")
        await expect_status(Code.RESOURCE_EXHAUSTED, presign(unsized.upload_id, 4, 1))
        await expect_status(Code.INVALID_ARGUMENT, presign(unsized.upload_id, 2, 0))
        # A direct session takes no Upload, and a proxied one no part URL.
        resume = pb.UploadRequest(resume=pb.UploadResume(upload_id=sized.upload_id))
        await expect_status(Code.FAILED_PRECONDITION, stub.Upload(iter([resume]), timeout=20))
        proxied = await stub.StartResumableUpload(
            pb.StartResumableUploadRequest(spec=pb.UploadSpec(key="du/proxied.bin")), timeout=20
        )
        assert not proxied.direct
        await expect_status(Code.FAILED_PRECONDITION, presign(proxied.upload_id, 1, 10))


@pytest.mark.both_s3s
async def test_a_direct_session_resumes_on_another_instance(s3_endpoint: str, bucket: str) -> None:
    blob = payload(3 * PART + 3, seed=36)
    parts = parts_of(blob)
    settings = gateway_settings(s3_endpoint, bucket, direct_transfers=True)
    async with running_gateway(settings) as (_, first, _channel):
        started = await start(first, "du/moved.bin", size=len(blob))
        for number in (1, 2):
            assert (await put_part(first, started.upload_id, number, parts[number - 1]))[0] == 200
    async with running_gateway(settings) as (_, second, _channel):
        query = pb.QueryUploadStatusRequest(upload_id=started.upload_id)
        persisted = (await second.QueryUploadStatus(query, timeout=20)).persisted_size
        assert persisted == 2 * PART
        for number in range(persisted // PART + 1, len(parts) + 1):
            assert (await put_part(second, started.upload_id, number, parts[number - 1]))[0] == 200
        await complete(second, started.upload_id, blob)
        assert (await stat(second, "du/moved.bin")).checksums.crc32c == crc(blob)


async def test_preconditions_hold_at_the_commit(moto_endpoint: str, bucket: str) -> None:
    settings = gateway_settings(moto_endpoint, bucket, direct_transfers=True)
    async with running_gateway(settings) as (_, stub, _channel):
        started = await start(stub, "du/once.bin", size=10, if_none_match=True)
        assert (await put_part(stub, started.upload_id, 1, b"0123456789"))[0] == 200
        other = await start(stub, "du/once.bin", size=3)
        assert (await put_part(stub, other.upload_id, 1, b"abc"))[0] == 200
        await complete(stub, other.upload_id, b"abc")
        await expect_status(
            Code.FAILED_PRECONDITION, complete(stub, started.upload_id, b"0123456789")
        )
        assert (await stat(stub, "du/once.bin")).size == 3


async def test_direct_off_answers_a_proxied_session(moto_endpoint: str, bucket: str) -> None:
    async with running_gateway(gateway_settings(moto_endpoint, bucket)) as (_, stub, _channel):
        started = await start(stub, "du/off.bin", size=3)
        assert not started.direct
        request = pb.PresignUploadPartRequest(
            upload_id=started.upload_id, part_number=1, size=3, crc32c=crc(b"abc")
        )
        await expect_status(Code.FAILED_PRECONDITION, stub.PresignUploadPart(request, timeout=20))
        messages = [
            pb.UploadRequest(resume=pb.UploadResume(upload_id=started.upload_id)),
            pb.UploadRequest(data=b"abc"),
        ]
        done = await stub.Upload(iter(messages), timeout=20)
        assert done.object.size == 3


async def test_rights_and_ownership(tmp_path: Path, moto_endpoint: str, bucket: str) -> None:
    """bob may not write reports/: PERMISSION_DENIED; mallory may write
    anywhere, but alice's session does not exist for her: NOT_FOUND. The
    commit frees alice's one session slot."""
    from tests.service.test_authorization import Realm, running

    realm = Realm("jwt", tmp_path)
    try:
        async with running(
            realm, moto_endpoint, bucket, direct_transfers=True, max_sessions_per_principal=1
        ) as gw:
            alice = realm.caller(gw.port, "alice")
            bob = realm.caller(gw.port, "bob")
            mallory = realm.caller(gw.port, "mallory")
            request = pb.StartResumableUploadRequest(
                spec=pb.UploadSpec(key="reports/d.bin", size=3), direct=True
            )
            await expect_status(
                Code.PERMISSION_DENIED,
                bob.stub.StartResumableUpload(request, metadata=bob.metadata, timeout=20),
            )
            started = await alice.stub.StartResumableUpload(
                request, metadata=alice.metadata, timeout=20
            )
            assert started.direct
            part = pb.PresignUploadPartRequest(
                upload_id=started.upload_id, part_number=1, size=3, crc32c=crc(b"abc")
            )
            done = pb.CompleteDirectUploadRequest(
                upload_id=started.upload_id, size=3, crc32c=crc(b"abc")
            )
            for caller in (mallory, bob):
                await expect_status(
                    Code.NOT_FOUND,
                    caller.stub.PresignUploadPart(part, metadata=caller.metadata, timeout=20),
                )
                await expect_status(
                    Code.NOT_FOUND,
                    caller.stub.CompleteDirectUpload(done, metadata=caller.metadata, timeout=20),
                )
            signed = await alice.stub.PresignUploadPart(part, metadata=alice.metadata, timeout=20)
            assert (await put(signed, b"abc"))[0] == 200
            answer = await alice.stub.CompleteDirectUpload(
                done, metadata=alice.metadata, timeout=20
            )
            assert answer.object.size == 3
            again = await alice.stub.StartResumableUpload(
                request, metadata=alice.metadata, timeout=20
            )  # the slot was freed
            await expect_status(
                Code.RESOURCE_EXHAUSTED,
                alice.stub.StartResumableUpload(request, metadata=alice.metadata, timeout=20),
            )
            assert again.direct
    finally:
        await realm.close()


async def test_audit_and_access_lines_never_hold_the_url(
    moto_endpoint: str, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = gateway_settings(moto_endpoint, bucket, direct_transfers=True)
    async with running_gateway(settings) as (_, stub, _channel):
        started = await start(stub, "du/logged.bin", size=5)
        signed = await stub.PresignUploadPart(
            pb.PresignUploadPartRequest(
                upload_id=started.upload_id, part_number=1, size=5, crc32c=crc(b"hello")
            ),
            timeout=20,
        )
        assert (await put(signed, b"hello"))[0] == 200
        await complete(stub, started.upload_id, b"hello")
    audit = [r.__dict__ for r in caplog.records if r.name == "blobgate.audit"]
    by_method = {line["method"]: line for line in audit}
    presigned = by_method["PresignUploadPart"]
    assert presigned["action"] == "write" and presigned["direct"] is True
    assert presigned["key"] == "du/logged.bin" and presigned["part_number"] == 1
    assert presigned["bytes"] == 5 and presigned["expires_at"]
    committed = by_method["CompleteDirectUpload"]
    assert committed["outcome"] == "OK" and committed["bytes"] == 5
    signature = signed.url.rpartition("X-Amz-Signature=")[2]
    lines = every_formatted_line(caplog)
    assert not any(signature in line or started.upload_id in line for line in lines)


async def test_metrics_count_direct_uploads(moto_endpoint: str, bucket: str) -> None:
    from tests.server.test_metrics import delta, scrape

    settings = gateway_settings(
        moto_endpoint, bucket, direct_transfers=True, metrics_listen="127.0.0.1:0"
    )
    async with running_gateway(settings) as (gw, stub, _channel):
        before, _ = await scrape(gw.metrics_port)
        started = await start(stub, "du/metered.bin", size=4)
        assert (await put_part(stub, started.upload_id, 1, b"abcd"))[0] == 200
        await complete(stub, started.upload_id, b"abcd")
        after, _ = await scrape(gw.metrics_port)
    assert delta(before, after, "blobgate_direct_uploads_total", bucket=bucket) == 1
    assert delta(before, after, "blobgate_direct_upload_bytes_total", bucket=bucket) == 4
    assert delta(before, after, "blobgate_received_bytes_total", bucket=bucket) == 0
    assert delta(before, after, "blobgate_sessions_ended_total", reason="completed") == 1


async def test_malformed_and_unknown_upload_ids(moto_endpoint: str, bucket: str) -> None:
    settings = gateway_settings(moto_endpoint, bucket, direct_transfers=True)
    async with running_gateway(settings) as (_, stub, _channel):
        started = await start(stub, "du/ids.bin", size=3)
        await stub.CancelResumableUpload(
            pb.CancelResumableUploadRequest(upload_id=started.upload_id), timeout=20
        )
        for upload_id, code in (("", Code.INVALID_ARGUMENT), ("%%%", Code.INVALID_ARGUMENT),
                                (started.upload_id, Code.NOT_FOUND)):  # fmt: skip
            part = pb.PresignUploadPartRequest(upload_id=upload_id, part_number=1, size=3)
            await expect_status(code, stub.PresignUploadPart(part, timeout=20))
            done = pb.CompleteDirectUploadRequest(upload_id=upload_id, size=3)
            await expect_status(code, stub.CompleteDirectUpload(done, timeout=20))
        # A sha256 that is not 32 bytes, a negative size: INVALID_ARGUMENT, session kept.
        live = await start(stub, "du/ids.bin", size=3)
        for fields in ({"size": 3, "sha256": b"short"}, {"size": -1}):
            done = pb.CompleteDirectUploadRequest(upload_id=live.upload_id, **fields)
            await expect_status(Code.INVALID_ARGUMENT, stub.CompleteDirectUpload(done, timeout=20))
        query = pb.QueryUploadStatusRequest(upload_id=live.upload_id)
        assert (await stub.QueryUploadStatus(query, timeout=20)).persisted_size == 0


async def test_a_session_ended_on_one_instance_is_over_on_the_other(
    moto_endpoint: str, bucket: str
) -> None:
    """The instance that kept a direct session's record finds it gone in S3:
    its QueryUploadStatus and CompleteDirectUpload answer NOT_FOUND."""
    settings = gateway_settings(moto_endpoint, bucket, direct_transfers=True)
    async with (
        running_gateway(settings) as (_, first, _one),
        running_gateway(settings) as (_, second, _two),
    ):
        started = await start(first, "du/two.bin", size=3)
        assert (await put_part(second, started.upload_id, 1, b"abc"))[0] == 200  # second knows it
        await complete(first, started.upload_id, b"abc")
        query = pb.QueryUploadStatusRequest(upload_id=started.upload_id)
        await expect_status(Code.NOT_FOUND, second.QueryUploadStatus(query, timeout=20))
        await expect_status(Code.NOT_FOUND, complete(second, started.upload_id, b"abc"))
        assert (await stat(second, "du/two.bin")).size == 3
