"""The storage stack built from settings: a backend's stores wrapped in the
decorators for cross-cutting concerns, outermost first as calls meet them.

    StreamLimitedStore -> S3Store            (ObjectStore)
    StreamLimitedSessions -> S3Sessions      (SessionStore)

With metrics on, MeteredStore and MeteredSessions (storage.metrics) go
outermost; with metrics or traces on, every S3 request is measured and
traced (storage.s3.instrumentation).
Authorization and tracing decorators go here as they are added.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry

from blobgate.server.settings import Settings
from blobgate.server.storage.limits import (
    ByteBudget,
    StreamLimit,
    StreamLimitedSessions,
    StreamLimitedStore,
)
from blobgate.server.storage.metrics import (
    MeteredSessions,
    MeteredStore,
    StorageMetrics,
    watch_limits,
)
from blobgate.server.storage.protocols import ObjectStore, SessionStore
from blobgate.server.storage.s3.backend import S3Backend
from blobgate.server.storage.s3.instrumentation import S3Instrumentation
from blobgate.server.tracing import tracing_on


class Backend(Protocol):
    """A storage implementation: its two stores and their lifecycle."""

    @property
    def objects(self) -> ObjectStore: ...

    @property
    def sessions(self) -> SessionStore: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ensure_buckets(self, buckets: list[str]) -> None:
        """Create the buckets that do not exist (the create-buckets setting)."""
        ...

    async def check(self) -> None:
        """Raise unless the backend answers: the health probe."""
        ...


@dataclass(frozen=True)
class Storage:
    """What the RPC layer is given: the decorated stores, the server-wide
    limits they share, and the backend whose lifecycle the app runs."""

    objects: ObjectStore
    sessions: SessionStore
    budget: ByteBudget
    streams: StreamLimit
    backend: Backend


def build_storage(
    settings: Settings,
    *,
    credentials: Mapping[str, str] | None = None,
    backend: Backend | None = None,
    registry: CollectorRegistry | None = None,
) -> Storage:
    """The stack for ``settings``; ``backend`` replaces the S3 one (tests);
    with a ``registry``, its metrics go there."""
    budget = ByteBudget(int(settings.memory_budget))
    if backend is None:
        backend = S3Backend(settings, budget, credentials)
    streams = StreamLimit(settings.max_streams)
    objects: ObjectStore = StreamLimitedStore(backend.objects, streams)
    sessions: SessionStore = StreamLimitedSessions(backend.sessions, streams)
    if isinstance(backend, S3Backend) and (registry is not None or tracing_on()):
        # Every S3 request is measured, and a span when traces are on; with
        # metrics off the measurements go to a registry nobody scrapes.
        backend.connection.instrumentation = S3Instrumentation(registry or CollectorRegistry())
    if registry is not None:
        metrics = StorageMetrics(registry, sorted(settings.buckets))
        watch_limits(registry, budget, streams)
        tally = backend.sessions.swept if isinstance(backend, S3Backend) else None
        objects = MeteredStore(objects, metrics)
        sessions = MeteredSessions(sessions, metrics, tally)
    return Storage(
        objects=objects,
        sessions=sessions,
        budget=budget,
        streams=streams,
        backend=backend,
    )
