"""Upload, the successful paths: what is stored is exactly what was sent, and
the returned Object describes it as docs/api.md says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import google_crc32c
import pytest

from blobgate.v1 import storage_pb2
from tests.support.helpers import (
    PART,
    Code,
    MiB,
    download,
    expect_status,
    payload,
    sha256,
    spec,
    upload,
    upload_aio,
    upload_requests,
)

CHECKSUMS = storage_pb2.Checksums


async def test_small_upload_round_trip(stub: Any, s3: Any, bucket: str) -> None:
    # grpc.aio here (the other tests upload with the sync client: see helpers).
    blob = payload(3000, seed=1)
    obj = await upload_aio(
        stub,
        "docs/report.txt",
        blob,
        content_type="text/x-report",
        metadata={"Owner": "Alice", "Build-ID": "42"},
    )

    assert obj.bucket == bucket
    assert obj.key == "docs/report.txt"
    assert obj.size == len(blob)
    assert obj.etag and '"' not in obj.etag
    assert obj.content_type == "text/x-report"
    assert obj.metadata["owner"] == "Alice"
    assert obj.metadata["build-id"] == "42"
    assert all(k == k.lower() for k in obj.metadata), dict(obj.metadata)
    assert obj.checksums.sha256 == sha256(blob)
    assert obj.checksums.HasField("crc32c")
    assert obj.checksums.crc32c == google_crc32c.value(blob)
    assert obj.HasField("last_modified")
    modified = obj.last_modified.ToDatetime(tzinfo=UTC)
    assert abs(datetime.now(UTC) - modified) < timedelta(minutes=2)

    got = await download(stub, "docs/report.txt")
    assert got.data == blob
    assert got.object.size == len(blob)
    assert got.object.etag == obj.etag
    assert got.object.content_type == "text/x-report"
    assert got.object.checksums.sha256 == sha256(blob)

    # Behind the gateway's back: one plain object with the sha256 in its metadata.
    head = await s3.head_object(Bucket=bucket, Key="docs/report.txt")
    assert head["ETag"].strip('"') == obj.etag
    assert head["ContentLength"] == len(blob)
    assert head["ContentType"] == "text/x-report"
    assert "sha256" in head["Metadata"]
    assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []


@pytest.mark.parametrize(
    ("key", "content_type"),
    [
        ("data/config.json", "application/json"),
        ("page.html", "text/html"),
        ("no-extension", "application/octet-stream"),
        ("odd.zzqxv", "application/octet-stream"),
    ],
)
async def test_content_type_guessed_when_not_given(
    gateway: Any, stub: Any, key: str, content_type: str
) -> None:
    obj = await upload(gateway, key, b'{"a": 1}')
    assert obj.content_type == content_type
    stat = await stub.Stat(storage_pb2.StatRequest(key=key), timeout=10)
    assert stat.object.content_type == content_type


async def test_metadata_round_trips_with_lower_case_keys(gateway: Any, stub: Any) -> None:
    obj = await upload(
        gateway, "meta.bin", b"x", metadata={"MiXeD-Case": "Value Kept", "lower": "v"}
    )
    assert obj.metadata["mixed-case"] == "Value Kept"
    assert obj.metadata["lower"] == "v"
    assert "MiXeD-Case" not in obj.metadata
    stat = (await stub.Stat(storage_pb2.StatRequest(key="meta.bin"), timeout=10)).object
    assert stat.metadata["mixed-case"] == "Value Kept"
    assert stat.metadata["lower"] == "v"


async def test_explicit_default_bucket_is_the_same_as_empty(
    gateway: Any, stub: Any, bucket: str
) -> None:
    obj = await upload(gateway, "named.bin", b"abc", bucket=bucket)
    assert obj.bucket == bucket
    stat = await stub.Stat(storage_pb2.StatRequest(key="named.bin"), timeout=10)
    assert stat.object.etag == obj.etag


async def test_large_object_goes_multipart_byte_exact(
    gateway: Any, stub: Any, s3: Any, bucket: str
) -> None:
    blob = payload(64 * MiB + 123, seed=64)
    digest = sha256(blob)
    obj = await upload(gateway, "big/object.bin", blob, rpc_timeout=100)
    assert obj.size == len(blob)
    assert obj.checksums.sha256 == digest
    assert obj.checksums.crc32c == google_crc32c.value(blob)
    head = await s3.head_object(Bucket=bucket, Key="big/object.bin")
    assert head["ETag"].strip('"') == obj.etag
    assert head["ContentLength"] == len(blob)
    assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []

    stat = (await stub.Stat(storage_pb2.StatRequest(key="big/object.bin"), timeout=10)).object
    assert stat.size == len(blob)
    assert stat.etag == obj.etag
    assert stat.checksums.sha256 == digest

    got = await download(stub, "big/object.bin", rpc_timeout=100)
    assert len(got.data) == len(blob)
    assert sha256(got.data) == digest
    assert got.data == blob
    assert got.object.checksums.sha256 == digest
    del blob, got


@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param([1] * 257, id="one-byte-messages"),
        pytest.param([4 * MiB] * 3 + [1], id="4MiB-messages"),
        pytest.param([PART - 1], id="part-minus-one"),
        pytest.param([PART], id="exactly-one-part"),
        pytest.param([PART + 1], id="part-plus-one"),
        pytest.param([PART, PART], id="exactly-two-parts"),
        pytest.param([1, 4 * MiB, PART - 1, PART + 1, 1, 3], id="mixed"),
    ],
)
async def test_message_sizes_do_not_matter(gateway: Any, stub: Any, sizes: list[int]) -> None:
    blob = payload(sum(sizes), seed=len(sizes))
    obj = await upload(gateway, "chunked.bin", blob, sizes=sizes, size=len(blob))
    assert obj.size == len(blob)
    assert obj.checksums.sha256 == sha256(blob)
    got = await download(stub, "chunked.bin")
    assert got.data == blob


async def test_empty_object(gateway: Any, stub: Any, s3: Any, bucket: str) -> None:
    obj = await upload_requests(gateway, [spec("empty.txt")])
    assert obj.size == 0
    assert obj.checksums.sha256 == sha256(b"")
    assert obj.checksums.crc32c == google_crc32c.value(b"")
    assert obj.content_type == "text/plain"

    got = await download(stub, "empty.txt")
    assert got.data == b""
    assert got.object.size == 0
    stat = (await stub.Stat(storage_pb2.StatRequest(key="empty.txt"), timeout=10)).object
    assert stat.size == 0
    assert (await s3.head_object(Bucket=bucket, Key="empty.txt"))["ContentLength"] == 0


async def test_empty_object_with_declared_size_zero(gateway: Any) -> None:
    obj = await upload_requests(gateway, [spec("zero.bin", size=0)])
    assert obj.size == 0


@pytest.mark.parametrize("size", [1000, 2 * PART + 7], ids=["small", "multipart"])
async def test_correct_expected_checksums_and_size_are_accepted(
    gateway: Any, stub: Any, size: int
) -> None:
    blob = payload(size, seed=7)
    expected = CHECKSUMS(sha256=sha256(blob), crc32c=google_crc32c.value(blob))
    obj = await upload(gateway, "verified.bin", blob, size=size, expected=expected)
    assert obj.size == size
    assert obj.checksums.sha256 == expected.sha256
    assert obj.checksums.crc32c == expected.crc32c
    assert (await download(stub, "verified.bin")).data == blob


async def test_expected_sha256_alone_is_accepted(gateway: Any) -> None:
    blob = b"only the sha256 is vouched for"
    obj = await upload(gateway, "sha-only.bin", blob, expected=CHECKSUMS(sha256=sha256(blob)))
    assert obj.checksums.sha256 == sha256(blob)


@pytest.mark.both_s3s
async def test_if_none_match_creates_a_new_key(gateway: Any, stub: Any) -> None:
    obj = await upload(gateway, "fresh.bin", b"first", if_none_match=True)
    assert obj.size == 5
    assert (await download(stub, "fresh.bin")).data == b"first"


@pytest.mark.both_s3s
async def test_if_match_with_the_right_etag_replaces(gateway: Any, stub: Any) -> None:
    old = await upload(gateway, "replace.bin", b"old contents")
    new = await upload(gateway, "replace.bin", b"new contents!", if_match=old.etag)
    assert new.size == 13
    assert new.etag != old.etag
    assert (await download(stub, "replace.bin")).data == b"new contents!"


async def test_plain_upload_overwrites(gateway: Any, stub: Any) -> None:
    await upload(gateway, "again.bin", b"one")
    await upload(gateway, "again.bin", b"two!")
    assert (await download(stub, "again.bin")).data == b"two!"


async def test_key_of_exactly_1024_bytes_is_accepted(gateway: Any, stub: Any) -> None:
    key = "é" * 512  # 1024 bytes of UTF-8
    obj = await upload(gateway, key, b"long key")
    assert obj.key == key
    assert (await download(stub, key)).data == b"long key"
    await expect_status(
        Code.NOT_FOUND, stub.Stat(storage_pb2.StatRequest(key="é" * 511 + "x"), timeout=10)
    )
