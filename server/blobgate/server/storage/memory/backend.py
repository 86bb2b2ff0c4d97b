"""The in-memory backend: the in-memory stores behind the same lifecycle as
S3's, for tests and experiments (objects live as long as the process)."""

from __future__ import annotations

from blobgate.server.core.settings import Settings
from blobgate.server.storage.memory.sessions import MemorySessions
from blobgate.server.storage.memory.store import MemoryStore


class MemoryBackend:
    """MemoryStore and MemorySessions over one state. Buckets exist once
    ``ensure_buckets`` made them (the create-buckets setting), as on S3."""

    def __init__(self, settings: Settings) -> None:
        self.objects = MemoryStore(())
        self.sessions = MemorySessions(
            self.objects, part_size=int(settings.part_size), expiry=settings.session_expiry
        )
        self._default_bucket = settings.default_bucket

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ensure_buckets(self, buckets: list[str]) -> None:
        for bucket in buckets:
            self.objects.create_bucket(bucket)

    async def check(self) -> None:
        self.objects.bucket(self._default_bucket)
