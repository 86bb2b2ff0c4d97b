"""Presign: URLs a plain HTTP client can use, their expiry, and signing for
a public endpoint.

moto does not check presigned signatures or expiry, so those are checked by
reading the URL's query, not by expecting moto to refuse a URL."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import gateway_settings
from google.protobuf.duration_pb2 import Duration
from helpers import Code, expect_status, http, payload, running_gateway, upload

from blobgate.v1 import storage_pb2

GET = storage_pb2.HTTP_METHOD_GET
PUT = storage_pb2.HTTP_METHOD_PUT
DAY = 24 * 3600


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


async def test_public_endpoint_signs_for_the_public_host(moto_endpoint: str, bucket: str) -> None:
    settings = gateway_settings(
        moto_endpoint, bucket, s3_public_endpoint="http://public.example:9000"
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
