"""The Upload stream adapter on its own: spec first, then data, counted and
hashed, with every mismatch raised before the stream ends cleanly; and the
Upload deserializer that hands it data messages as bare payloads."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence

import google_crc32c
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from blobgate.server.core.errors import InvalidArgument, OutOfRange, ResourceExhausted, ServiceError
from blobgate.server.rpc.codecs import parse_upload_request
from blobgate.server.rpc.upload_stream import UploadMessage, UploadStream, expected_checksums
from blobgate.server.storage.byte_budget import ByteBudget, Claim
from blobgate.server.storage.protocols import ContentChecksums
from blobgate.server.storage.s3.parts import cut_parts
from blobgate.v1 import storage_pb2 as pb

MiB = 1024 * 1024


async def _messages(items: Sequence[UploadMessage]) -> AsyncIterator[UploadMessage]:
    for item in items:
        yield item


def _stream(spec: pb.UploadSpec | None, *chunks: bytes, max_size: int = 1 << 30) -> UploadStream:
    items = [pb.UploadRequest(spec=spec)] if spec is not None else []
    items += [pb.UploadRequest(data=chunk) for chunk in chunks]
    return UploadStream(_messages(items), max_size)


async def _drain(stream: UploadStream) -> bytes:
    await stream.read_first()
    return b"".join([chunk async for chunk in stream.chunks()])


async def test_passes_data_through_and_counts_it() -> None:
    chunks = [b"a", b"bc" * 1000, b"", b"xyz"]
    stream = _stream(pb.UploadSpec(key="k"), *chunks)
    data = await _drain(stream)
    assert data == b"".join(chunks)
    assert stream.size == len(data)


async def test_verified_against_the_declared_size() -> None:
    data = b"hello world"
    expected = pb.Checksums(sha256=hashlib.sha256(data).digest(), crc32c=google_crc32c.value(data))
    stream = _stream(pb.UploadSpec(key="k", size=len(data), expected=expected), data[:5], data[5:])
    assert await _drain(stream) == data
    assert expected_checksums(stream.spec.expected) == ContentChecksums(
        sha256=hashlib.sha256(data).digest(), crc32c=google_crc32c.value(data)
    )


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
            pb.UploadSpec(key="k", expected=pb.Checksums(sha256=b"short")),
            [b"abc"],
            InvalidArgument,
            "must be 32 bytes",
        ),
    ],
)
async def test_bad_streams(
    spec: pb.UploadSpec | None,
    chunks: list[bytes],
    error: type[ServiceError],
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


async def test_bare_payloads_are_data() -> None:
    """What the deserializer makes of data messages: bytes or memoryviews."""
    raw = b"\x12\x03abc"
    items: list[UploadMessage] = [
        pb.UploadRequest(spec=pb.UploadSpec(key="k", size=7)),
        memoryview(raw)[2:],
        b"de",
        pb.UploadRequest(data=b"f"),
        memoryview(b""),
        b"g",
    ]
    stream = UploadStream(_messages(items), 100)
    assert await _drain(stream) == b"abcdefg"


@pytest.mark.parametrize("first", [b"data first", memoryview(b"data first")])
async def test_a_bare_payload_first_is_refused(first: bytes | memoryview) -> None:
    stream = UploadStream(_messages([first]), 100)
    with pytest.raises(InvalidArgument, match="first message must be an UploadSpec"):
        await stream.read_first()


async def test_an_undecodable_message_is_raised_where_it_appears() -> None:
    items: list[UploadMessage] = [
        pb.UploadRequest(spec=pb.UploadSpec(key="k")),
        b"abc",
        InvalidArgument("the request is not a valid UploadRequest"),
    ]
    stream = UploadStream(_messages(items), 100)
    await stream.read_first()
    with pytest.raises(InvalidArgument, match="not a valid UploadRequest"):
        async for _ in stream.chunks():
            pass


# -- the Upload deserializer ----------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 1024 * 1024, 2_097_152 + 3])
def test_a_data_message_becomes_a_view_of_its_payload(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    raw = pb.UploadRequest(data=payload).SerializeToString()
    parsed = parse_upload_request(raw)
    assert isinstance(parsed, memoryview)
    assert parsed.obj is raw  # no copy: a view into the received message
    assert parsed == payload


@pytest.mark.parametrize(
    "message",
    [
        pb.UploadRequest(spec=pb.UploadSpec(key="k", size=3)),
        pb.UploadRequest(resume=pb.UploadResume(upload_id="id", write_offset=5)),
        pb.UploadRequest(),
    ],
)
def test_other_messages_are_parsed(message: pb.UploadRequest) -> None:
    parsed = parse_upload_request(message.SerializeToString())
    assert isinstance(parsed, pb.UploadRequest) and parsed == message


@pytest.mark.parametrize(
    ("raw", "data"),
    [
        (b"\x12\x01a\x12\x01b", b"b"),  # data twice: the last one wins
        (b"\x12\x01a\x20\x01", b"a"),  # then an unknown varint field
        (b"\x20\x01\x12\x01a", b"a"),  # an unknown field first
        (b"\x12\x81\x00a", b"a"),  # a length in more bytes than it needs
    ],
)
def test_unusual_data_messages_read_as_protobuf_reads_them(raw: bytes, data: bytes) -> None:
    parsed = parse_upload_request(raw)
    assert isinstance(parsed, (pb.UploadRequest, memoryview))
    assert (parsed.data if isinstance(parsed, pb.UploadRequest) else bytes(parsed)) == data


@pytest.mark.parametrize(
    "raw",
    [
        b"\x12",  # no length
        b"\x12\x05ab",  # length past the end
        b"\x12\x80",  # length cut off
        b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # length of 11 bytes
        b"\x0a\x05ab",  # a spec cut short
        b"\x12\x01a\x0a\x05",  # data, then a spec cut short
    ],
)
def test_malformed_messages_are_invalid_argument(raw: bytes) -> None:
    assert isinstance(parse_upload_request(raw), InvalidArgument)


@given(st.binary(max_size=40), st.booleans())
def test_the_deserializer_agrees_with_protobuf(tail: bytes, tagged: bool) -> None:
    """Whatever the bytes, the payload (or the refusal) is protobuf's."""
    raw = (b"\x12" if tagged else b"") + tail
    parsed = parse_upload_request(raw)
    try:
        expected: pb.UploadRequest | None = pb.UploadRequest.FromString(raw)
    except DecodeError:
        expected = None
    if expected is None:
        assert isinstance(parsed, InvalidArgument)
    elif isinstance(parsed, memoryview):
        assert expected.WhichOneof("message") == "data" and bytes(parsed) == expected.data
    else:
        assert parsed == expected


# -- cutting parts under the budget ---------------------------------------------


class _Counted:
    """Upload messages: a spec, then ``chunks`` data messages of 1 MiB, then
    (if ``stall``) nothing more, ever; counts the data messages handed out."""

    def __init__(self, chunks: int, *, stall: bool = False) -> None:
        self.chunks = chunks
        self.pulled = 0
        self._stall = stall

    async def __aiter__(self) -> AsyncIterator[UploadMessage]:
        yield pb.UploadRequest(spec=pb.UploadSpec(key="k"))
        for _ in range(self.chunks):
            self.pulled += 1
            yield b"x" * MiB
        if self._stall:
            await asyncio.Event().wait()


async def _cut(budget: ByteBudget, stream: UploadStream, held: list[tuple[int, Claim]]) -> None:
    """Consume the parts as put() does, each part's budget kept until the end."""
    async for part, reserved in cut_parts(stream.chunks(), 5 * MiB, budget, None):
        held.append((part.tell(), reserved))


async def test_a_stream_that_sends_nothing_holds_no_budget() -> None:
    """An Upload that sends its spec and then nothing is accepted, but takes
    no budget from the uploads that do send (idle uploads must not starve
    active ones of memory_budget)."""
    budget = ByteBudget(5 * MiB)
    accepted = asyncio.Event()

    async def on_accepted() -> None:
        accepted.set()

    stream = UploadStream(_Counted(0, stall=True).__aiter__(), 1 << 30, on_accepted)
    await stream.read_first()
    idle = asyncio.create_task(_cut(budget, stream, []))
    await asyncio.wait_for(accepted.wait(), 5)
    await asyncio.sleep(0.05)
    assert budget.used == 0
    idle.cancel()
    with pytest.raises(asyncio.CancelledError):
        await idle


async def test_an_upload_waiting_for_budget_holds_one_message() -> None:
    budget = ByteBudget(5 * MiB)
    other = budget.claim(5 * MiB, None)
    await other.cover(5 * MiB)  # another upload holds the whole budget
    messages = _Counted(3)
    stream = UploadStream(messages.__aiter__(), 1 << 30)
    await stream.read_first()
    held: list[tuple[int, Claim]] = []
    cutting = asyncio.create_task(_cut(budget, stream, held))
    await asyncio.sleep(0.05)
    assert messages.pulled == 1 and held == []  # the first message waits for budget
    other.release()
    await asyncio.wait_for(cutting, 5)
    assert [(size, claim.taken, claim.sealed) for size, claim in held] == [(3 * MiB, 3 * MiB, True)]


async def test_a_part_takes_budget_as_its_bytes_arrive() -> None:
    budget = ByteBudget(5 * MiB)
    messages = _Counted(10)  # two whole parts
    stream = UploadStream(messages.__aiter__(), 1 << 30)
    await stream.read_first()
    held: list[tuple[int, Claim]] = []
    cutting = asyncio.create_task(_cut(budget, stream, held))
    await asyncio.sleep(0.05)
    assert [(size, claim.taken) for size, claim in held] == [(5 * MiB, 5 * MiB)]
    assert messages.pulled == 6  # the sixth waits for budget
    held[0][1].release()
    await asyncio.wait_for(cutting, 5)  # ended on a part boundary: the empty last part
    assert messages.pulled == 10  # comes at once, with no budget
    assert [(size, claim.taken) for size, claim in held[1:]] == [(5 * MiB, 5 * MiB), (0, 0)]
    held[1][1].release()
    assert budget.used == 0


async def test_a_trickling_part_holds_only_what_it_sent() -> None:
    """One message of a part covers a step (1 MiB), not the whole part."""
    budget = ByteBudget(5 * MiB)
    stream = UploadStream(_Counted(1, stall=True).__aiter__(), 1 << 30)
    await stream.read_first()
    cutting = asyncio.create_task(_cut(budget, stream, []))
    await asyncio.sleep(0.05)
    assert budget.used == MiB
    cutting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cutting
    assert budget.used == 0
