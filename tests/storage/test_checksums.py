"""The one place checksums are computed (storage.checksums): the same values
as hashlib and google_crc32c over any chunking, bytes or memoryviews, resumed
from a saved state, and checked against what a client vouched for."""

from __future__ import annotations

import hashlib

import google_crc32c
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blobgate.server.core.errors import InvalidArgument
from blobgate.server.storage.checksums import (
    Hasher,
    crc32c_combine,
    crc32c_from_s3,
    crc32c_to_s3,
    verify,
)
from blobgate.server.storage.protocols import ContentChecksums


@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(0, 8))
def test_any_chunking_resumed_anywhere_gives_hashlib_values(chunks: list[bytes], cut: int) -> None:
    data = b"".join(chunks)
    first = Hasher(resumable=True)
    plain = Hasher()
    for chunk in chunks[:cut]:
        first.update(memoryview(chunk))
        plain.update(memoryview(chunk))
    resumed = Hasher(*first.state(), resumable=True)  # another instance continues
    for chunk in chunks[cut:]:
        resumed.update(chunk)
        plain.update(chunk)
    expected = ContentChecksums(hashlib.sha256(data).digest(), google_crc32c.value(data))
    assert resumed.checksums() == expected
    assert plain.checksums() == expected


def test_only_a_resumable_hasher_saves_its_state() -> None:
    with pytest.raises(TypeError, match="resumable"):
        Hasher().state()


def test_verify_passes_matching_and_unknown_values() -> None:
    data = b"hello world"
    actual = ContentChecksums(hashlib.sha256(data).digest(), google_crc32c.value(data))
    verify(actual, actual)
    verify(ContentChecksums(), actual)


@pytest.mark.parametrize(
    ("expected", "fragment"),
    [
        (ContentChecksums(sha256=b"\0" * 32), "sha256 mismatch"),
        (ContentChecksums(crc32c=1), "crc32c mismatch"),
    ],
)
def test_verify_refuses_what_does_not_match(expected: ContentChecksums, fragment: str) -> None:
    data = b"abc"
    actual = ContentChecksums(hashlib.sha256(data).digest(), google_crc32c.value(data))
    with pytest.raises(InvalidArgument, match=f"{fragment}.*nothing was stored"):
        verify(expected, actual)


@given(st.binary(max_size=2000), st.binary(max_size=2000))
def test_crc32c_combine_gives_the_crc32c_of_the_concatenation(a: bytes, b: bytes) -> None:
    combined = crc32c_combine(google_crc32c.value(a), google_crc32c.value(b), len(b))
    assert combined == google_crc32c.value(a + b)


def test_crc32c_combine_past_a_whole_part() -> None:
    part = bytes(range(256)) * (8 * 4096)  # 8 MiB
    first = google_crc32c.value(b"head")
    assert crc32c_combine(first, google_crc32c.value(part), len(part)) == google_crc32c.value(
        b"head" + part
    )


@given(st.lists(st.lists(st.binary(max_size=200), max_size=4), max_size=5), st.integers(0, 5))
def test_parts_hashed_once_give_each_parts_crc32c_and_the_whole_objects(
    parts: list[list[bytes]], cut: int
) -> None:
    """update_part: the part's own CRC32C (sent with it to S3) and the same
    running checksums as hashing every byte, resumed anywhere."""
    hasher = Hasher(resumable=True)
    for pieces in parts[:cut]:
        assert hasher.update_part([memoryview(p) for p in pieces]) == google_crc32c.value(
            b"".join(pieces)
        )
    resumed = Hasher(*hasher.state(), resumable=True)
    for pieces in parts[cut:]:
        assert resumed.update_part(b"".join(pieces)) == google_crc32c.value(b"".join(pieces))
    data = b"".join(b"".join(pieces) for pieces in parts)
    assert resumed.checksums() == ContentChecksums(
        hashlib.sha256(data).digest(), google_crc32c.value(data)
    )


def test_crc32c_as_s3_writes_it() -> None:
    value = google_crc32c.value(b"hello")
    assert crc32c_to_s3(value) == "mnG7TA=="  # base64 of its four big-endian bytes
    assert crc32c_from_s3(crc32c_to_s3(value)) == value
    assert crc32c_from_s3(crc32c_to_s3(0)) == 0
    # A composite checksum (of the parts' checksums) is not the bytes' CRC32C.
    assert crc32c_from_s3("mnG7TA==-3") is None
    assert crc32c_from_s3("") is None
    assert crc32c_from_s3("not base64!") is None
    assert crc32c_from_s3("AAAAAAAA") is None  # 6 bytes
