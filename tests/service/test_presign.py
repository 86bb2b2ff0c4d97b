"""Presign: URLs a plain HTTP client can use, their expiry, and signing for
a public endpoint; on moto and on LocalStack.

moto checks neither presigned signatures nor expiry, so on both S3s these
are checked by reading the URL's query; LocalStack's S3 checks both, as AWS
does, and refuses a URL that was changed after signing or has expired."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.error
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from google.protobuf.duration_pb2 import Duration

from blobgate.v1 import storage_pb2
from tests.support.gateways import gateway_settings
from tests.support.helpers import Code, expect_status, http, payload, running_gateway, upload

GET = storage_pb2.HTTP_METHOD_GET
PUT = storage_pb2.HTTP_METHOD_PUT
DAY = 24 * 3600

pytestmark = pytest.mark.both_s3s


@pytest.fixture(params=[GET, PUT], ids=["GET", "PUT"])
def method(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def _query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def _presign(stub: Any, key: str, method: int, **fields: Any) -> Any:
    return stub.Presign(storage_pb2.PresignRequest(key=key, method=method, **fields), timeout=10)


async def test_presigned_get_serves_the_bytes(gateway: Any, stub: Any) -> None:
    blob = payload(2048, seed=5)
    await upload(gateway, "shared/file.bin", blob)
    before = time.time()
    response = await _presign(stub, "shared/file.bin", GET, expires_in=Duration(seconds=120))
    assert response.method == GET
    assert abs(response.expires_at.ToSeconds() - (before + 120)) <= 5
    assert _query(response.url)["X-Amz-Expires"] == "120"

    status, body = await asyncio.to_thread(
        http, "GET", response.url, headers=dict(response.headers)
    )
    assert status == 200
    assert body == blob


async def test_presigned_put_stores_the_bytes(stub: Any, s3: Any, bucket: str) -> None:
    response = await _presign(stub, "incoming/note.txt", PUT, content_type="text/plain")
    assert response.method == PUT
    headers = {name.lower(): value for name, value in response.headers.items()}
    assert headers.get("content-type") == "text/plain"
    signed = _query(response.url)["X-Amz-SignedHeaders"].split(";")
    assert "content-type" in signed

    blob = b"uploaded with a presigned URL"
    status, _ = await asyncio.to_thread(
        http, "PUT", response.url, body=blob, headers=dict(response.headers)
    )
    assert status == 200

    stat = (await stub.Stat(storage_pb2.StatRequest(key="incoming/note.txt"), timeout=10)).object
    assert stat.size == len(blob)
    assert stat.content_type == "text/plain"
    stored = await s3.get_object(Bucket=bucket, Key="incoming/note.txt")
    assert await stored["Body"].read() == blob


async def test_default_expiry_is_15_minutes(stub: Any) -> None:
    before = time.time()
    response = await _presign(stub, "any.bin", GET)
    assert _query(response.url)["X-Amz-Expires"] == "900"
    assert abs(response.expires_at.ToSeconds() - (before + 900)) <= 5


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(1, 0), (7 * DAY, 0)],
    ids=["one-second", "seven-days"],
)
async def test_expiry_bounds_accepted(stub: Any, seconds: int, nanos: int) -> None:
    before = time.time()
    response = await _presign(
        stub, "any.bin", GET, expires_in=Duration(seconds=seconds, nanos=nanos)
    )
    assert _query(response.url)["X-Amz-Expires"] == str(seconds)
    assert abs(response.expires_at.ToSeconds() - (before + seconds)) <= 5


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(0, 0), (-60, 0), (0, 500_000_000), (8 * DAY, 0), (7 * DAY + 1, 0)],
    ids=["zero", "negative", "half-second", "eight-days", "seven-days-plus-one"],
)
async def test_expiry_out_of_bounds(stub: Any, method: int, seconds: int, nanos: int) -> None:
    await expect_status(
        Code.INVALID_ARGUMENT,
        _presign(stub, "any.bin", method, expires_in=Duration(seconds=seconds, nanos=nanos)),
    )


async def test_unspecified_method(stub: Any) -> None:
    await expect_status(
        Code.INVALID_ARGUMENT, _presign(stub, "any.bin", storage_pb2.HTTP_METHOD_UNSPECIFIED)
    )


async def test_public_endpoint_signs_for_the_public_host(s3_endpoint: str, bucket: str) -> None:
    settings = gateway_settings(
        s3_endpoint, bucket, s3_public_endpoint="http://public.example:9000"
    )
    async with running_gateway(settings) as (_gw, stub, _channel):
        for method, fields in [(GET, {}), (PUT, {"content_type": "image/png"})]:
            response = await _presign(stub, "pic.png", method, **fields)
            url = urlsplit(response.url)
            assert url.scheme == "http"
            assert url.port == 9000
            # Path-style (public.example) or virtual-hosted (<bucket>.public.example).
            assert url.hostname in ("public.example", f"{bucket}.public.example"), url.netloc
            assert bucket in url.hostname + url.path
            query = _query(response.url)
            assert "host" in query["X-Amz-SignedHeaders"].split(";")
            assert len(query["X-Amz-Signature"]) == 64
            assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
            assert "X-Amz-Credential" in query


# --- LocalStack alone: signatures and expiry really checked --------------------


def _with_query(url: str, name: str, value: str) -> str:
    """``url`` with one query parameter changed (the rest as signed)."""
    parts = urlsplit(url)
    query = _query(url) | {name: value}
    return parts._replace(query=urlencode(query)).geturl()


async def _refused(method: str, url: str, headers: Any, body: bytes | None = None) -> str:
    """S3's error code for a request it must refuse with 403."""
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(http, method, url, body, dict(headers))
    assert refused.value.code == 403
    found = re.search(rb"<Code>([^<]+)</Code>", refused.value.read())
    assert found is not None
    return found.group(1).decode()


async def test_a_changed_or_expired_url_is_refused(localstack_endpoint: str, bucket: str) -> None:
    """A presigned URL grants exactly what was signed, until it expires:
    another key, a longer life, another signature, another content type or
    a late request are refused (moto would serve them all)."""
    settings = gateway_settings(localstack_endpoint, bucket)
    async with running_gateway(settings) as (gw, stub, _):
        blob = payload(1000, seed=7)
        await upload(gw, "signed.bin", blob)
        await upload(gw, "other.bin", b"not shared")
        get = await _presign(stub, "signed.bin", GET, expires_in=Duration(seconds=120))
        assert await asyncio.to_thread(http, "GET", get.url, None, dict(get.headers)) == (200, blob)
        signature = _query(get.url)["X-Amz-Signature"]
        changed = [
            get.url.replace("/signed.bin?", "/other.bin?"),
            _with_query(get.url, "X-Amz-Expires", str(7 * DAY)),
            _with_query(get.url, "X-Amz-Signature", signature[::-1]),
        ]
        for url in changed:
            assert await _refused("GET", url, get.headers) == "SignatureDoesNotMatch", url

        put = await _presign(stub, "incoming.txt", PUT, content_type="text/plain")
        headers = dict(put.headers) | {"Content-Type": "text/html"}
        assert await _refused("PUT", put.url, headers, b"<script>") == "SignatureDoesNotMatch"
        await expect_status(
            Code.NOT_FOUND, stub.Stat(storage_pb2.StatRequest(key="incoming.txt"), timeout=10)
        )

        short = await _presign(stub, "signed.bin", GET, expires_in=Duration(seconds=1))
        assert await asyncio.to_thread(http, "GET", short.url, None, dict(short.headers)) == (
            200,
            blob,
        )
        await asyncio.sleep(2.5)  # S3 dates a URL to the second
        assert await _refused("GET", short.url, short.headers) == "AccessDenied"
