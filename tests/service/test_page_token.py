"""List page tokens are signed and bound to the listing they came from; the
signing key is shared by every instance through S3."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import grpc
import pytest

from blobgate.server.app import start_gateway
from blobgate.server.core.errors import InvalidArgument
from blobgate.server.rpc import page_token
from blobgate.server.rpc.page_token_key import KEY_BYTES, KEY_NAME, PageTokenKey
from blobgate.server.storage.factory import s3_config
from blobgate.server.storage.limits import ByteBudget
from blobgate.server.storage.s3.backend import S3Backend
from blobgate.v1 import storage_pb2 as pb
from blobgate.v1 import storage_pb2_grpc
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import upload

KEY = b"k" * 32


def test_round_trip() -> None:
    token = page_token.encode(KEY, "bkt", "a/", "/", "s3-continuation")
    assert token and "=" not in token
    assert page_token.decode(KEY, token, "bkt", "a/", "/") == "s3-continuation"


def test_last_page_and_first_page_are_empty() -> None:
    assert page_token.encode(KEY, "bkt", "", "", "") == ""
    assert page_token.decode(KEY, "", "bkt", "", "") == ""


@pytest.mark.parametrize("change", [("other", "a/", "/"), ("bkt", "b/", "/"), ("bkt", "a/", "")])
def test_foreign_token_is_refused(change: tuple[str, str, str]) -> None:
    token = page_token.encode(KEY, "bkt", "a/", "/", "s3")
    with pytest.raises(InvalidArgument, match="another listing"):
        page_token.decode(KEY, token, *change)


@pytest.mark.parametrize("forged", ["!!!", "bm90IGpzb24", "e30", "eyJ2IjoyfQ", "W10", "A" * 60])
def test_forged_token_is_refused(forged: str) -> None:
    with pytest.raises(InvalidArgument, match="page_token"):
        page_token.decode(KEY, forged, "bkt", "", "")


def _unpacked(token: str) -> tuple[bytes, dict[str, Any]]:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return raw[:32], json.loads(raw[32:])


def _packed(mac: bytes, body: dict[str, Any]) -> str:
    raw = mac + json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_changed_continuation_token_is_refused() -> None:
    """Finding 7: a well-formed token around a forged S3 continuation token
    never reaches S3."""
    token = page_token.encode(KEY, "bkt", "a/", "", "real-continuation")
    mac, body = _unpacked(token)
    forged = _packed(mac, {**body, "t": "forged-continuation"})
    with pytest.raises(InvalidArgument, match="not a token this service issued"):
        page_token.decode(KEY, forged, "bkt", "a/", "")
    # The same token under another key (another deployment) is refused too.
    with pytest.raises(InvalidArgument, match="not a token this service issued"):
        page_token.decode(b"x" * 32, token, "bkt", "a/", "")
    # So is the unsigned format of earlier versions.
    unsigned = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    with pytest.raises(InvalidArgument, match="not a token this service issued"):
        page_token.decode(KEY, unsigned, "bkt", "a/", "")


async def test_instances_starting_together_agree_on_one_key(
    moto_endpoint: str, bucket: str, s3: Any
) -> None:
    """Created once with if_none_match; the losers of the race read the winner's."""
    settings = gateway_settings(moto_endpoint, bucket)
    backends = [
        S3Backend(s3_config(settings), ByteBudget(int(settings.memory_budget))) for _ in range(4)
    ]
    for backend in backends:
        await backend.start()
    try:
        await backends[0].ensure_buckets([bucket])
        keys = await asyncio.gather(
            *(PageTokenKey(backend.records, bucket).get() for backend in backends)
        )
        stored = await (await s3.get_object(Bucket=bucket, Key=KEY_NAME))["Body"].read()
        assert len(stored) == KEY_BYTES
        assert keys == [stored] * len(backends)
    finally:
        for backend in backends:
            await backend.close()


async def test_a_listing_continues_on_another_instance(moto_endpoint: str, bucket: str) -> None:
    """Two gateways sharing a bucket accept each other's page tokens."""
    settings = gateway_settings(moto_endpoint, bucket)
    first, second = await start_gateway(settings), await start_gateway(settings)
    try:
        for index in range(5):
            await upload(first, f"p/{index}", b"x")
        seen: list[str] = []
        token = ""
        gateways = [first, second]
        for turn in range(5):
            gateway = gateways[turn % 2]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as ch:
                stub = storage_pb2_grpc.StorageServiceStub(ch)
                page = await stub.List(
                    pb.ListRequest(prefix="p/", page_size=1, page_token=token), timeout=10
                )
            seen += [entry.key for entry in page.objects]
            token = page.next_page_token
            if not token:
                break
        assert seen == [f"p/{index}" for index in range(5)]
    finally:
        await stop_gateway(first)
        await stop_gateway(second)
