"""The storage stack built from settings: a backend's stores wrapped in the
decorators for cross-cutting concerns, outermost first as calls meet them.

    AuthorizedStore -> StreamLimitedStore(per principal)
        -> StreamLimitedStore(server-wide) -> S3Store           (ObjectStore)
    AuthorizedSessions -> StreamLimitedSessions(per principal) -> SessionQuota
        -> StreamLimitedSessions(server-wide) -> S3Sessions     (SessionStore)

With metrics on, MeteredStore and MeteredSessions (storage.metrics) go
outermost; with metrics or traces on, every S3 request is measured and
traced (storage.s3.instrumentation).
Authorization (storage.authorization) checks rights before any other
decorator takes a slot or budget; only the metrics see a refused call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry

from blobgate.server.core.access_policy import AccessPolicy
from blobgate.server.core.settings import Settings
from blobgate.server.core.tracing import tracing_on
from blobgate.server.storage.authorization import AuthorizedSessions, AuthorizedStore
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
from blobgate.server.storage.quotas import (
    PrincipalStreams,
    SessionQuota,
    markers_for,
)
from blobgate.server.storage.s3.backend import S3Backend
from blobgate.server.storage.s3.instrumentation import S3Instrumentation


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
    policy: AccessPolicy  # the rights in force; SIGHUP reloads it (app.serve)


def build_storage(
    settings: Settings,
    *,
    credentials: Mapping[str, str] | None = None,
    backend: Backend | None = None,
    registry: CollectorRegistry | None = None,
) -> Storage:
    """The stack for ``settings``; ``backend`` replaces the S3 one (tests);
    with a ``registry``, its metrics go there. PolicyError when the
    ``auth_policy_file`` is unusable."""
    policy = AccessPolicy.from_settings(settings)  # first: nothing to undo if it fails
    budget = ByteBudget(int(settings.memory_budget))
    if backend is None:
        backend = S3Backend(settings, budget, credentials)
    streams = StreamLimit(settings.max_streams)
    objects: ObjectStore = StreamLimitedStore(backend.objects, streams)
    sessions: SessionStore = StreamLimitedSessions(backend.sessions, streams)
    # Per-principal quotas (storage.quotas), outside the server-wide cap: a
    # caller at its own limit is refused before it takes a server-wide slot.
    connection = backend.connection if isinstance(backend, S3Backend) else None
    markers = markers_for(backend.objects, connection)
    if markers is not None:
        sessions = SessionQuota(
            sessions,
            markers,
            settings.default_bucket,
            settings.max_sessions_per_principal,
            settings.session_expiry,
        )
    principal_streams = PrincipalStreams(settings.streams_per_principal)
    objects = StreamLimitedStore(objects, principal_streams)
    sessions = StreamLimitedSessions(sessions, principal_streams)
    if isinstance(backend, S3Backend) and (registry is not None or tracing_on()):
        # Every S3 request is measured, and a span when traces are on; with
        # metrics off the measurements go to a registry nobody scrapes.
        backend.connection.instrumentation = S3Instrumentation(registry or CollectorRegistry())
    objects = AuthorizedStore(objects, policy)
    sessions = AuthorizedSessions(sessions, policy)
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
        policy=policy,
    )
