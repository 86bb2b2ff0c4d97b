"""The Upload stream adapter on its own: spec first, then data, counted and
hashed, with every mismatch raised before the stream ends cleanly."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence

import google_crc32c
import pytest

from blobgate.v1 import storage_pb2 as pb
from server.errors import BlobgateError, InvalidArgument, OutOfRange, ResourceExhausted
from server.upload_stream import UploadStream


async def _messages(items: Sequence[pb.UploadRequest]) -> AsyncIterator[pb.UploadRequest]:
    for item in items:
        yield item


def _stream(spec: pb.UploadSpec | None, *chunks: bytes, max_size: int = 1 << 30) -> UploadStream:
    items = [pb.UploadRequest(spec=spec)] if spec is not None else []
    items += [pb.UploadRequest(data=chunk) for chunk in chunks]
    return UploadStream(_messages(items), max_size)


async def _drain(stream: UploadStream) -> bytes:
    await stream.read_first()
    return b"".join([chunk async for chunk in stream.chunks()])


async def test_passes_data_through_and_hashes_it() -> None:
    chunks = [b"a", b"bc" * 1000, b"", b"xyz"]
    stream = _stream(pb.UploadSpec(key="k"), *chunks)
    data = await _drain(stream)
    assert data == b"".join(chunks)
    assert stream.size == len(data)
    sums = stream.checksums()
    assert sums.sha256 == hashlib.sha256(data).digest()
    assert sums.crc32c == google_crc32c.value(data)


async def test_verified_against_expected_checksums_and_size() -> None:
    data = b"hello world"
    expected = pb.Checksums(sha256=hashlib.sha256(data).digest(), crc32c=google_crc32c.value(data))
    stream = _stream(pb.UploadSpec(key="k", size=len(data), expected=expected), data[:5], data[5:])
    assert await _drain(stream) == data


@pytest.mark.parametrize(
    ("spec", "chunks", "error", "fragment"),
    [
        (None, [], InvalidArgument, "empty stream"),
        (None, [b"data first"], InvalidArgument, "first message must be an UploadSpec"),
        (pb.UploadSpec(key="k", size=3), [b"abcd"], OutOfRange, "more than the declared size"),
        (pb.UploadSpec(key="k", size=5), [b"abc"], OutOfRange, "declared size is 5"),
        (pb.UploadSpec(key="k", size=-1), [], InvalidArgument, "negative"),
        (pb.UploadSpec(key="k", size=11), [], ResourceExhausted, "over the server's limit"),
        (pb.UploadSpec(key="k"), [b"x" * 11], ResourceExhausted, "over the server's limit"),
        (
            pb.UploadSpec(key="k", expected=pb.Checksums(sha256=b"\0" * 32)),
            [b"abc"],
            InvalidArgument,
            "sha256 mismatch",
        ),
        (
            pb.UploadSpec(key="k", expected=pb.Checksums(sha256=b"short")),
            [b"abc"],
            InvalidArgument,
            "must be 32 bytes",
        ),
        (
            pb.UploadSpec(key="k", expected=pb.Checksums(crc32c=1)),
            [b"abc"],
            InvalidArgument,
            "crc32c mismatch",
        ),
    ],
)
async def test_bad_streams(
    spec: pb.UploadSpec | None,
    chunks: list[bytes],
    error: type[BlobgateError],
    fragment: str,
) -> None:
    with pytest.raises(error, match=fragment):
        await _drain(_stream(spec, *chunks, max_size=10))


async def test_second_spec_is_refused_where_it_appears() -> None:
    items = [
        pb.UploadRequest(spec=pb.UploadSpec(key="k")),
        pb.UploadRequest(data=b"abc"),
        pb.UploadRequest(spec=pb.UploadSpec(key="other")),
    ]
    stream = UploadStream(_messages(items), 100)
    await stream.read_first()
    received = []
    with pytest.raises(InvalidArgument, match="a second UploadSpec"):
        async for chunk in stream.chunks():
            received.append(chunk)
    assert received == [b"abc"]


async def test_a_resumed_stream_counts_from_the_persisted_size() -> None:
    resume = pb.UploadResume(upload_id="id", write_offset=8)
    items = [pb.UploadRequest(resume=resume), pb.UploadRequest(data=b"abc")]
    stream = UploadStream(_messages(items), 100)
    assert await stream.read_first() == resume
    stream.resume_at(8, declared=10)
    with pytest.raises(OutOfRange, match="more than the declared size of 10"):
        async for _ in stream.chunks():
            pass
