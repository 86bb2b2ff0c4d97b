"""PresignUploadParts: many parts of a direct session signed in one call,
each checked as PresignUploadPart checks one, on moto and on LocalStack
(which checks the URLs' signatures and the parts' CRC32Cs, as AWS does);
and the bulk signer (``storage.s3.part_urls``) makes the very URLs botocore's
generate_presigned_url makes, whatever the endpoint, addressing style, key
and upload id."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aioboto3
import grpc
import pytest
from aiobotocore.config import AioConfig

from blobgate.server.rpc.direct_upload import MAX_PARTS_PER_CALL
from blobgate.server.storage.protocols import ObjectRef, PartSpec
from blobgate.server.storage.s3.part_urls import sign_parts
from blobgate.v1 import storage_pb2
from tests.service.test_audit import every_formatted_line
from tests.service.test_direct_upload import (
    PART,
    Stub,
    complete,
    crc,
    parts_of,
    put,
    start,
    stat,
)
from tests.support.gateways import gateway_settings
from tests.support.helpers import expect_status, payload, running_gateway

pb = storage_pb2
Code = grpc.StatusCode

# Keys whose path needs encoding: a space, unicode, '+', '%', '~', '='.
ODD_KEYS = ["du/odd name + 100% ü~=.bin", "du/ünï côdé/a+b=c%2F.bin"]


async def presign_parts(stub: Stub, upload_id: str, parts: list[bytes], first: int = 1) -> Any:
    request = pb.PresignUploadPartsRequest(
        upload_id=upload_id,
        parts=[
            pb.UploadPart(part_number=number, size=len(data), crc32c=crc(data))
            for number, data in enumerate(parts, first)
        ],
    )
    return await stub.PresignUploadParts(request, timeout=20)


@pytest.mark.both_s3s
@pytest.mark.parametrize("key", ["du/batch.bin", *ODD_KEYS])
async def test_parts_presigned_in_one_call_upload_directly(
    s3_endpoint: str, bucket: str, key: str
) -> None:
    settings = gateway_settings(s3_endpoint, bucket, direct_transfers=True)
    async with running_gateway(settings) as (_, stub, _channel):
        blob = payload(2 * PART + 4321, seed=41)
        parts = parts_of(blob)
        started = await start(stub, key, size=len(blob))
        answer = await presign_parts(stub, started.upload_id, parts)
        assert [p.part_number for p in answer.parts] == [1, 2, 3]
        assert len({p.url for p in answer.parts}) == 3
        for signed, data in zip(answer.parts, parts, strict=True):
            assert signed.expires_at.seconds > 0
            status, body = await put(signed, data)
            assert status == 200, body[:300]
        done = await complete(stub, started.upload_id, blob)
        assert done.object.key == key and done.object.size == len(blob)
        info = await stat(stub, key)
        assert info.size == len(blob) and info.checksums.crc32c == crc(blob)
        call = stub.Download(pb.DownloadRequest(key=key), timeout=30)
        assert b"".join([m.data async for m in call]) == blob


async def test_a_part_swapped_for_another_is_refused_by_s3(
    localstack_endpoint: str, bucket: str
) -> None:
    """LocalStack only (moto checks neither signatures nor CRC32Cs): each URL
    of a batch pins its own part's number and CRC32C."""
    settings = gateway_settings(localstack_endpoint, bucket, direct_transfers=True)
    async with running_gateway(settings) as (_, stub, _channel):
        blob = payload(2 * PART, seed=42)
        parts = parts_of(blob)
        started = await start(stub, ODD_KEYS[0], size=len(blob))
        answer = await presign_parts(stub, started.upload_id, parts)
        assert (await put(answer.parts[1], parts[0]))[0] in (400, 403)  # part 1's bytes
        headers = {**dict(answer.parts[1].headers), **dict(answer.parts[0].headers)}
        swapped = pb.PresignedUploadPart(url=answer.parts[1].url, headers=headers)
        assert (await put(swapped, parts[0]))[0] in (400, 403)  # part 1's signed CRC32C
        url = answer.parts[1].url.replace("partNumber=2", "partNumber=1")
        renumbered = pb.PresignedUploadPart(url=url, headers=answer.parts[1].headers)
        assert (await put(renumbered, parts[1]))[0] in (400, 403)
        query = pb.QueryUploadStatusRequest(upload_id=started.upload_id)
        assert (await stub.QueryUploadStatus(query, timeout=20)).persisted_size == 0
        for signed, data in zip(answer.parts, parts, strict=True):
            assert (await put(signed, data))[0] == 200
        await complete(stub, started.upload_id, blob)
        assert (await stat(stub, ODD_KEYS[0])).size == len(blob)


async def test_the_parts_of_a_call_are_checked_before_any_is_signed(
    moto_endpoint: str, bucket: str
) -> None:
    settings = gateway_settings(
        moto_endpoint, bucket, direct_transfers=True, max_object_size=3 * PART
    )
    async with running_gateway(settings) as (_, stub, _channel):
        sized = await start(stub, "du/batch-layout.bin", size=PART + 100)

        async def call(upload_id: str, parts: list[tuple[int, int]]) -> Any:
            specs = [pb.UploadPart(part_number=n, size=s, crc32c=0) for n, s in parts]
            request = pb.PresignUploadPartsRequest(upload_id=upload_id, parts=specs)
            return await stub.PresignUploadParts(request, timeout=20)

        # One part out of the layout (short, past the declared size) fails the call.
        for bad in [(1, PART - 1), (3, 100), (2, 99), (0, 10)]:
            error = await expect_status(
                Code.INVALID_ARGUMENT, call(sized.upload_id, [(1, PART), bad])
            )
            assert "part" in str(error.details())
        assert len((await call(sized.upload_id, [(1, PART), (2, 100)])).parts) == 2
        # No parts, or more than a call takes.
        error = await expect_status(Code.INVALID_ARGUMENT, call(sized.upload_id, []))
        assert f"1 to {MAX_PARTS_PER_CALL} parts, got 0" in str(error.details())
        many = [(n, PART) for n in range(1, MAX_PARTS_PER_CALL + 2)]
        error = await expect_status(Code.INVALID_ARGUMENT, call(sized.upload_id, many))
        assert f"got {MAX_PARTS_PER_CALL + 1}" in str(error.details())
        # Past the object size limit.
        unsized = await start(stub, "du/batch-limit.bin")
        await expect_status(Code.RESOURCE_EXHAUSTED, call(unsized.upload_id, [(3, PART), (4, 1)]))
        # The session is unchanged by the refusals: it still completes.
        blob = payload(PART + 100, seed=43)
        answer = await presign_parts(stub, sized.upload_id, parts_of(blob))
        for signed, data in zip(answer.parts, parts_of(blob), strict=True):
            assert (await put(signed, data))[0] == 200
        assert (await complete(stub, sized.upload_id, blob)).object.size == len(blob)
        # A proxied session has no part URLs.
        proxied = await stub.StartResumableUpload(
            pb.StartResumableUploadRequest(spec=pb.UploadSpec(key="du/p.bin")), timeout=20
        )
        await expect_status(Code.FAILED_PRECONDITION, call(proxied.upload_id, [(1, 10)]))


async def test_direct_off_refuses_the_call(moto_endpoint: str, bucket: str) -> None:
    async with running_gateway(gateway_settings(moto_endpoint, bucket)) as (_, stub, _channel):
        started = await start(stub, "du/batch-off.bin", size=3)
        assert not started.direct
        error = await expect_status(
            Code.FAILED_PRECONDITION, presign_parts(stub, started.upload_id, [b"abc"])
        )
        assert "does not offer direct transfers" in str(error.details())


async def test_another_principals_session_is_not_found(
    tmp_path: Path, moto_endpoint: str, bucket: str
) -> None:
    from tests.service.test_authorization import Realm, running

    realm = Realm("jwt", tmp_path)
    try:
        async with running(realm, moto_endpoint, bucket, direct_transfers=True) as gw:
            alice = realm.caller(gw.port, "alice")
            request = pb.StartResumableUploadRequest(
                spec=pb.UploadSpec(key="reports/batch.bin", size=3), direct=True
            )
            started = await alice.stub.StartResumableUpload(
                request, metadata=alice.metadata, timeout=20
            )
            parts = pb.PresignUploadPartsRequest(
                upload_id=started.upload_id,
                parts=[pb.UploadPart(part_number=1, size=3, crc32c=crc(b"abc"))],
            )
            for name in ("mallory", "bob"):
                caller = realm.caller(gw.port, name)
                await expect_status(
                    Code.NOT_FOUND,
                    caller.stub.PresignUploadParts(parts, metadata=caller.metadata, timeout=20),
                )
            answer = await alice.stub.PresignUploadParts(parts, metadata=alice.metadata, timeout=20)
            assert (await put(answer.parts[0], b"abc"))[0] == 200
    finally:
        await realm.close()


async def test_one_audit_and_access_line_per_call_without_urls(
    moto_endpoint: str, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = gateway_settings(moto_endpoint, bucket, direct_transfers=True)
    async with running_gateway(settings) as (_, stub, _channel):
        blob = payload(PART + 7, seed=44)
        started = await start(stub, "du/batch-logged.bin", size=len(blob))
        answer = await presign_parts(stub, started.upload_id, parts_of(blob))
    audit = [r.__dict__ for r in caplog.records if r.name == "blobgate.audit"]
    lines = [line for line in audit if line["method"] == "PresignUploadParts"]
    assert len(lines) == 1
    line = lines[0]
    assert line["action"] == "write" and line["direct"] is True and line["outcome"] == "OK"
    assert line["key"] == "du/batch-logged.bin" and line["parts"] == 2
    assert line["bytes"] == len(blob) and line["expires_at"]
    access = [r.__dict__ for r in caplog.records if r.name == "blobgate.access"]
    logged = [a for a in access if a["method"] == "PresignUploadParts"]
    assert len(logged) == 1 and logged[0]["direct_parts"] == 2
    assert logged[0]["direct_bytes"] == len(blob)
    secrets = [started.upload_id] + [p.url.rpartition("X-Amz-Signature=")[2] for p in answer.parts]
    text = every_formatted_line(caplog)
    assert not any(secret in line for secret in secrets for line in text)


def _unsigned(url: str) -> tuple[str, str]:
    """A URL without its X-Amz-Date and X-Amz-Signature, and its date."""
    base, _, query = url.partition("?")
    kept, date = [], ""
    for item in query.split("&"):
        name, _, value = item.partition("=")
        if name == "X-Amz-Date":
            date = value
        elif name != "X-Amz-Signature":
            kept.append(item)
    return base + "?" + "&".join(kept), date


@pytest.mark.parametrize(
    ("endpoint", "style"),
    [
        ("http://127.0.0.1:9000", "path"),
        ("https://s3.public.example", "virtual"),
        ("https://s3.public.example:8443/", "auto"),
        ("http://[::1]:9000", "path"),
        ("http://S3.Example.COM:80", "path"),  # a default port, upper case
        (None, "virtual"),  # AWS's own endpoint
    ],
)
async def test_bulk_signing_makes_botocores_own_urls(endpoint: str | None, style: str) -> None:
    """Each URL is the one generate_presigned_url makes for that part
    (compared when both fall in the same second, so byte for byte, the
    signature too), for odd keys and upload ids, with a session token. No
    request is sent."""
    session = aioboto3.Session(
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret+/key",
        aws_session_token="session/token+==",  # temporary credentials: signed too
        region_name="eu-west-3",
    )
    config = AioConfig(signature_version="s3v4", s3={"addressing_style": style})
    upload_id = "2~abc.DEF_ghi-jkl/mno+pqr=="
    parts = [PartSpec(1, PART, 0), PartSpec(2, PART, 0xDEADBEEF), PartSpec(3, 17, 0xFFFFFFFF)]
    async with session.client("s3", endpoint_url=endpoint, config=config) as client:
        for key in [*ODD_KEYS, "plain.bin"]:
            ref = ObjectRef("blobgate-bucket", key)
            for _ in range(5):
                urls = await sign_parts(client, ref, upload_id, parts, 60)
                theirs = [
                    await client.generate_presigned_url(
                        "upload_part",
                        Params={
                            "Bucket": ref.bucket,
                            "Key": key,
                            "UploadId": upload_id,
                            "PartNumber": part.number,
                            "ContentLength": part.size,
                            "ChecksumCRC32C": _b64(part.crc32c),
                        },
                        ExpiresIn=60,
                    )
                    for part in parts
                ]
                dates = {_unsigned(url)[1] for url in urls + theirs}
                if len(dates) == 1:
                    assert urls == theirs
                    break
                # A second boundary fell between them: all but the signatures agree.
                assert [_unsigned(u)[0] for u in urls] == [_unsigned(u)[0] for u in theirs]
            else:
                pytest.fail("never signed within one second")


def _b64(crc32c: int) -> str:
    from blobgate.server.storage.checksums import crc32c_to_s3

    return crc32c_to_s3(crc32c)
