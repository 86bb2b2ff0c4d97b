"""The in-memory backend: the in-memory stores and records behind the same
lifecycle as S3's, for tests and experiments (objects live as long as the
process)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from blobgate.server.core.lifecycle import PrefixRule
from blobgate.server.storage.memory.config import MemoryConfig
from blobgate.server.storage.memory.records import MemoryRecords
from blobgate.server.storage.memory.sessions import MemorySessions
from blobgate.server.storage.memory.store import MemoryStore


class MemoryBackend:
    """MemoryStore, MemorySessions and MemoryRecords over one state (a
    ``protocols.Backend``). Buckets exist once ``ensure_buckets`` made them
    (the create-buckets setting), as on S3."""

    def __init__(self, config: MemoryConfig) -> None:
        self.objects = MemoryStore(())
        self.sessions = MemorySessions(
            self.objects, part_size=config.part_size, expiry=config.session_expiry
        )
        self.records = MemoryRecords(self.objects)
        self._default_bucket = config.default_bucket

    @property
    def sweep_tally(self) -> Counter[str] | None:
        """None: a sweep aborts only expired sessions (no multipart uploads)."""
        return None

    def instrument(self, registry: CollectorRegistry) -> None:
        """Nothing to measure: no request leaves the process."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ensure_buckets(self, buckets: list[str]) -> None:
        for bucket in buckets:
            self.objects.create_bucket(bucket)

    async def reconcile_lifecycle(
        self, buckets: list[str], expiry_days: Sequence[int], rules: Sequence[PrefixRule]
    ) -> None:
        """Nothing: objects in memory keep their expiry tag but never expire."""

    async def check(self) -> None:
        self.objects.bucket(self._default_bucket)
