"""Download: ranges, stream shape, preconditions, and a multi-MiB object."""

from __future__ import annotations

from typing import Any

import pytest

from blobgate.v1 import storage_pb2
from tests.support.helpers import (
    RANGED_BLOB,
    RANGED_SIZE,
    RANGES,
    Code,
    MiB,
    download,
    expect_status,
    payload,
    sha256,
    upload,
)

# Servicer tests over gRPC alone: on the in-memory store (see conftest.gateway).
pytestmark = pytest.mark.store("memory")

SIZE = RANGED_SIZE
BLOB = RANGED_BLOB


@pytest.fixture
async def stored(gateway: Any) -> storage_pb2.Object:
    """A 1000-byte object at "ranged.bin"."""
    return await upload(gateway, "ranged.bin", BLOB)


@pytest.mark.parametrize(("offset", "limit", "expected"), RANGES)
async def test_ranges(
    stub: Any, stored: storage_pb2.Object, offset: int, limit: int, expected: bytes
) -> None:
    got = await download(stub, "ranged.bin", offset=offset, limit=limit)
    assert got.data == expected
    # The first message describes the object, not the range.
    assert got.object.key == "ranged.bin"
    assert got.object.size == SIZE
    assert got.object.etag == stored.etag


@pytest.mark.usefixtures("stored")
@pytest.mark.parametrize("offset", [SIZE + 1, SIZE * 10], ids=["one-past", "far-past"])
async def test_offset_past_the_end(stub: Any, offset: int) -> None:
    await expect_status(Code.OUT_OF_RANGE, download(stub, "ranged.bin", offset=offset))


@pytest.mark.usefixtures("stored")
async def test_negative_limit(stub: Any) -> None:
    await expect_status(Code.INVALID_ARGUMENT, download(stub, "ranged.bin", limit=-1))


@pytest.mark.both_s3s
async def test_if_match(stub: Any, stored: storage_pb2.Object) -> None:
    got = await download(stub, "ranged.bin", if_match=stored.etag)
    assert got.data == BLOB
    await expect_status(Code.FAILED_PRECONDITION, download(stub, "ranged.bin", if_match="0" * 32))


async def test_missing_key(stub: Any) -> None:
    await expect_status(Code.NOT_FOUND, download(stub, "no/such/key.bin"))


async def test_empty_object(gateway: Any, stub: Any) -> None:
    await upload(gateway, "empty.bin", b"")
    got = await download(stub, "empty.bin")
    assert got.object.size == 0
    assert got.data == b""
    await expect_status(Code.OUT_OF_RANGE, download(stub, "empty.bin", offset=1))


async def test_multi_mib_object_streams_in_bounded_messages(gateway: Any, stub: Any) -> None:
    blob = payload(12 * MiB + 5, seed=12)
    await upload(gateway, "twelve.bin", blob)
    got = await download(stub, "twelve.bin")
    assert got.data == blob
    assert max(got.message_sizes) <= MiB  # also checked by download()
    assert len(got.message_sizes) >= 13
    assert got.object.checksums.sha256 == sha256(blob)

    # A range across several messages, starting mid-MiB.
    start = 3 * MiB + 17
    got = await download(stub, "twelve.bin", offset=start, limit=5 * MiB)
    assert got.data == blob[start : start + 5 * MiB]


@pytest.mark.store("s3")  # writes to S3 behind the gateway's back
async def test_object_written_directly_to_s3(stub: Any, s3: Any, bucket: str) -> None:
    # Objects the gateway did not write (no sha256 in metadata) are still served.
    await s3.put_object(Bucket=bucket, Key="direct.txt", Body=b"hello", ContentType="text/plain")
    got = await download(stub, "direct.txt")
    assert got.data == b"hello"
    assert got.object.size == 5
    assert got.object.content_type == "text/plain"
    assert got.object.etag and '"' not in got.object.etag
