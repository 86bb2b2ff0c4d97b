"""Hostile input: property-based and hand-picked bad requests.

Every bad input must get its documented status (docs/api.md's error table), never
INTERNAL or UNKNOWN, with a message that is non-empty and carries no
traceback; and the gateway must stay healthy afterwards (health SERVING, a
normal Stat and List still work)."""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blobgate.server.app import Gateway
from blobgate.server.rpc import page_token
from blobgate.server.rpc.page_token_key import PageTokenKey
from blobgate.v1 import storage_pb2
from tests.support.helpers import (
    BAD_KEYS,
    MiB,
    assert_status,
    data,
    download,
    expect_status,
    health,
    payload,
    spec,
    upload,
    upload_requests,
)

# Servicer tests over gRPC alone: on the in-memory store (see conftest.gateway).
pytestmark = pytest.mark.store("memory")

Code = grpc.StatusCode
SERVING = health_pb2.HealthCheckResponse.SERVING
NEVER = {Code.INTERNAL, Code.UNKNOWN}

# A modest budget: the file must stay fast on a 2-core CI box.
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

HEALTH_KEY = "healthy/probe.txt"


# -- helpers -----------------------------------------------------------------


def key_is_valid(key: str) -> bool:
    """docs/api.md's key rule: UTF-8, 1..1024 bytes, no NUL, no leading '/', and
    no '.' or '..' path segment."""
    if not key or len(key.encode("utf-8")) > 1024:
        return False
    if "\x00" in key or key.startswith(("/", ".blobgate/")):
        return False
    return not any(segment in {".", ".."} for segment in key.split("/"))


async def outcome(awaitable: Any) -> grpc.RpcError | None:
    """None if the call succeeded, else its error (which must not be
    INTERNAL/UNKNOWN and must carry a clean message)."""
    try:
        await awaitable
    except grpc.RpcError as error:
        details = error.details() or ""
        assert error.code() not in NEVER, f"{error.code().name}: {details!r}"
        assert details.strip(), f"{error.code().name} with an empty message"
        assert "Traceback" not in details, details
        assert 'File "' not in details, details
        return error
    return None


async def expect(code: grpc.StatusCode, awaitable: Any, case: Any) -> None:
    """expect_status, naming the hostile input when it fails."""
    try:
        await expect_status(code, awaitable)
    except (AssertionError, pytest.fail.Exception) as failure:
        raise AssertionError(f"input {case!r}: {failure}") from None


async def assert_healthy(channel: grpc.aio.Channel, stub: Any) -> None:
    """The gateway still serves: health SERVING, a Stat and a List work."""
    assert await health(channel, "") == SERVING
    assert await health(channel, "blobgate.v1.StorageService") == SERVING
    await stub.Stat(storage_pb2.StatRequest(key=HEALTH_KEY), timeout=10)
    listing = await stub.List(storage_pb2.ListRequest(prefix="healthy/"), timeout=10)
    assert [o.key for o in listing.objects] == [HEALTH_KEY]


@pytest.fixture
async def seeded(gateway: Gateway) -> Gateway:
    """The gateway with one known object, for the health check and ranges."""
    await upload(gateway, HEALTH_KEY, b"0123456789")
    return gateway


# -- keys --------------------------------------------------------------------

HAND_PICKED_BAD_KEYS = [
    *BAD_KEYS,
    "k" * 1025,
    "\u00e9" * 513,  # 1026 bytes in UTF-8, 513 characters
    "..",
    ".",
    "a/../b",
    "a/./b",
    "a/..",
    "./a",
    "../a",
    "a/.",
    "/",
    "//a",
    "\x00",
]


async def test_bad_keys_are_invalid_argument_everywhere(
    seeded: Gateway, stub: Any, channel: grpc.aio.Channel
) -> None:
    for key in HAND_PICKED_BAD_KEYS:
        assert not key_is_valid(key)
        bad = Code.INVALID_ARGUMENT
        await expect(bad, stub.Stat(storage_pb2.StatRequest(key=key)), key)
        await expect(bad, stub.Delete(storage_pb2.DeleteRequest(key=key)), key)
        await expect(bad, download(stub, key), key)
        get = storage_pb2.PresignRequest(key=key, method=storage_pb2.HTTP_METHOD_GET)
        await expect(bad, stub.Presign(get), key)
        await expect(bad, upload(seeded, key, b"x"), key)
    await assert_healthy(channel, stub)


async def test_longest_key_is_accepted(seeded: Gateway, stub: Any) -> None:
    key = "k" * 1024
    await upload(seeded, key, b"x")
    assert (await stub.Stat(storage_pb2.StatRequest(key=key))).object.size == 1
    multibyte = "\u00e9" * 512  # exactly 1024 bytes
    await upload(seeded, multibyte, b"y")
    assert (await download(stub, multibyte)).data == b"y"


# Keys as hostile as unicode text gets (surrogates cannot travel in protobuf).
# "\n" is left out: moto's server routes no URL whose decoded path holds a
# line feed and answers such a PUT 404 (docs/api.md says so); S3
# accepts it, so the gateway does not refuse it.
key_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\n"),
    min_size=1,
    max_size=40,
)


@FUZZ
@given(key=key_text, blob=st.binary(max_size=64))
async def test_valid_keys_round_trip(
    seeded: Gateway, stub: Any, channel: grpc.aio.Channel, key: str, blob: bytes
) -> None:
    if not key_is_valid(key):
        await expect_status(Code.INVALID_ARGUMENT, stub.Stat(storage_pb2.StatRequest(key=key)))
        await expect_status(Code.INVALID_ARGUMENT, upload(seeded, key, blob))
        return
    obj = await upload(seeded, key, blob)
    assert obj.key == key
    assert obj.size == len(blob)
    stat = (await stub.Stat(storage_pb2.StatRequest(key=key), timeout=10)).object
    assert stat.key == key
    assert stat.size == len(blob)
    got = await download(stub, key)
    assert got.object.key == key
    assert got.data == blob
    await stub.Delete(storage_pb2.DeleteRequest(key=key), timeout=10)
    await expect_status(Code.NOT_FOUND, stub.Stat(storage_pb2.StatRequest(key=key)))


def _poison(text: str, how: int) -> str:
    """Make a key invalid in one of the ways the contract names."""
    return [
        "/" + text,
        text + "\x00",
        text[:1] + "\x00" + text[1:],
        text + "/..",
        "./" + text,
        text + "/./x",
        text + "k" * 1025,
    ][how]


@FUZZ
@given(text=key_text, how=st.integers(min_value=0, max_value=6))
async def test_invalid_keys_are_invalid_argument(
    seeded: Gateway, stub: Any, text: str, how: int
) -> None:
    key = _poison(text, how)
    assert not key_is_valid(key)
    await expect_status(Code.INVALID_ARGUMENT, stub.Stat(storage_pb2.StatRequest(key=key)))
    await expect_status(Code.INVALID_ARGUMENT, download(stub, key))
    await expect_status(Code.INVALID_ARGUMENT, stub.Delete(storage_pb2.DeleteRequest(key=key)))


UNDECODABLE = [
    b"\x12\x02\xff\xfe",  # field 2 (key), length 2, invalid UTF-8
    b"\x0a\x02\xff\xfe\x12\x01k",  # field 1 (bucket) invalid UTF-8
    b"\x12\x05ab",  # length past the end of the message
    b"\xff\xff\xff",  # not a protobuf message at all
]


async def test_undecodable_requests_on_the_wire(
    seeded: Gateway, stub: Any, channel: grpc.aio.Channel
) -> None:
    """Hand-built StatRequest bytes that the client's protobuf would refuse:
    INVALID_ARGUMENT (gRPC's own deserializer would answer UNKNOWN)."""
    raw_stat = channel.unary_unary(
        "/blobgate.v1.StorageService/Stat",
        request_serializer=lambda b: b,
        response_deserializer=storage_pb2.StatResponse.FromString,
    )
    for request_bytes in UNDECODABLE:
        await expect(Code.INVALID_ARGUMENT, raw_stat(request_bytes, timeout=10), request_bytes)
        await assert_healthy(channel, stub)


# -- Download ranges -----------------------------------------------------------

huge = st.sampled_from([2**63 - 1, -(2**63), 2**62, -(2**62), 2**31, -(2**31), 10, -10, 11])


@FUZZ
@given(
    offset=st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), huge),
    limit=st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), huge),
)
async def test_download_offsets_and_limits(
    seeded: Gateway, stub: Any, offset: int, limit: int
) -> None:
    blob = b"0123456789"
    error = await outcome(download(stub, HEALTH_KEY, offset=offset, limit=limit))
    if limit < 0:
        assert error is not None
        assert_status(error, Code.INVALID_ARGUMENT)
        return
    if offset > len(blob):
        assert error is not None, f"offset {offset} past the end was accepted"
        assert_status(error, Code.OUT_OF_RANGE)
        return
    assert error is None, f"offset {offset} limit {limit}: {error.details()}"
    got = await download(stub, HEALTH_KEY, offset=offset, limit=limit)
    start = offset if offset >= 0 else max(0, len(blob) + offset)
    expected = blob[start:]
    if limit:
        expected = expected[:limit]
    assert got.data == expected


@FUZZ
@given(
    offset=st.integers(min_value=-30, max_value=30),
    limit=st.integers(min_value=0, max_value=30),
)
async def test_download_small_ranges_are_exact(
    seeded: Gateway, stub: Any, offset: int, limit: int
) -> None:
    blob = b"0123456789"
    error = await outcome(download(stub, HEALTH_KEY, offset=offset, limit=limit))
    if offset > len(blob):
        assert error is not None
        assert_status(error, Code.OUT_OF_RANGE)
        return
    assert error is None, error
    got = await download(stub, HEALTH_KEY, offset=offset, limit=limit)
    start = offset if offset >= 0 else max(0, len(blob) + offset)
    expected = blob[start:]
    if limit:
        expected = expected[:limit]
    assert got.data == expected


# -- List page sizes and tokens -------------------------------------------------


async def test_bad_page_sizes(seeded: Gateway, stub: Any, channel: grpc.aio.Channel) -> None:
    for page_size in [-1, -(2**31), 1001, 2**31 - 1, 10_000]:
        request = storage_pb2.ListRequest(page_size=page_size)
        await expect(Code.INVALID_ARGUMENT, stub.List(request), page_size)
    await assert_healthy(channel, stub)


@FUZZ
@given(page_size=st.integers(min_value=-(2**31), max_value=2**31 - 1))
async def test_page_size_property(seeded: Gateway, stub: Any, page_size: int) -> None:
    error = await outcome(stub.List(storage_pb2.ListRequest(page_size=page_size)))
    if 0 <= page_size <= 1000:
        assert error is None
    else:
        assert error is not None
        assert_status(error, Code.INVALID_ARGUMENT)


@FUZZ
@given(
    prefix=st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
    delimiter=st.sampled_from(["", "/", "-", "\u00e9", "//", "\n", " "]),
)
async def test_hostile_prefix_and_delimiter(
    seeded: Gateway, stub: Any, prefix: str, delimiter: str
) -> None:
    """Any prefix lists fine (maybe empty) and only objects under it show,
    except a prefix with a NUL, which no key can have: INVALID_ARGUMENT."""
    request = storage_pb2.ListRequest(prefix=prefix, delimiter=delimiter)
    if "\x00" in prefix:
        await expect(Code.INVALID_ARGUMENT, stub.List(request, timeout=10), prefix)
        return
    listing = await stub.List(request, timeout=10)
    keys = [o.key for o in listing.objects]
    assert all(k.startswith(prefix) for k in keys)
    for common in listing.common_prefixes:
        assert common.startswith(prefix)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@FUZZ
@given(
    token=st.one_of(
        st.text(min_size=1, max_size=200),
        st.binary(min_size=1, max_size=200).map(_b64),
        st.binary(min_size=1, max_size=200).map(lambda b: base64.b64encode(b).decode()),
        st.dictionaries(st.text(max_size=3), st.text(max_size=10), max_size=5).map(
            lambda d: _b64(json.dumps(d).encode())
        ),
        st.sampled_from(["null", "[]", "1", '"t"', "{}", '{"v":1}']).map(
            lambda s: _b64(s.encode())
        ),
    )
)
async def test_forged_page_tokens(seeded: Gateway, stub: Any, token: str) -> None:
    await expect_status(
        Code.INVALID_ARGUMENT,
        stub.List(storage_pb2.ListRequest(prefix="healthy/", page_token=token)),
    )


def _token(bucket: str, prefix: str, delimiter: str, s3_token: Any, version: Any = 1) -> str:
    payload_ = {"v": version, "b": bucket, "p": prefix, "d": delimiter, "t": s3_token}
    return _b64(json.dumps(payload_).encode())


FOREIGN_TOKENS = {
    "foreign-bucket": ("other-bucket", "healthy/", "", "abc", 1),
    "foreign-prefix": (None, "elsewhere/", "", "abc", 1),
    "foreign-delimiter": (None, "healthy/", "/", "abc", 1),
    "empty-s3-token": (None, "healthy/", "", "", 1),
    "int-s3-token": (None, "healthy/", "", 5, 1),
    "null-s3-token": (None, "healthy/", "", None, 1),
    "version-2": (None, "healthy/", "", "abc", 2),
    "version-string": (None, "healthy/", "", "abc", "1"),
}


async def test_foreign_page_tokens(
    seeded: Gateway, stub: Any, channel: grpc.aio.Channel, bucket: str
) -> None:
    """Well-formed tokens that belong to another listing, or are subtly wrong.
    (None as the bucket means this test's own bucket.)"""
    for name, (token_bucket, prefix, delimiter, s3_token, version) in FOREIGN_TOKENS.items():
        token = _token(token_bucket or bucket, prefix, delimiter, s3_token, version)
        request = storage_pb2.ListRequest(prefix="healthy/", page_token=token)
        await expect(Code.INVALID_ARGUMENT, stub.List(request), name)
    await assert_healthy(channel, stub)


# -- Presign expiries ---------------------------------------------------------

SEVEN_DAYS = 7 * 24 * 3600


BAD_EXPIRIES = [
    (0, 0),
    (0, 1),
    (0, 999_999_999),
    (-1, 0),
    (-SEVEN_DAYS, 0),
    (SEVEN_DAYS + 1, 0),
    (SEVEN_DAYS, 1000),
    (10 * SEVEN_DAYS, 0),
    (-(2**31), 0),
    (2**31, 0),
    (SEVEN_DAYS, 1),  # one nanosecond over
    (10**15, 0),  # beyond any valid Duration, as a hostile client may send
    (2**62, 0),
    (-(10**15), 0),
    (315_576_000_000, 0),  # the largest valid Duration
    (-315_576_000_000, 0),
]


def _presign(seconds: int, nanos: int) -> storage_pb2.PresignRequest:
    return storage_pb2.PresignRequest(
        key=HEALTH_KEY,
        method=storage_pb2.HTTP_METHOD_GET,
        expires_in=Duration(seconds=seconds, nanos=nanos),
    )


async def test_bad_presign_expiries(seeded: Gateway, stub: Any, channel: grpc.aio.Channel) -> None:
    for seconds, nanos in BAD_EXPIRIES:
        request = _presign(seconds, nanos)
        await expect(Code.INVALID_ARGUMENT, stub.Presign(request), (seconds, nanos))
    await assert_healthy(channel, stub)


@pytest.mark.store("s3")  # presigns: only S3 can
async def test_presign_expiry_bounds_accepted(seeded: Gateway, stub: Any) -> None:
    for seconds, nanos in [(1, 0), (SEVEN_DAYS, 0), (900, 500_000_000)]:
        response = await stub.Presign(_presign(seconds, nanos))
        assert response.url, (seconds, nanos)


@pytest.mark.store("s3")  # presigns: only S3 can
@FUZZ
@given(
    seconds=st.integers(min_value=-315_576_000_000, max_value=315_576_000_000),
    nanos=st.integers(min_value=-999_999_999, max_value=999_999_999),
)
async def test_presign_expiry_property(
    seeded: Gateway, stub: Any, seconds: int, nanos: int
) -> None:
    # Keep seconds and nanos the same sign, as a valid Duration must.
    if seconds and nanos and (seconds > 0) != (nanos > 0):
        nanos = -nanos
    total_ns = seconds * 10**9 + nanos
    error = await outcome(stub.Presign(_presign(seconds, nanos)))
    if 10**9 <= total_ns <= SEVEN_DAYS * 10**9:
        assert error is None
    else:
        assert error is not None
        assert_status(error, Code.INVALID_ARGUMENT)


async def test_bad_presign_methods(seeded: Gateway, stub: Any) -> None:
    for method in [storage_pb2.HTTP_METHOD_UNSPECIFIED, 3, 2**31 - 1, -1]:
        request = storage_pb2.PresignRequest(key=HEALTH_KEY, method=method)  # type: ignore[arg-type]
        await expect(Code.INVALID_ARGUMENT, stub.Presign(request), method)


# -- Upload specs and streams -----------------------------------------------------

BAD_METADATA = [
    {"big": "v" * 2100},
    {f"k{i}": "v" * 100 for i in range(25)},
    {"": "value"},
    {"has space": "v"},
    {"colon:key": "v"},
    {"-leading": "v"},
    {"\u00e9t\u00e9": "v"},
    {"new\nline": "v"},
    {"trailing\n": "v"},
    {"key": "caf\u00e9"},
    {"key": "line\nbreak"},
    {"key": " "},  # S3 trims header values: it would come back empty
    {"key": "padded "},
    {"key": "nul\x00"},
    {"key": "\u2603"},
    {"sha256": "deadbeef"},
    {"SHA256": "deadbeef"},
    {"crc32c": "1"},
    {"Dup": "1", "dup": "2"},
]


async def test_bad_metadata(seeded: Gateway, stub: Any, channel: grpc.aio.Channel) -> None:
    for metadata in BAD_METADATA:
        upload_ = upload(seeded, "meta/obj", b"data", metadata=metadata)
        await expect(Code.INVALID_ARGUMENT, upload_, metadata)
        await expect(Code.NOT_FOUND, stub.Stat(storage_pb2.StatRequest(key="meta/obj")), metadata)
    await assert_healthy(channel, stub)


@FUZZ
@given(
    metadata=st.dictionaries(
        st.text(min_size=0, max_size=20), st.text(max_size=120), min_size=1, max_size=6
    )
)
async def test_metadata_property(seeded: Gateway, stub: Any, metadata: dict[str, str]) -> None:
    """Any metadata is either stored as given (keys lower-cased) or refused
    with INVALID_ARGUMENT; never anything else."""
    try:
        obj = await upload(seeded, "meta/prop", b"d", metadata=metadata)
    except grpc.RpcError as error:
        assert_status(error, Code.INVALID_ARGUMENT)
        return
    expected = {k.lower(): v for k, v in metadata.items()}
    stored = dict(obj.metadata)
    stored.pop("sha256", None)
    stored.pop("crc32c", None)
    assert stored == expected
    stat = (await stub.Stat(storage_pb2.StatRequest(key="meta/prop"))).object
    stat_meta = {k: v for k, v in stat.metadata.items() if k not in {"sha256", "crc32c"}}
    assert stat_meta == expected


async def test_data_before_spec(seeded: Gateway, stub: Any, channel: grpc.aio.Channel) -> None:
    await expect_status(
        Code.INVALID_ARGUMENT,
        upload_requests(seeded, [data(b"early"), spec("order/obj"), data(b"late")]),
    )
    await expect_status(Code.NOT_FOUND, stub.Stat(storage_pb2.StatRequest(key="order/obj")))
    await assert_healthy(channel, stub)


async def test_two_specs(seeded: Gateway, stub: Any, channel: grpc.aio.Channel) -> None:
    await expect_status(
        Code.INVALID_ARGUMENT,
        upload_requests(seeded, [spec("twice/obj"), data(b"a"), spec("twice/other"), data(b"b")]),
    )
    await expect_status(Code.NOT_FOUND, stub.Stat(storage_pb2.StatRequest(key="twice/obj")))
    await expect_status(Code.NOT_FOUND, stub.Stat(storage_pb2.StatRequest(key="twice/other")))
    await assert_healthy(channel, stub)


async def test_two_specs_back_to_back(
    seeded: Gateway, stub: Any, channel: grpc.aio.Channel
) -> None:
    await expect_status(
        Code.INVALID_ARGUMENT,
        upload_requests(seeded, [spec("twice/obj"), spec("twice/obj")]),
    )
    await expect_status(Code.NOT_FOUND, stub.Stat(storage_pb2.StatRequest(key="twice/obj")))
    await assert_healthy(channel, stub)


async def test_empty_stream(seeded: Gateway, stub: Any, channel: grpc.aio.Channel) -> None:
    await expect_status(Code.INVALID_ARGUMENT, upload_requests(seeded, []))
    await assert_healthy(channel, stub)


async def test_empty_request_message(seeded: Gateway, stub: Any, channel: grpc.aio.Channel) -> None:
    """An UploadRequest with neither spec nor data set."""
    await expect_status(
        Code.INVALID_ARGUMENT,
        upload_requests(seeded, [storage_pb2.UploadRequest()]),
    )
    await expect_status(
        Code.INVALID_ARGUMENT,
        upload_requests(seeded, [spec("empty/obj"), storage_pb2.UploadRequest(), data(b"x")]),
    )
    await assert_healthy(channel, stub)


async def test_message_over_the_size_limit(
    seeded: Gateway, stub: Any, channel: grpc.aio.Channel
) -> None:
    """The server's message limit is 8 MiB; one 9 MiB data message is refused."""
    await expect_status(
        Code.RESOURCE_EXHAUSTED,
        upload_requests(seeded, [spec("big/obj"), data(payload(9 * MiB))]),
    )
    await expect_status(Code.NOT_FOUND, stub.Stat(storage_pb2.StatRequest(key="big/obj")))
    await assert_healthy(channel, stub)


async def test_declared_size_hostile(seeded: Gateway, stub: Any, channel: grpc.aio.Channel) -> None:
    """A declared size that is negative, absurd, or just wrong: never a commit,
    never INTERNAL."""
    for size in [-1, -(2**63), 2**63 - 1, 0, 2]:
        try:
            await upload(seeded, "sized/obj", b"abc", size=size)
        except grpc.RpcError as error:
            assert error.code() in {
                Code.INVALID_ARGUMENT,
                Code.OUT_OF_RANGE,
                Code.RESOURCE_EXHAUSTED,
            }, f"size {size}: {error.code().name}: {error.details()!r}"
            assert_status(error, error.code())
        else:
            pytest.fail(f"declared size {size} for 3 bytes was accepted")
        await expect(Code.NOT_FOUND, stub.Stat(storage_pb2.StatRequest(key="sized/obj")), size)
    await assert_healthy(channel, stub)


async def test_bad_content_types(seeded: Gateway, stub: Any, channel: grpc.aio.Channel) -> None:
    bad = [
        "no-slash",
        "text/\u00e9",
        "text/plain\r\nX-Evil: 1",
        " /x",
        "a/b\x00",
        "text/plain\n",
        # Whitespace other than a space before the parameters: each used to
        # pass (the check allowed any \s), then break the HTTP header.
        "text/plain\r\n; charset=utf-8",
        "text/plain\n;x=1",
        "text/plain\u00a0;x=1",
        "text/plain\u2028;x=1",
        "text/plain\t;x=1",
        "text/" + "x" * 300,
    ]
    for content_type in bad:
        upload_ = upload(seeded, "ct/obj", b"x", content_type=content_type)
        await expect(Code.INVALID_ARGUMENT, upload_, content_type)
        put = storage_pb2.PresignRequest(
            key="ct/obj", method=storage_pb2.HTTP_METHOD_PUT, content_type=content_type
        )
        await expect(Code.INVALID_ARGUMENT, stub.Presign(put), content_type)
    await assert_healthy(channel, stub)


@pytest.mark.store("s3")  # the continuation token inside reaches S3
async def test_page_tokens_of_any_length_are_refused_quickly(
    seeded: Gateway, stub: Any, channel: grpc.aio.Channel
) -> None:
    """A 100 KB token used to end INTERNAL with a traceback in the log:
    well-formed ones (bound to this listing, holding a huge continuation
    token) and plain junk alike."""
    bucket = seeded.settings.default_bucket
    key = await _token_key(seeded)
    for size in [40_000, 100_000, 1_000_000]:
        for token in [page_token.encode(key, bucket, "healthy/", "", "t" * size), "A" * size]:
            request = storage_pb2.ListRequest(prefix="healthy/", page_token=token)
            error = await expect_status(Code.INVALID_ARGUMENT, stub.List(request))
            assert "page_token" in error.details(), size
    await assert_healthy(channel, stub)


async def _token_key(gateway: Gateway) -> bytes:
    """The key the gateway signs page tokens with (shared through the store)."""
    return await PageTokenKey(
        gateway.storage.backend.records, gateway.settings.default_bucket
    ).get()


@pytest.mark.store("s3")  # moto answers a forged continuation token 500, then retried
async def test_a_forged_continuation_token_is_refused_quickly_and_quietly(
    seeded: Gateway, stub: Any, channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 7: a forged S3 continuation token inside an otherwise
    well-formed page token (the real token's signature kept, or the old
    unsigned format) used to reach S3 and end UNAVAILABLE after 4 attempts
    and seconds; now INVALID_ARGUMENT before any S3 request, with no log
    line above INFO."""
    for index in range(3):
        await upload(seeded, f"paged/{index}", b"x")
    listing = storage_pb2.ListRequest(prefix="paged/", page_size=1)
    real = (await stub.List(listing, timeout=10)).next_page_token
    raw = base64.urlsafe_b64decode(real + "=" * (-len(real) % 4))
    signature, body = raw[:32], json.loads(raw[32:])
    forged = [
        _b64(signature + json.dumps({**body, "t": inner}, separators=(",", ":")).encode())
        for inner in ["abc", body["t"][:-2] + "AA", "x" * 300]
    ]
    forged.append(_b64(json.dumps({**body, "v": 1, "t": "abc"}).encode()))  # unsigned (v1)
    caplog.set_level(logging.INFO)
    for token in forged:
        started = time.monotonic()
        request = storage_pb2.ListRequest(prefix="paged/", page_size=1, page_token=token)
        error = await expect_status(Code.INVALID_ARGUMENT, stub.List(request, timeout=10))
        assert "not a token this service issued" in error.details()
        assert time.monotonic() - started < 1.0
    noisy = [record for record in caplog.records if record.levelno > logging.INFO]
    assert noisy == [], [record.getMessage() for record in noisy]
    assert not any("Traceback" in record.getMessage() for record in caplog.records)
    # The real token still continues the listing.
    request = storage_pb2.ListRequest(prefix="paged/", page_size=1, page_token=real)
    assert len((await stub.List(request, timeout=10)).objects) == 1
    await assert_healthy(channel, stub)


async def test_a_refused_bucket_is_not_told_which_exist(seeded: Gateway, stub: Any) -> None:
    """PERMISSION_DENIED says what was refused, never what is served."""
    error = await expect_status(
        Code.PERMISSION_DENIED, stub.Stat(storage_pb2.StatRequest(bucket="other-bkt", key="k"))
    )
    assert "other-bkt" in error.details()
    assert seeded.settings.default_bucket not in error.details()


async def test_bad_expected_sha256(seeded: Gateway, stub: Any, channel: grpc.aio.Channel) -> None:
    for sha in [b"short", b"\x00" * 31, b"\x00" * 33, b"\x00" * 32]:
        expected = storage_pb2.Checksums(sha256=sha)
        await expect(Code.INVALID_ARGUMENT, upload(seeded, "sum/obj", b"x", expected=expected), sha)
        await expect(Code.NOT_FOUND, stub.Stat(storage_pb2.StatRequest(key="sum/obj")), sha)
    await assert_healthy(channel, stub)


async def test_hostile_bucket_names(seeded: Gateway, stub: Any, channel: grpc.aio.Channel) -> None:
    for name in ["not-allowed", "../etc", "A" * 300, "\u00e9", " ", "\x00"]:
        denied = Code.PERMISSION_DENIED
        await expect(denied, stub.Stat(storage_pb2.StatRequest(bucket=name, key=HEALTH_KEY)), name)
        await expect(denied, stub.List(storage_pb2.ListRequest(bucket=name)), name)
        await expect(denied, upload(seeded, "b/obj", b"x", bucket=name), name)
    await assert_healthy(channel, stub)


async def test_headers_and_listing_bounds(
    seeded: Gateway, stub: Any, channel: grpc.aio.Channel
) -> None:
    """Values that would reach S3 as broken headers or URLs are refused up front."""
    for etag in ["\n", "\x00", "a\r\nX-Evil: 1", "has space"]:
        download_ = download(stub, HEALTH_KEY, if_match=etag, rpc_timeout=10)
        await expect(Code.INVALID_ARGUMENT, download_, etag)
        delete = stub.Delete(storage_pb2.DeleteRequest(key=HEALTH_KEY, if_match=etag))
        await expect(Code.INVALID_ARGUMENT, delete, etag)
    for prefix, delimiter in [("p" * 100_000, ""), ("", "\x00"), ("a", "a\x00"), ("\x00", "/")]:
        listing = stub.List(storage_pb2.ListRequest(prefix=prefix, delimiter=delimiter))
        await expect(Code.INVALID_ARGUMENT, listing, (prefix[:10], delimiter))
    await assert_healthy(channel, stub)


async def test_deleting_a_missing_key_is_ok_however_s3_says_so(seeded: Gateway, stub: Any) -> None:
    for key in ["never-written", "x\ny"]:  # moto answers the second with a 404
        await stub.Delete(storage_pb2.DeleteRequest(key=key), timeout=10)


# -- resumable upload sessions -----------------------------------------------

SESSION_REFUSALS = {Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.PERMISSION_DENIED}


@FUZZ
@given(
    upload_id=st.one_of(
        st.text(max_size=120),
        st.binary(max_size=90).map(_b64),
        st.tuples(st.text(max_size=20), st.text(max_size=50)).map(
            lambda parts: _b64(f"{parts[0]}/{parts[1]}".encode("utf-8", "surrogatepass"))
        ),
    ),
    offset=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
async def test_hostile_upload_ids_and_offsets(
    seeded: Gateway, stub: Any, upload_id: str, offset: int
) -> None:
    """Query, cancel and resume with forged ids: a clear refusal each."""
    query = storage_pb2.QueryUploadStatusRequest(upload_id=upload_id)
    cancel = storage_pb2.CancelResumableUploadRequest(upload_id=upload_id)
    for call in (stub.QueryUploadStatus(query), stub.CancelResumableUpload(cancel)):
        error = await outcome(call)
        assert error is not None and error.code() in SESSION_REFUSALS, upload_id
    resume = storage_pb2.UploadResume(upload_id=upload_id, write_offset=offset)
    requests = [storage_pb2.UploadRequest(resume=resume), data(b"x")]
    error = await outcome(upload_requests(seeded, requests))
    assert error is not None and error.code() in SESSION_REFUSALS, upload_id


async def test_resume_and_spec_in_one_stream(
    seeded: Gateway, stub: Any, channel: grpc.aio.Channel
) -> None:
    started = await stub.StartResumableUpload(
        storage_pb2.StartResumableUploadRequest(spec=storage_pb2.UploadSpec(key="mixed.bin"))
    )
    resume = storage_pb2.UploadResume(upload_id=started.upload_id, write_offset=0)
    for second in (spec("mixed.bin"), storage_pb2.UploadRequest(resume=resume)):
        requests = [storage_pb2.UploadRequest(resume=resume), data(b"abc"), second]
        await expect(Code.INVALID_ARGUMENT, upload_requests(seeded, requests), second)
    # The session is still there, and still empty.
    query = storage_pb2.QueryUploadStatusRequest(upload_id=started.upload_id)
    assert (await stub.QueryUploadStatus(query)).persisted_size == 0
    await assert_healthy(channel, stub)
