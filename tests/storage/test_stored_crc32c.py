"""Every read of an object reports the CRC32C S3 stored for it, on moto
and on LocalStack's stricter S3.

A multipart upload that declared its sha256 (every CLI or Python-client
upload of a file above the part size) has the sha256 in its user metadata,
which is written when the upload starts, but its CRC32C only in S3's own
full-object checksum, learnt at the end. Stat, Download (whole or ranged)
and Copy must report that checksum; a COMPOSITE multipart checksum ("...-N",
a checksum of the parts' checksums) is not the object's CRC32C and must never
be reported as one. The reference values are computed here with
google_crc32c."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import google_crc32c
import pytest

from blobgate.server.app import Gateway, start_gateway
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import PART, MiB, download, payload, sha256, upload

COPY_THRESHOLD = 5 * MiB  # the smallest setting: larger copies go part by part


pytestmark = pytest.mark.both_s3s


@pytest.fixture
async def gateway(s3_endpoint: str, bucket: str) -> AsyncIterator[Gateway]:
    """The test's gateway, with the smallest copy threshold."""
    settings = gateway_settings(s3_endpoint, bucket, copy_threshold=COPY_THRESHOLD)
    gw = await start_gateway(settings)
    yield gw
    await stop_gateway(gw)


def crc32c(blob: bytes) -> int:
    return int(google_crc32c.value(blob))


def crc32c_header(blob: bytes) -> str:
    """A CRC32C as S3 writes it: base64 of its four big-endian bytes."""
    return base64.b64encode(crc32c(blob).to_bytes(4, "big")).decode()


async def stat(stub: storage_pb2_grpc.StorageServiceStub, key: str) -> storage_pb2.Object:
    return (await stub.Stat(storage_pb2.StatRequest(key=key), timeout=10)).object


async def copy(stub: storage_pb2_grpc.StorageServiceStub, **fields: Any) -> storage_pb2.Object:
    return (await stub.Copy(storage_pb2.CopyRequest(**fields), timeout=60)).object


def reported_crc32c(obj: storage_pb2.Object) -> int | None:
    return obj.checksums.crc32c if obj.checksums.HasField("crc32c") else None


@pytest.mark.parametrize("size", [2 * PART + 1000, PART - 1000])
async def test_an_upload_that_declared_its_sha256_reports_its_crc32c_everywhere(
    gateway: Gateway,
    stub: storage_pb2_grpc.StorageServiceStub,
    s3: Any,
    bucket: str,
    size: int,
) -> None:
    """A multipart upload with a declared sha256 (and, for comparison, a
    single-part one): Stat, Download whole and ranged, both copy paths'
    results and the copies' Stat report the object's CRC32C."""
    blob = payload(size, seed=21)
    expected = storage_pb2.Checksums(sha256=sha256(blob))
    committed = await upload(gateway, "declared.bin", blob, expected=expected)
    want = crc32c(blob)
    assert reported_crc32c(committed) == want
    if size > PART:  # only S3's full-object checksum holds it, not the metadata
        head = await s3.head_object(Bucket=bucket, Key="declared.bin")
        assert "crc32c" not in head["Metadata"]
    info = await stat(stub, "declared.bin")
    assert (info.checksums.sha256, reported_crc32c(info)) == (sha256(blob), want)
    whole = await download(stub, "declared.bin")
    assert whole.data == blob and reported_crc32c(whole.object) == want
    ranged = await download(stub, "declared.bin", offset=size // 2, limit=1000)
    assert ranged.data == blob[size // 2 : size // 2 + 1000]
    assert reported_crc32c(ranged.object) == want  # the whole object's, whatever the range
    tail = await download(stub, "declared.bin", offset=-100)
    assert tail.data == blob[-100:] and reported_crc32c(tail.object) == want

    big = await copy(stub, source_key="declared.bin", destination_key="big/copy.bin")
    small = await copy(stub, source_key="declared.bin", destination_key="copy.bin")
    kept = await copy(
        stub,
        source_key="declared.bin",
        destination_key="replaced.bin",
        replace_metadata=True,
        metadata={"a": "1"},
    )
    for key, result in (("big/copy.bin", big), ("copy.bin", small), ("replaced.bin", kept)):
        assert reported_crc32c(result) == want, key
        copied = await stat(stub, key)
        assert (copied.checksums.sha256, reported_crc32c(copied)) == (sha256(blob), want), key
        assert (await download(stub, key)).data == blob


async def test_an_object_written_straight_to_s3_reports_only_a_full_object_crc32c(
    stub: storage_pb2_grpc.StorageServiceStub, s3: Any, bucket: str
) -> None:
    """Objects the gateway did not write: a FULL_OBJECT CRC32C multipart
    upload is reported by Stat and Download; a COMPOSITE one (whose checksum
    is of the parts' checksums) is not, and neither is it by a copy."""
    parts = [payload(PART, seed=22), payload(3000, seed=23)]
    blob = b"".join(parts)
    for key, kind in (("full.bin", "FULL_OBJECT"), ("composite.bin", "COMPOSITE")):
        created = await s3.create_multipart_upload(
            Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32C", ChecksumType=kind
        )
        upload_id = created["UploadId"]
        listed = []
        for number, part in enumerate(parts, start=1):
            answer = await s3.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=part,
                ChecksumCRC32C=crc32c_header(part),
            )
            checksum = crc32c_header(part)
            listed.append(
                {"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC32C": checksum}
            )
        extra: dict[str, Any] = {}
        if kind == "FULL_OBJECT":
            extra = {"ChecksumCRC32C": crc32c_header(blob), "ChecksumType": kind}
        await s3.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": listed},
            **extra,
        )
    full = await stat(stub, "full.bin")
    assert reported_crc32c(full) == crc32c(blob)
    assert reported_crc32c((await download(stub, "full.bin")).object) == crc32c(blob)
    composite = await stat(stub, "composite.bin")
    assert reported_crc32c(composite) is None
    got = await download(stub, "composite.bin")
    assert got.data == blob and reported_crc32c(got.object) is None
    copied = await copy(stub, source_key="composite.bin", destination_key="composite-copy.bin")
    assert reported_crc32c(copied) is None
