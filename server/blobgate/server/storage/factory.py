"""The storage stack built from settings: a backend's stores wrapped in the
decorators for cross-cutting concerns, outermost first as calls meet them.

    AuthorizedStore -> StreamLimitedStore(per principal)
        -> StreamLimitedStore(server-wide) -> backend.objects    (ObjectStore)
    AuthorizedSessions -> StreamLimitedSessions(per principal) -> SessionQuota
        -> StreamLimitedSessions(server-wide) -> backend.sessions (SessionStore)

The memory budget (storage.byte_budget, with a share per principal) is
taken by the S3 store as parts fill; each principal's S3 data requests are
counted on the backend's connection (``s3.connection_shares``). Callers
without an identity count as one principal for both only when an identity
source is configured.

Authorization (storage.authorization) checks rights, and under a policy
file the served buckets, before any other decorator takes a slot or budget
or counts a bucket: nothing below it sees a refused call.
SessionQuota keeps its markers in ``backend.records``. With metrics on,
MeteredStore and MeteredSessions (storage.metrics) go just inside it, counting the
sweeps from ``backend.sweep_tally``; with metrics or traces on, every request
the backend sends is measured and traced (``backend.instrument``).

The factory alone knows which backend it built: the S3 one (on
``s3_config`` of the settings) unless the caller hands it another (the
in-memory one, on ``memory_config``); the decorators ask a backend only
through ``protocols.Backend``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
from blobgate.server.storage.memory.config import MemoryConfig
from blobgate.server.storage.metrics import (
    MeteredSessions,
    MeteredStore,
    StorageMetrics,
    watch_limits,
)
from blobgate.server.storage.protocols import Backend, ObjectStore, SessionStore
from blobgate.server.storage.quotas import PrincipalStreams, SessionQuota
from blobgate.server.storage.s3.backend import S3Backend
from blobgate.server.storage.s3.config import S3Config


def s3_config(settings: Settings) -> S3Config:
    """The S3 backend's part of ``settings``."""
    return S3Config(
        endpoint=settings.s3_endpoint,
        public_endpoint=settings.s3_public_endpoint,
        region=settings.s3_region,
        addressing_style=settings.s3_addressing_style,
        connect_timeout=settings.s3_connect_timeout,
        read_timeout=settings.s3_read_timeout,
        max_attempts=settings.s3_max_attempts,
        max_connections=settings.s3_max_connections,
        connections_per_principal=settings.connections_per_principal,
        control_connections=settings.s3_control_connections,
        checksum_mode=settings.checksum_mode,
        full_object_checksums=settings.s3_full_object_checksums,
        conditional_delete=settings.s3_conditional_delete,
        default_bucket=settings.default_bucket,
        part_size=int(settings.part_size),
        parts_in_flight=settings.parts_in_flight,
        copy_threshold=int(settings.copy_threshold),
        session_expiry=settings.session_expiry,
        bucket_versioning=settings.bucket_versioning,
        count_anonymous=settings.identity_source,
    )


def memory_config(settings: Settings) -> MemoryConfig:
    """The in-memory backend's part of ``settings``."""
    return MemoryConfig(
        default_bucket=settings.default_bucket,
        part_size=int(settings.part_size),
        session_expiry=settings.session_expiry,
    )


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
    """The stack for ``settings`` over the S3 backend, or over ``backend``
    (the in-memory one, in tests), built the same way whichever it is; with a
    ``registry``, its metrics go there. PolicyError when the
    ``auth_policy_file`` is unusable."""
    policy = AccessPolicy.from_settings(settings)  # first: nothing to undo if it fails
    # Callers without an identity are one principal held to a share only when
    # callers are named at all; otherwise the share would only shrink the budget.
    budget = ByteBudget(
        int(settings.memory_budget),
        settings.budget_per_principal,
        count_anonymous=settings.identity_source,
    )
    if backend is None:
        backend = S3Backend(s3_config(settings), budget, credentials)
    streams = StreamLimit(settings.max_streams)
    objects: ObjectStore = StreamLimitedStore(backend.objects, streams)
    sessions: SessionStore = StreamLimitedSessions(backend.sessions, streams)
    # Per-principal quotas (storage.quotas), outside the server-wide cap: a
    # caller at its own limit is refused before it takes a server-wide slot.
    sessions = SessionQuota(
        sessions,
        backend.records,
        settings.default_bucket,
        settings.max_sessions_per_principal,
        settings.session_expiry,
    )
    principal_streams = PrincipalStreams(settings.streams_per_principal)
    objects = StreamLimitedStore(objects, principal_streams)
    sessions = StreamLimitedSessions(sessions, principal_streams)
    if registry is not None or tracing_on():
        # Every request to the store is measured, and a span when traces are
        # on; with metrics off the measurements go to a registry nobody scrapes.
        backend.instrument(registry or CollectorRegistry())
    if registry is not None:
        metrics = StorageMetrics(registry, sorted(settings.buckets))
        watch_limits(registry, budget, streams)
        objects = MeteredStore(objects, metrics)
        sessions = MeteredSessions(sessions, metrics, backend.sweep_tally)
    # Under a policy, unserved buckets reach this far (rpc.validation) and
    # are refused as ungranted ones.
    served = frozenset(settings.buckets)
    objects = AuthorizedStore(objects, policy, served)
    sessions = AuthorizedSessions(sessions, policy, served)
    return Storage(
        objects=objects,
        sessions=sessions,
        budget=budget,
        streams=streams,
        backend=backend,
        policy=policy,
    )
