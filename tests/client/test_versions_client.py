"""The Python clients' versions, async and blocking, against a gateway on a
versioned bucket (bucket_versioning) on moto's S3: version ids on writes,
reads of an old version (Stat, downloads, a presigned GET), delete markers,
restore, removing a version, and the versions listing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from blobgate.client import BlobgateError, Client, Deleted, SyncClient
from blobgate.server.app import Gateway, start_gateway
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import http


@pytest.fixture
async def versioned(s3_endpoint: str, bucket: str) -> AsyncIterator[Gateway]:
    gateway = await start_gateway(gateway_settings(s3_endpoint, bucket, bucket_versioning=True))
    yield gateway
    await stop_gateway(gateway)


async def test_async_client_versions(versioned: Gateway, tmp_path: Path) -> None:
    async with Client(f"127.0.0.1:{versioned.port}") as blobs:
        first = await blobs.upload("a.txt", b"first")
        second = await blobs.upload("a.txt", b"second!")
        assert first.version_id and first.version_id != second.version_id
        assert (await blobs.stat("a.txt", version_id=first.version_id)).size == 5
        old = b"".join([c async for c in blobs.download("a.txt", version_id=first.version_id)])
        assert old == b"first"
        info = await blobs.download_to("a.txt", tmp_path / "a", version_id=first.version_id)
        assert (tmp_path / "a").read_bytes() == b"first" and info.version_id == first.version_id
        url = await blobs.presign("a.txt", version_id=first.version_id)
        assert await asyncio.to_thread(http, "GET", url.url) == (200, b"first")

        marker = await blobs.delete("a.txt")
        assert isinstance(marker, Deleted) and marker.delete_marker and marker.version_id
        with pytest.raises(BlobgateError) as missing:
            await blobs.stat("a.txt")
        assert missing.value.code == grpc.StatusCode.NOT_FOUND
        restored = await blobs.restore("a.txt", first.version_id)
        assert restored.sha256 == first.sha256 and restored.version_id
        listed = [o async for o in blobs.list(versions=True, page_size=1)]
        assert {o.version_id for o in listed} == {
            first.version_id,
            second.version_id,
            marker.version_id,
            restored.version_id,
        }
        assert [o.version_id for o in listed if o.is_latest] == [restored.version_id]
        assert [o.version_id for o in listed if o.is_delete_marker] == [marker.version_id]

        purged = await blobs.delete("a.txt", version_id=second.version_id)
        assert purged == Deleted(second.version_id, False)
        results = await blobs.batch_delete(["a.txt"], version_ids={"a.txt": marker.version_id})
        assert [r.deleted for r in results] == [True]
        left = {o.version_id async for o in blobs.list(versions=True)}
        assert left == {first.version_id, restored.version_id}


async def test_sync_client_versions(versioned: Gateway) -> None:
    # Blocking calls in a worker thread: the gateway runs in this test's loop.
    await asyncio.to_thread(_sync_round_trip, f"127.0.0.1:{versioned.port}")


def _sync_round_trip(address: str) -> None:
    with SyncClient(address) as blobs:
        first = blobs.upload("b.txt", b"one")
        blobs.upload("b.txt", b"two")
        assert b"".join(blobs.download("b.txt", version_id=first.version_id)) == b"one"
        assert blobs.stat("b.txt", version_id=first.version_id).version_id == first.version_id
        assert blobs.restore("b.txt", first.version_id).size == 3
        assert b"".join(blobs.download("b.txt")) == b"one"
        assert len(list(blobs.list("b.txt", versions=True))) == 3
        assert blobs.delete("b.txt", version_id=first.version_id).version_id == first.version_id
