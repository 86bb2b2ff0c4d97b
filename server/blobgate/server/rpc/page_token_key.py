"""The key that signs List page tokens (``page_token``), shared by every
instance through the store as one of the backend's own records
(``storage.protocols.Records``): 32 random bytes at
``.blobgate/page-token-key`` in the default bucket, under the reserved
prefix callers cannot reach.

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

from blobgate.server.core.errors import FailedPrecondition, NotFound, ServiceError, Unavailable
from blobgate.server.storage.protocols import RESERVED_PREFIX
from blobgate.server.storage.records import Records

log = logging.getLogger(__name__)

KEY_NAME = f"{RESERVED_PREFIX}page-token-key"
KEY_BYTES = 32


class PageTokenKey:
    """The page-token key of ``bucket`` among the backend's ``records``
    (beneath every decorator: reading the key is not a caller's act)."""

    def __init__(self, records: Records, bucket: str) -> None:
        self._records = records
        self._bucket = bucket
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
            await self._records.put(
                self._bucket, KEY_NAME, secrets.token_bytes(KEY_BYTES), if_none_match=True
            )
            log.info("created the page-token key %s in bucket %r", KEY_NAME, self._bucket)
        except FailedPrecondition:
            pass  # another instance created it first
        try:
            return await self._read()  # what the store holds, whoever wrote it
        except NotFound:
            raise Unavailable("the page-token key vanished as it was created; retry") from None

    async def _read(self) -> bytes:
        key = await self._records.get(self._bucket, KEY_NAME)
        if len(key) != KEY_BYTES:
            raise ServiceError(
                f"the page-token key {KEY_NAME} in bucket {self._bucket!r} is not "
                f"{KEY_BYTES} bytes: delete it and restart the instances"
            )
        return key
