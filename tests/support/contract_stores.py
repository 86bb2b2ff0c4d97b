"""The stores the storage contract suites run against
(tests/storage/test_store_contract.py, test_session_contract.py and
test_records_contract.py, through the ``stores`` fixture of
tests/storage/conftest.py), and their helpers: the in-memory stores, or the
S3 stores on the test's S3 (moto's or LocalStack's: the suites are marked
``both_s3s(memory=True)``), each with the test's bucket."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import google_crc32c
import pytest

from blobgate.server.storage.factory import s3_config
from blobgate.server.storage.limits import ByteBudget
from blobgate.server.storage.memory.records import MemoryRecords
from blobgate.server.storage.memory.sessions import MemorySessions
from blobgate.server.storage.memory.store import MemoryStore
from blobgate.server.storage.protocols import (
    ByteRange,
    Chunk,
    ContentChecksums,
    ObjectRef,
    ObjectStore,
    PutOptions,
    SessionStore,
    StoredObject,
)
from blobgate.server.storage.records import Records
from blobgate.server.storage.s3.connection import S3Connection
from blobgate.server.storage.s3.records import S3Records
from blobgate.server.storage.s3.sessions import S3Sessions
from blobgate.server.storage.s3.store import S3Store
from tests.support.gateways import gateway_settings
from tests.support.helpers import RANGED_BLOB, RANGED_SIZE, MiB

PART = 5 * MiB  # the smallest part S3 takes: sessions persist in these
SIZE = RANGED_SIZE
BLOB = RANGED_BLOB


@dataclass
class Stores:
    """The stores under test, the bucket they write to, a way to get
    sessions over the same store with another idle expiry, and the
    gateway's own records in the same store."""

    kind: str
    objects: ObjectStore
    sessions: SessionStore
    bucket: str
    with_expiry: Callable[[float], Awaitable[SessionStore]]
    records: Records

    def ref(self, key: str) -> ObjectRef:
        return ObjectRef(self.bucket, key)


@asynccontextmanager
async def open_stores(
    request: pytest.FixtureRequest, store_kind: str, bucket: str
) -> AsyncIterator[Stores]:
    """The stores of ``store_kind``, with ``bucket`` created."""
    if store_kind == "memory":
        store = MemoryStore([bucket])

        async def memory_sessions(expiry: float) -> SessionStore:
            return MemorySessions(store, part_size=PART, expiry=expiry)

        sessions = await memory_sessions(7 * 86400.0)
        records = MemoryRecords(store)
        yield Stores("memory", store, sessions, bucket, memory_sessions, records)
        return
    endpoint: str = request.getfixturevalue("s3_endpoint")
    settings = gateway_settings(endpoint, bucket)
    budget = ByteBudget(int(settings.memory_budget))
    connections = [S3Connection(s3_config(settings))]

    async def s3_sessions(expiry: float) -> SessionStore:
        # The expiry is a setting of the connection the sessions use.
        connections.append(
            S3Connection(s3_config(gateway_settings(endpoint, bucket, session_expiry=expiry)))
        )
        await connections[-1].start()
        return S3Sessions(connections[-1], budget)

    try:
        await connections[0].start()
        await connections[0].ensure_buckets([bucket])
        objects = S3Store(connections[0], budget)
        sessions = S3Sessions(connections[0], budget)
        records = S3Records(connections[0])
        yield Stores("s3", objects, sessions, bucket, s3_sessions, records)
    finally:
        for connection in reversed(connections):
            await connection.close()


class Boom(Exception):
    """A body that broke midway, as the stream of a client that vanished."""


async def body(*pieces: bytes) -> AsyncIterator[Chunk]:
    """``pieces`` as an upload's body delivers them: views of received bytes."""
    for piece in pieces:
        await asyncio.sleep(0)
        yield memoryview(piece)


async def broken(*pieces: bytes) -> AsyncIterator[Chunk]:
    """``pieces``, then a failure instead of the end."""
    async for piece in body(*pieces):
        yield piece
    raise Boom("the stream broke")


class Gate:
    """A body whose pieces wait their turn: ``open(n)`` lets ``n`` more through."""

    def __init__(self, *pieces: bytes) -> None:
        self._pieces = pieces
        self._allowed = 0
        self._changed = asyncio.Condition()

    async def open(self, count: int = 1) -> None:
        async with self._changed:
            self._allowed += count
            self._changed.notify_all()

    def _may_send(self, index: int) -> bool:
        return index < self._allowed

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        for index, piece in enumerate(self._pieces):
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._may_send, index))
            yield piece


def options(**fields: Any) -> PutOptions:
    fields.setdefault("content_type", "application/octet-stream")
    fields.setdefault("metadata", {})
    return PutOptions(**fields)


async def put(stores: Stores, key: str, data: bytes, **fields: Any) -> StoredObject:
    return await stores.objects.put(stores.ref(key), body(data), options(**fields))


async def read(
    stores: Stores, key: str, offset: int = 0, limit: int = 0, if_match: str = "", chunk: int = 256
) -> bytes:
    """The bytes a ranged read returns, in chunks of at most ``chunk`` bytes."""
    reader = await stores.objects.open(stores.ref(key), ByteRange(offset, limit), if_match)
    try:
        out = bytearray()
        async for pieces in reader.chunks(chunk):
            joined = b"".join(pieces)
            assert 0 < len(joined) <= chunk
            out += joined
        return bytes(out)
    finally:
        await reader.close()


async def keys(stores: Stores, prefix: str = "") -> list[str]:
    page = await stores.objects.list_page(stores.bucket, prefix, "", 1000, "")
    return [o.key for o in page.objects]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def sums(data: bytes) -> ContentChecksums:
    return ContentChecksums(sha256=hashlib.sha256(data).digest(), crc32c=google_crc32c.value(data))


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    """Wait until ``check`` holds (S3 persists a session's parts in the background)."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "the condition never held"
        await asyncio.sleep(0.05)
