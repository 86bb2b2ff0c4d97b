"""The storage stack built from settings: a backend's stores wrapped in the
decorators for cross-cutting concerns, outermost first as calls meet them.

    StreamLimitedStore -> S3Store            (ObjectStore)
    StreamLimitedSessions -> S3Sessions      (SessionStore)

Authorization, metrics and tracing decorators go here as they are added.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from blobgate.server.settings import Settings
from blobgate.server.storage.limits import (
    ByteBudget,
    StreamLimit,
    StreamLimitedSessions,
    StreamLimitedStore,
)
from blobgate.server.storage.protocols import ObjectStore, SessionStore
from blobgate.server.storage.s3.backend import S3Backend


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
) -> Storage:
    """The stack for ``settings``; ``backend`` replaces the S3 one (tests)."""
    budget = ByteBudget(int(settings.memory_budget))
    if backend is None:
        backend = S3Backend(settings, budget, credentials)
    streams = StreamLimit(settings.max_streams)
    return Storage(
        objects=StreamLimitedStore(backend.objects, streams),
        sessions=StreamLimitedSessions(backend.sessions, streams),
        budget=budget,
        streams=streams,
        backend=backend,
    )
