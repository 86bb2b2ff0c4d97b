"""The S3 backend: one connection shared by the object store, the sessions,
the janitor and the gateway's own records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry

from blobgate.server.core.lifecycle import PrefixRule
from blobgate.server.storage.limits import ByteBudget
from blobgate.server.storage.s3.config import S3Config
from blobgate.server.storage.s3.connection import S3Connection
from blobgate.server.storage.s3.instrumentation import S3Instrumentation
from blobgate.server.storage.s3.lifecycle import owned_rules, reconcile
from blobgate.server.storage.s3.records import S3Records
from blobgate.server.storage.s3.sessions import S3Sessions
from blobgate.server.storage.s3.store import S3Store


class S3Backend:
    """The S3 stores, records and their connection's lifecycle (a
    ``protocols.Backend``)."""

    def __init__(
        self, config: S3Config, budget: ByteBudget, credentials: Mapping[str, str] | None = None
    ) -> None:
        self.connection = S3Connection(config, credentials)
        self.objects = S3Store(self.connection, budget)
        self.sessions = S3Sessions(self.connection, budget)
        self.records = S3Records(self.connection)

    @property
    def sweep_tally(self) -> Counter[str]:
        """What the janitor aborted, by kind (kept by the sessions)."""
        return self.sessions.swept

    def instrument(self, registry: CollectorRegistry) -> None:
        """Every S3 request measured into ``registry``, and a span when
        traces are on (``instrumentation``)."""
        self.connection.instrumentation = S3Instrumentation(registry)

    async def start(self) -> None:
        await self.connection.start()

    async def close(self) -> None:
        await self.connection.close()

    async def ensure_buckets(self, buckets: list[str]) -> None:
        await self.connection.ensure_buckets(buckets)

    async def reconcile_lifecycle(
        self, buckets: list[str], expiry_days: Sequence[int], rules: Sequence[PrefixRule]
    ) -> None:
        for bucket in buckets:
            wanted = owned_rules(bucket, expiry_days, rules)
            await reconcile(self.connection.client, bucket, wanted)

    async def check(self) -> None:
        await self.connection.check()
