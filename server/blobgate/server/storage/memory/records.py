"""The gateway's own records in process memory (``protocols.Records``: quota
markers, the page-token key): objects of the ``MemoryStore``, which its
listings hide as S3's do."""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator

from blobgate.server.storage.memory.store import MemoryStore
from blobgate.server.storage.protocols import (
    ByteRange,
    Chunk,
    PutOptions,
)
from blobgate.server.storage.records import RecordEntry, record_ref


class MemoryRecords:
    """Records as objects of a MemoryStore."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def put(
        self, bucket: str, key: str, data: bytes, *, if_none_match: bool = False, if_match: str = ""
    ) -> str:
        options = PutOptions(
            "application/octet-stream", {}, if_none_match=if_none_match, if_match=if_match
        )
        stored = await self._store.put(record_ref(bucket, key), _one(data), options)
        return stored.etag

    async def get(self, bucket: str, key: str) -> bytes:
        reader = await self._store.open(record_ref(bucket, key), ByteRange(), "")
        try:
            return b"".join(
                [piece async for pieces in reader.chunks(64 * 1024) for piece in pieces]
            )
        finally:
            await reader.close()

    async def delete(self, bucket: str, key: str, *, if_match: str = "") -> None:
        await self._store.delete(record_ref(bucket, key), if_match)

    async def list(self, bucket: str, prefix: str, limit: int) -> list[RecordEntry]:
        record_ref(bucket, prefix)
        state = self._store.bucket(bucket)
        found: list[RecordEntry] = []
        for key in state.keys[bisect.bisect_left(state.keys, prefix) :]:  # sorted
            if not key.startswith(prefix) or len(found) == limit:
                break
            info = state.objects[key].info
            assert info.last_modified is not None
            found.append(RecordEntry(key, info.last_modified, info.etag))
        return found


async def _one(data: bytes) -> AsyncIterator[Chunk]:
    yield data
