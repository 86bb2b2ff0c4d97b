"""The client's Download deserializer (client.wire.parse_download_response):
data messages arrive as views of the received bytes, everything else is
parsed by protobuf, and the result is exactly protobuf's for every wire form
the contract allows: fields in another order, unknown fields, repeated
fields, non-minimal varints, data split over any number of messages. Tested
on hand-built messages, through a gRPC server that sends such messages, by a
hypothesis round trip, and byte-exact through a real gateway on moto with
both Client and SyncClient."""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from blobgate.client import BlobgateError, Client, SyncClient
from blobgate.client.loop_thread import LoopThread
from blobgate.client.pool import Pool
from blobgate.client.wire import (
    StorageStub,
    download_payload,
    parse_download_response,
)
from blobgate.server.app import Gateway, start_gateway
from blobgate.server.rpc.codecs import encoded_data_message
from blobgate.v1 import storage_pb2 as pb
from tests.support.gateways import gateway_settings
from tests.support.helpers import payload

MiB = 1024 * 1024
Code = grpc.StatusCode


# -- hand-built wire forms ------------------------------------------------------


def varint(value: int, *, pad: int = 0) -> bytes:
    """``value`` as a protobuf varint, with ``pad`` redundant continuation
    bytes (a non-minimal form every parser accepts)."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    if pad:
        out += bytes([value | 0x80, *[0x80] * (pad - 1), 0])
    else:
        out.append(value)
    return bytes(out)


def field(number: int, wire_type: int, body: bytes) -> bytes:
    """One field: its tag, then ``body`` as given (already in wire form)."""
    return varint(number << 3 | wire_type) + body


def length_delimited(number: int, value: bytes, *, pad: int = 0) -> bytes:
    return field(number, 2, varint(len(value), pad=pad) + value)


def data_field(value: bytes, *, pad: int = 0) -> bytes:
    return length_delimited(2, value, pad=pad)


def object_field(**fields: Any) -> bytes:
    return length_delimited(1, pb.Object(**fields).SerializeToString())


UNKNOWN_FIELDS = [
    field(15, 0, varint(300)),  # varint
    field(16, 1, b"\x01" * 8),  # fixed64
    field(30, 2, varint(3) + b"abc"),  # length-delimited, a number the contract lacks
    field(99, 5, b"\x02" * 4),  # fixed32
]


def reference(raw: bytes) -> tuple[str | None, bytes | pb.Object | None]:
    """What protobuf itself makes of ``raw``: the oneof member set and its value."""
    message = pb.DownloadResponse.FromString(raw)
    which = message.WhichOneof("message")
    if which == "data":
        return which, message.data
    if which == "object":
        return which, message.object
    return None, None


def decoded(raw: bytes) -> tuple[str | None, bytes | pb.Object | None]:
    """The same, from the client's deserializer."""
    message = parse_download_response(raw)
    data = download_payload(message)
    if data is not None:
        return "data", bytes(data)
    assert isinstance(message, pb.DownloadResponse)
    if message.WhichOneof("message") == "object":
        return "object", message.object
    return None, None


def test_a_plain_data_message_is_a_view_of_the_received_bytes() -> None:
    for blob in (b"", b"x", payload(127), payload(128), payload(MiB), payload(MiB + 1)):
        raw = encoded_data_message([blob])
        got = parse_download_response(raw)
        assert isinstance(got, memoryview)
        assert got.obj is raw  # no copy
        assert got == blob
        assert decoded(raw) == reference(raw) == ("data", blob)


ODD_FORMS = {
    "unknown field after data": data_field(b"after") + UNKNOWN_FIELDS[0],
    "unknown fields before data": b"".join(UNKNOWN_FIELDS) + data_field(b"before"),
    "unknown field between two data": data_field(b"one") + UNKNOWN_FIELDS[1] + data_field(b"2"),
    "data twice: the last wins": data_field(b"first") + data_field(b"second"),
    "object, then data: the last wins": object_field(key="k", size=3) + data_field(b"abc"),
    "data, then object: the last wins": data_field(b"abc") + object_field(key="k", size=3),
    "non-minimal length varint": data_field(b"padded", pad=3),
    "non-minimal empty data": data_field(b"", pad=1),
    "empty message": b"",
    "unknown field only": UNKNOWN_FIELDS[2],
    "object with unknown fields": object_field(key="a/b", size=7, etag="e") + UNKNOWN_FIELDS[3],
    "object split in two fields (merged)": object_field(key="k") + object_field(size=9),
}


@pytest.mark.parametrize("raw", ODD_FORMS.values(), ids=ODD_FORMS.keys())
def test_odd_wire_forms_decode_as_protobuf_does(raw: bytes) -> None:
    assert decoded(raw) == reference(raw)


def test_a_message_with_trailing_bytes_past_data_is_parsed_not_sliced() -> None:
    """A length that stops before the end must not become a view of a prefix."""
    raw = data_field(b"abc") + UNKNOWN_FIELDS[0]
    assert not isinstance(parse_download_response(raw), memoryview)
    assert decoded(raw) == ("data", b"abc")


@pytest.mark.parametrize(
    "raw",
    [b"\x12\x05abc", b"\x12", b"\x12\x80", data_field(b"x")[:-1], b"\x0a\x05ab"],
    ids=["length past the end", "tag alone", "varint cut", "data cut", "object cut"],
)
def test_malformed_messages_fail_as_protobuf_does(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        pb.DownloadResponse.FromString(raw)
    with pytest.raises(DecodeError):
        parse_download_response(raw)


# -- hypothesis: any shape of message, and data split over any messages ---------

blobs = st.binary(max_size=300)
fields = st.one_of(
    st.builds(lambda b, pad: data_field(b, pad=pad), blobs, st.integers(0, 3)),
    st.builds(
        lambda key, size: object_field(key=key, size=size),
        st.text(max_size=20),
        st.integers(0, 2**40),
    ),
    st.sampled_from(UNKNOWN_FIELDS),
    st.builds(
        lambda number, value: length_delimited(number, value),
        st.integers(4, 2**29 - 1).filter(lambda n: not 19000 <= n <= 19999),
        blobs,
    ),
)


@given(st.lists(fields, max_size=6))
@settings(max_examples=400, deadline=None)
def test_any_message_shape_decodes_as_protobuf_does(parts: list[bytes]) -> None:
    raw = b"".join(parts)
    assert decoded(raw) == reference(raw)


@given(st.binary(max_size=5000), st.lists(st.integers(0, 5000), max_size=8))
@settings(max_examples=200, deadline=None)
def test_data_split_at_any_points_joins_to_the_bytes(blob: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(blob), *(min(c, len(blob)) for c in cuts)})
    pieces = [blob[a:b] for a, b in itertools.pairwise(points)]
    messages = [encoded_data_message([piece]) for piece in pieces]
    got = [parse_download_response(raw) for raw in messages]
    assert all(isinstance(view, memoryview) for view in got)
    assert b"".join(got) == blob  # type: ignore[arg-type]


# -- through gRPC: a server that sends hand-built messages ------------------------

BLOB = payload(100_000, seed=7)
OBJECT = pb.Object(
    bucket="b", key="odd", size=len(BLOB), etag="e1", content_type="application/x-test"
)
OBJECT.checksums.sha256 = hashlib.sha256(BLOB).digest()


def odd_stream() -> list[bytes]:
    """The object, with its fields reversed and unknown fields around them,
    then BLOB in data messages of every odd form that still means data."""
    reversed_object = b"".join(
        reversed(
            [
                length_delimited(1, OBJECT.bucket.encode()),
                length_delimited(2, OBJECT.key.encode()),
                field(3, 0, varint(OBJECT.size)),
                length_delimited(4, OBJECT.etag.encode()),
                length_delimited(5, OBJECT.content_type.encode()),
                length_delimited(8, OBJECT.checksums.SerializeToString()),
            ]
        )
    )
    assert pb.Object.FromString(reversed_object) == OBJECT
    first = UNKNOWN_FIELDS[0] + length_delimited(1, reversed_object) + UNKNOWN_FIELDS[1]
    cuts = [0, 1, 10, 1000, 1001, 40_000, 99_999, len(BLOB)]
    pieces = [BLOB[a:b] for a, b in itertools.pairwise(cuts)]
    forms = [
        lambda p: data_field(p),
        lambda p: UNKNOWN_FIELDS[2] + data_field(p),
        lambda p: data_field(p) + UNKNOWN_FIELDS[3],
        lambda p: data_field(b"overwritten") + data_field(p),
        lambda p: object_field(key="ignored") + data_field(p),
        lambda p: data_field(p, pad=2),
        lambda p: data_field(b"") + data_field(p),
    ]
    return [first] + [forms[i % len(forms)](piece) for i, piece in enumerate(pieces)]


@pytest.fixture(scope="module")
def odd_server() -> Iterator[str]:
    """A (threaded) gRPC server whose Download sends odd_stream() as raw bytes."""

    def download(request: pb.DownloadRequest, context: grpc.ServicerContext) -> Iterator[bytes]:
        if request.key == "second-object":
            yield from [odd_stream()[0], data_field(b"abc"), object_field(key="again")]
            return
        yield from odd_stream()

    handler = grpc.unary_stream_rpc_method_handler(
        download,
        request_deserializer=pb.DownloadRequest.FromString,
        response_serializer=lambda raw: raw,
    )
    service = pb.DESCRIPTOR.services_by_name["StorageService"].full_name
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {"Download": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


async def test_client_reads_odd_forms_exactly(odd_server: str) -> None:
    async with Client(odd_server) as client:
        stream = await client.open_download("odd")
        async with stream:
            assert stream.info.key == "odd" and stream.info.size == len(BLOB)
            assert stream.info.sha256 == OBJECT.checksums.sha256
            chunks = [chunk async for chunk in stream]
        assert all(isinstance(chunk, bytes) for chunk in chunks)
        assert b"".join(chunks) == BLOB  # and the sha256 check at the end passed
        sink = io.BytesIO()
        await client.download_to("odd", sink)
        assert sink.getvalue() == BLOB


async def test_a_second_object_message_is_an_error(odd_server: str) -> None:
    async with Client(odd_server) as client:
        with pytest.raises(BlobgateError) as caught:
            _ = [chunk async for chunk in client.download("second-object")]
    assert caught.value.code == Code.INTERNAL
    assert "second object" in str(caught.value)


def test_sync_client_reads_odd_forms_exactly(odd_server: str, tmp_path: Path) -> None:
    with SyncClient(odd_server) as client:
        assert b"".join(client.download("odd")) == BLOB
        info = client.download_to("odd", tmp_path / "odd.bin")
    assert (tmp_path / "odd.bin").read_bytes() == BLOB
    assert info.etag == "e1"


# -- through a real gateway on moto ---------------------------------------------

SIZES = [0, 1, MiB - 1, MiB, 3 * MiB + 5]


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[Client]:
    async with Client(f"127.0.0.1:{gateway.port}") as c:
        yield c


async def test_the_client_stub_takes_data_raw(gateway: Gateway) -> None:
    pool = Pool([f"127.0.0.1:{gateway.port}"], [])
    try:
        endpoint = pool.acquire()
        assert endpoint is not None and isinstance(endpoint.stub, StorageStub)
    finally:
        await pool.close()


async def test_gateway_downloads_are_byte_exact(client: Client, tmp_path: Path) -> None:
    for size in SIZES:
        blob = payload(size, seed=size)
        await client.upload(f"exact/{size}", blob, resumable=False)
        stream = await client.open_download(f"exact/{size}")
        async with stream:
            views = [view async for view in stream.views()]
        assert all(isinstance(view, memoryview) and len(view) <= MiB for view in views)
        assert b"".join(views) == blob
        assert b"".join([chunk async for chunk in client.download(f"exact/{size}")]) == blob
        info = await client.download_to(f"exact/{size}", tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == blob
        assert info.sha256 == hashlib.sha256(blob).digest()
    blob = payload(3 * MiB + 5, seed=3 * MiB + 5)
    ranged = client.download(f"exact/{len(blob)}", offset=MiB - 3, limit=MiB + 7)
    assert b"".join([chunk async for chunk in ranged]) == blob[MiB - 3 : 2 * MiB + 4]


def test_sync_client_gateway_downloads_are_byte_exact(moto_endpoint: str, bucket: str) -> None:
    """SyncClient, against a gateway running on a loop thread of its own."""
    runner = LoopThread()
    gateway: Gateway = runner.run(start_gateway(gateway_settings(moto_endpoint, bucket)))
    try:
        with SyncClient(f"127.0.0.1:{gateway.port}") as client:
            for size in SIZES:
                blob = payload(size, seed=size)
                client.upload(f"sync/{size}", blob, resumable=False)
                chunks = list(client.download(f"sync/{size}"))
                assert all(isinstance(chunk, bytes) for chunk in chunks)
                assert b"".join(chunks) == blob
    finally:
        runner.run(gateway.stop(grace=1.0))
        runner.stop()
