"""Storage metrics: store decorators that count object bytes by bucket as
they pass, committed object sizes and resumable sessions, plus gauges over
the server-wide limits (memory budget, transfer streams).

Labels are the bucket (one of the allowed set) and small fixed sets; never
a key or an upload id.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from blobgate.server.core.errors import ServiceError
from blobgate.server.storage.decorators import (
    ObjectReaderDecorator,
    ObjectStoreDecorator,
    SessionStoreDecorator,
)
from blobgate.server.storage.limits import ByteBudget, StreamLimit
from blobgate.server.storage.protocols import (
    EXPIRED_SESSION,
    ORPHANED_UPLOAD,
    ByteRange,
    Chunk,
    ContentChecksums,
    DeleteEntry,
    DeleteResult,
    DirectRead,
    ObjectReader,
    ObjectRef,
    ObjectStore,
    PutOptions,
    Session,
    SessionSpec,
    SessionStore,
    StoredObject,
)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
_SIZES = (KiB, 64 * KiB, MiB, 8 * MiB, 64 * MiB, 256 * MiB, GiB, 4 * GiB, 16 * GiB, 64 * GiB)
SESSION_ENDS = ("completed", "cancelled", "expired")


class StorageMetrics:
    """The storage families, in ``registry``; series of every allowed
    bucket and every fixed label value start at zero."""

    def __init__(self, registry: CollectorRegistry, buckets: Iterable[str]) -> None:
        self.received = Counter(
            "blobgate_received_bytes_total",
            "Object bytes received from clients (Upload), by bucket.",
            ["bucket"],
            registry=registry,
        )
        self.sent = Counter(
            "blobgate_sent_bytes_total",
            "Object bytes read from the store for clients (Download), by bucket.",
            ["bucket"],
            registry=registry,
        )
        self.direct_reads = Counter(
            "blobgate_direct_reads_total",
            "Downloads answered with a presigned GET (direct_transfers): the caller reads "
            "the bytes from S3, by bucket.",
            ["bucket"],
            registry=registry,
        )
        self.direct_bytes = Counter(
            "blobgate_direct_read_bytes_total",
            "Object bytes the direct downloads' URLs select (read from S3 by the callers, "
            "not through the gateway), by bucket.",
            ["bucket"],
            registry=registry,
        )
        self.direct_uploads = Counter(
            "blobgate_direct_uploads_total",
            "Direct upload sessions committed (direct_transfers): the caller PUT the parts "
            "to S3, by bucket.",
            ["bucket"],
            registry=registry,
        )
        self.direct_upload_bytes = Counter(
            "blobgate_direct_upload_bytes_total",
            "Object bytes of the direct upload sessions committed (written to S3 by the "
            "callers, not through the gateway), by bucket.",
            ["bucket"],
            registry=registry,
        )
        self.object_size = Histogram(
            "blobgate_committed_object_size_bytes",
            "Sizes of the objects Upload committed (plain and resumable), by bucket.",
            ["bucket"],
            buckets=_SIZES,
            registry=registry,
        )
        self.sessions_started = Counter(
            "blobgate_sessions_started_total",
            "Resumable upload sessions started.",
            registry=registry,
        )
        self.sessions_ended = Counter(
            "blobgate_sessions_ended_total",
            "Resumable upload sessions ended: completed (committed), cancelled, or expired "
            "(aborted by the janitor).",
            ["reason"],
            registry=registry,
        )
        self.sweeps = Counter(
            "blobgate_janitor_sweeps_total",
            "Janitor sweeps, by outcome (ok or failed).",
            ["outcome"],
            registry=registry,
        )
        self.aborted = Counter(
            "blobgate_janitor_aborted_uploads_total",
            "Multipart uploads the janitor aborted: of expired sessions and orphaned ones.",
            registry=registry,
        )
        self.delete_markers = Counter(
            "blobgate_delete_markers_total",
            "Deletes that left a delete marker (a versioned bucket: the versions stay), by bucket.",
            ["bucket"],
            registry=registry,
        )
        self.versions_removed = Counter(
            "blobgate_versions_removed_total",
            "Versions removed for good (Delete and BatchDelete entries naming a version id: "
            "the purge right), by bucket.",
            ["bucket"],
            registry=registry,
        )
        for bucket in buckets:
            families = (
                self.received,
                self.sent,
                self.direct_reads,
                self.direct_bytes,
                self.direct_uploads,
                self.direct_upload_bytes,
                self.object_size,
            )
            for family in (*families, self.delete_markers, self.versions_removed):
                family.labels(bucket)
        for reason in SESSION_ENDS:
            self.sessions_ended.labels(reason)
        for outcome in ("ok", "failed"):
            self.sweeps.labels(outcome)


def watch_limits(registry: CollectorRegistry, budget: ByteBudget, streams: StreamLimit) -> None:
    """Gauges read from the limits at scrape time."""
    memory = Gauge(
        "blobgate_memory_budget_bytes",
        "Upload buffer bytes: used now, and the limit (memory_budget).",
        ["kind"],
        registry=registry,
    )
    memory.labels("used").set_function(lambda: budget.used)
    memory.labels("limit").set_function(lambda: budget.limit)
    in_flight = Gauge(
        "blobgate_streams_in_flight",
        "Upload and Download streams open now (each holds a max_streams slot).",
        registry=registry,
    )
    in_flight.set_function(lambda: streams.active)
    limit = Gauge("blobgate_streams_limit", "The max_streams setting.", registry=registry)
    limit.set_function(lambda: streams.limit)


def _size(chunk: Chunk) -> int:
    return chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)


class _CountedBody:
    """An upload body that counts its bytes as the store takes them."""

    def __init__(self, body: AsyncIterable[Chunk], counter: Counter) -> None:
        self._chunks = aiter(body)
        self._counter = counter

    def __aiter__(self) -> _CountedBody:
        return self

    async def __anext__(self) -> Chunk:
        chunk = await anext(self._chunks)
        self._counter.inc(_size(chunk))
        return chunk


class _CountedChunks:
    def __init__(self, chunks: AsyncIterator[list[bytes]], counter: Counter) -> None:
        self._chunks = chunks
        self._counter = counter

    def __aiter__(self) -> _CountedChunks:
        return self

    async def __anext__(self) -> list[bytes]:
        pieces = await anext(self._chunks)
        self._counter.inc(sum(len(piece) for piece in pieces))
        return pieces


class _CountedReader(ObjectReaderDecorator):
    """An ObjectReader that counts the bytes read from it."""

    def __init__(self, inner: ObjectReader, counter: Counter) -> None:
        super().__init__(inner)
        self._counter = counter

    def chunks(self, size: int) -> AsyncIterator[list[bytes]]:
        return _CountedChunks(self._inner.chunks(size), self._counter)


Child = TypeVar("Child", Counter, Histogram)


def _bucket_child(children: dict[str, Child], family: Child, bucket: str) -> Child:
    """``family.labels(bucket)``, looked up once per bucket into ``children``
    (prometheus_client's ``labels`` takes a lock and builds a key each time)."""
    child = children.get(bucket)
    if child is None:
        child = children[bucket] = family.labels(bucket)
    return child


class MeteredStore(ObjectStoreDecorator):
    """ObjectStore decorator: bytes in and out by bucket, committed sizes."""

    def __init__(self, inner: ObjectStore, metrics: StorageMetrics) -> None:
        super().__init__(inner)
        self._m = metrics
        # Each bucket's children of the per-call families (_bucket_child).
        self._received: dict[str, Counter] = {}
        self._sent: dict[str, Counter] = {}
        self._sizes: dict[str, Histogram] = {}

    async def put(
        self, ref: ObjectRef, body: AsyncIterable[Chunk], options: PutOptions
    ) -> StoredObject:
        received = _bucket_child(self._received, self._m.received, ref.bucket)
        info = await self._inner.put(ref, _CountedBody(body, received), options)
        _bucket_child(self._sizes, self._m.object_size, ref.bucket).observe(info.size)
        return info

    async def open(self, ref: ObjectRef, byte_range: ByteRange, if_match: str) -> ObjectReader:
        reader = await self._inner.open(ref, byte_range, if_match)
        return _CountedReader(reader, _bucket_child(self._sent, self._m.sent, ref.bucket))

    async def direct_read(
        self, ref: ObjectRef, byte_range: ByteRange, if_match: str, expires_in: int
    ) -> DirectRead | None:
        read = await self._inner.direct_read(ref, byte_range, if_match, expires_in)
        if read is not None:
            self._m.direct_reads.labels(ref.bucket).inc()
            self._m.direct_bytes.labels(ref.bucket).inc(read.length)
        return read

    async def delete(self, ref: ObjectRef, if_match: str) -> DeleteResult:
        result = await self._inner.delete(ref, if_match)
        if ref.version_id:
            self._m.versions_removed.labels(ref.bucket).inc()
        elif result.delete_marker:
            self._m.delete_markers.labels(ref.bucket).inc()
        return result

    async def batch_delete(
        self, bucket: str, entries: Sequence[DeleteEntry]
    ) -> list[ServiceError | None]:
        results = await self._inner.batch_delete(bucket, entries)
        removed = sum(
            1
            for entry, error in zip(entries, results, strict=True)
            if entry.version_id and not error
        )
        if removed:
            self._m.versions_removed.labels(bucket).inc(removed)
        return results


class MeteredSessions(SessionStoreDecorator):
    """SessionStore decorator: sessions started and ended, their bytes, the
    janitor's sweeps. ``tally`` is the backend's count of what its sweeps
    aborted, by kind (``Backend.sweep_tally``); without one, every upload a
    sweep aborted counts as an expired session."""

    def __init__(
        self, inner: SessionStore, metrics: StorageMetrics, tally: Tally[str] | None = None
    ) -> None:
        super().__init__(inner)
        self._m = metrics
        self._tally = tally
        self._aborted_seen = self._expired_seen = 0

    async def start_session(self, spec: SessionSpec) -> Session:
        session = await self._inner.start_session(spec)
        self._m.sessions_started.inc()
        return session

    async def resume_session(self, session: Session, body: AsyncIterable[Chunk]) -> StoredObject:
        counted = _CountedBody(body, self._m.received.labels(session.bucket))
        info = await self._inner.resume_session(session, counted)
        self._m.sessions_ended.labels("completed").inc()
        self._m.object_size.labels(session.bucket).observe(info.size)
        return info

    async def complete_direct(
        self, session: Session, size: int, sums: ContentChecksums
    ) -> StoredObject:
        info = await self._inner.complete_direct(session, size, sums)
        self._m.sessions_ended.labels("completed").inc()
        self._m.direct_uploads.labels(session.bucket).inc()
        self._m.direct_upload_bytes.labels(session.bucket).inc(info.size)
        self._m.object_size.labels(session.bucket).observe(info.size)
        return info

    async def cancel_session(self, bucket: str, session_id: str) -> None:
        await self._inner.cancel_session(bucket, session_id)
        self._m.sessions_ended.labels("cancelled").inc()

    async def sweep(self, buckets: list[str]) -> int:
        try:
            aborted = await self._inner.sweep(buckets)
        except BaseException:
            self._m.sweeps.labels("failed").inc()
            self._count_aborted(0)  # the tally knows what it aborted before failing
            raise
        self._m.sweeps.labels("ok").inc()
        self._count_aborted(aborted)
        return aborted

    def _count_aborted(self, returned: int) -> None:
        if self._tally is None:
            aborted = expired = returned
        else:
            expired_total = self._tally[EXPIRED_SESSION]
            total = expired_total + self._tally[ORPHANED_UPLOAD]
            aborted, expired = total - self._aborted_seen, expired_total - self._expired_seen
            self._aborted_seen, self._expired_seen = total, expired_total
        self._m.aborted.inc(aborted)
        self._m.sessions_ended.labels("expired").inc(expired)
