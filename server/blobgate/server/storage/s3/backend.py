"""The S3 backend: one connection shared by the object store, the sessions
and the janitor."""

from __future__ import annotations

from collections.abc import Mapping

from blobgate.server.core.settings import Settings
from blobgate.server.storage.limits import ByteBudget
from blobgate.server.storage.s3.connection import S3Connection
from blobgate.server.storage.s3.sessions import S3Sessions
from blobgate.server.storage.s3.store import S3Store


class S3Backend:
    """The S3 stores and their connection's lifecycle."""

    def __init__(
        self, settings: Settings, budget: ByteBudget, credentials: Mapping[str, str] | None = None
    ) -> None:
        self.connection = S3Connection(settings, credentials)
        self.objects = S3Store(self.connection, budget)
        self.sessions = S3Sessions(self.connection, budget)

    async def start(self) -> None:
        await self.connection.start()

    async def close(self) -> None:
        await self.connection.close()

    async def ensure_buckets(self, buckets: list[str]) -> None:
        await self.connection.ensure_buckets(buckets)

    async def check(self) -> None:
        await self.connection.check()
