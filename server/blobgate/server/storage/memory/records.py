"""The gateway's own records in process memory (``protocols.Records``: quota
markers, the page-token key): objects of the ``MemoryStore``, which its
listings hide as S3's do."""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator
from datetime import datetime

from blobgate.server.storage.memory.store import MemoryStore
from blobgate.server.storage.protocols import ByteRange, Chunk, PutOptions, record_ref


class MemoryRecords:
    """Records as objects of a MemoryStore."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def put(self, bucket: str, key: str, data: bytes, *, if_none_match: bool = False) -> None:
        options = PutOptions("application/octet-stream", {}, if_none_match=if_none_match)
        await self._store.put(record_ref(bucket, key), _one(data), options)

    async def get(self, bucket: str, key: str) -> bytes:
        reader = await self._store.open(record_ref(bucket, key), ByteRange(), "")
        try:
            return b"".join(
                [piece async for pieces in reader.chunks(64 * 1024) for piece in pieces]
            )
        finally:
            await reader.close()

    async def delete(self, bucket: str, key: str) -> None:
        await self._store.delete(record_ref(bucket, key), "")

    async def list(self, bucket: str, prefix: str, limit: int) -> list[tuple[str, datetime]]:
        record_ref(bucket, prefix)
        state = self._store.bucket(bucket)
        found: list[tuple[str, datetime]] = []
        for key in state.keys[bisect.bisect_left(state.keys, prefix) :]:  # sorted
            if not key.startswith(prefix) or len(found) == limit:
                break
            last_modified = state.objects[key].info.last_modified
            assert last_modified is not None
            found.append((key, last_modified))
        return found


async def _one(data: bytes) -> AsyncIterator[Chunk]:
    yield data
