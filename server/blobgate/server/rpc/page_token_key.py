"""The key that signs List page tokens (``page_token``), shared by every
instance through the store: 32 random bytes at ``.blobgate/page-token-key``
in the default bucket, under the reserved prefix callers cannot reach.

The first instance that needs it and finds none creates it with
``if_none_match``, so instances starting together agree: the losers of that
race are refused the write and read the winner's key. Every instance then
reads the stored key again and uses only what the store holds. An instance
reads it once, at the first List that needs a page token (not at start-up,
so an instance started while S3 is down still starts; a one-page listing
never needs it), and keeps it. To rotate it, delete the
object and restart every instance: listings under way then end
INVALID_ARGUMENT and start over.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator

from blobgate.server.core.errors import FailedPrecondition, NotFound, ServiceError, Unavailable
from blobgate.server.storage.protocols import (
    RESERVED_PREFIX,
    ByteRange,
    Chunk,
    ObjectRef,
    ObjectStore,
    PutOptions,
)

log = logging.getLogger(__name__)

KEY_NAME = f"{RESERVED_PREFIX}page-token-key"
KEY_BYTES = 32


class PageTokenKey:
    """The page-token key of ``bucket`` in ``store`` (the backend's own
    store, beneath every decorator: reading the key is not a caller's act)."""

    def __init__(self, store: ObjectStore, bucket: str) -> None:
        self._store = store
        self._ref = ObjectRef(bucket, KEY_NAME)
        self._key: bytes | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> bytes:
        """The key, read (or created) at the first call; store errors
        propagate and the next call tries again."""
        if self._key is None:
            async with self._lock:
                if self._key is None:
                    self._key = await self._load()
        return self._key

    async def _load(self) -> bytes:
        try:
            return await self._read()
        except NotFound:
            pass
        try:
            await self._store.put(
                self._ref,
                _one(secrets.token_bytes(KEY_BYTES)),
                PutOptions("application/octet-stream", {}, if_none_match=True),
            )
            log.info("created the page-token key %s in bucket %r", KEY_NAME, self._ref.bucket)
        except FailedPrecondition:
            pass  # another instance created it first
        try:
            return await self._read()  # what the store holds, whoever wrote it
        except NotFound:
            raise Unavailable("the page-token key vanished as it was created; retry") from None

    async def _read(self) -> bytes:
        reader = await self._store.open(self._ref, ByteRange(), "")
        try:
            key = b"".join([piece async for pieces in reader.chunks(64 * 1024) for piece in pieces])
        finally:
            await reader.close()
        if len(key) != KEY_BYTES:
            raise ServiceError(
                f"the page-token key {KEY_NAME} in bucket {self._ref.bucket!r} is not "
                f"{KEY_BYTES} bytes: delete it and restart the instances"
            )
        return key


async def _one(data: bytes) -> AsyncIterator[Chunk]:
    yield data
