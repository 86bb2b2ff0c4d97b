"""The one place checksums are computed (storage.checksums): the same values
as hashlib and google_crc32c over any chunking, bytes or memoryviews, resumed
from a saved state, and checked against what a client vouched for."""

from __future__ import annotations

import hashlib

import google_crc32c
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blobgate.server.errors import InvalidArgument
from blobgate.server.storage.checksums import Hasher, verify
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
