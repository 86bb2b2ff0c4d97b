"""The Python clients' tags, storage classes and lifetimes against a real
gateway (in-memory store): upload, stat(include_tags), set_tags and copy,
async and sync."""

from __future__ import annotations

import asyncio

import pytest

from blobgate.client import BlobgateError, Client, SyncClient
from blobgate.server.app import Gateway
from blobgate.server.core.tags import EXPIRY_TAG

pytestmark = pytest.mark.store("memory")


async def test_async_client(gateway: Gateway) -> None:
    async with Client(f"127.0.0.1:{gateway.port}") as client:
        put = await client.upload(
            "a.txt", b"hi", tags={"team": "x"}, storage_class="STANDARD_IA", expire_days=7
        )
        assert put.storage_class == "STANDARD_IA" and put.tags == {}
        info = await client.stat("a.txt", include_tags=True)
        assert info.tags == {"team": "x", EXPIRY_TAG: "7"} and info.expires_at is None
        assert (await client.stat("a.txt")).tags == {}
        tagged = await client.set_tags("a.txt", {"team": "y"}, if_match=put.etag)
        assert tagged.tags == {"team": "y", EXPIRY_TAG: "7"}
        await client.copy("a.txt", "b.txt", replace_tags=True, tags={"c": "1"}, expire_days=1)
        assert (await client.stat("b.txt", include_tags=True)).tags == {"c": "1", EXPIRY_TAG: "1"}
        with pytest.raises(BlobgateError) as refused:
            await client.set_tags("a.txt", {"aws:x": "1"})
        assert refused.value.code.name == "INVALID_ARGUMENT"


async def test_sync_client(gateway: Gateway) -> None:
    def run() -> dict[str, str]:
        with SyncClient(f"127.0.0.1:{gateway.port}") as client:
            client.upload("s.txt", b"x", tags={"k": "v"})
            client.set_tags("s.txt", {"k": "w"})
            return client.stat("s.txt", include_tags=True).tags

    assert await asyncio.to_thread(run) == {"k": "w"}
