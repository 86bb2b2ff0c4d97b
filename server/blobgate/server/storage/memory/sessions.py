"""Resumable upload sessions in process memory, with the S3 sessions' semantics.

A session's record lives beside the objects of its bucket in the
``MemoryStore`` (so every ``MemorySessions`` over that store sees it): its
spec, the whole parts stored so far and the running hashes of those parts.
Whole parts persist as they fill, so the persisted size is a multiple of the
part size. Each persisted part bumps the record's revision and a stream
persists only over the revision it last saw: a stale stream can never move a
session back.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterable, Sequence
from datetime import timedelta

from blobgate.server.core.errors import FailedPrecondition, InvalidArgument, NotFound
from blobgate.server.storage.checksums import Hasher, verify
from blobgate.server.storage.memory.state import MemoryBucket, SessionRecord
from blobgate.server.storage.memory.store import MemoryStore
from blobgate.server.storage.protocols import (
    NOT_DIRECT,
    SESSION_GONE,
    Chunk,
    ContentChecksums,
    DirectPart,
    PartSpec,
    Session,
    SessionSpec,
    StoredObject,
)

_STALE = (
    "another Upload continued this session meanwhile: "
    "query its status and resume from the persisted size"
)


class MemorySessions:
    """SessionStore in process memory, over a ``MemoryStore``'s buckets.
    ``expiry`` is how many seconds a session may sit idle before ``sweep``
    aborts it."""

    def __init__(self, store: MemoryStore, *, part_size: int, expiry: float) -> None:
        if part_size <= 0:
            raise ValueError(f"part_size must be positive, not {part_size}")
        self._store = store
        self._part_size = part_size
        self.expiry = timedelta(seconds=expiry)

    def _bucket(self, bucket: str) -> MemoryBucket:
        try:
            return self._store.bucket(bucket)
        except NotFound:
            # As in S3: a session in a missing bucket is just a missing session.
            raise NotFound(SESSION_GONE) from None

    def _record(self, bucket: str, session_id: str) -> SessionRecord:
        record = self._bucket(bucket).sessions.get(session_id)
        if record is None:
            raise NotFound(SESSION_GONE)
        return record

    def _current(self, session: Session, revision: int) -> SessionRecord:
        """The session's record if no other stream changed it since ``revision``."""
        record = self._record(session.bucket, session.session_id)
        if record.revision != revision:
            raise FailedPrecondition(_STALE)
        return record

    # --- SessionStore --------------------------------------------------------

    async def start_session(self, spec: SessionSpec) -> Session:
        bucket = self._store.bucket(spec.ref.bucket)
        self._store.check_preconditions(spec.ref, spec.options)
        sha256_state, crc32c = Hasher(resumable=True).state()
        record = SessionRecord(
            session_id=secrets.token_urlsafe(32),
            spec=spec,
            part_size=self._part_size,
            data=bytearray(),
            sha256_state=sha256_state,
            crc32c=crc32c,
            revision=1,
            touched=time.monotonic(),
        )
        bucket.sessions[record.session_id] = record
        return record.session()

    async def open_session(self, bucket: str, session_id: str) -> Session:
        return self._record(bucket, session_id).session()

    async def cancel_session(self, bucket: str, session_id: str) -> None:
        self._record(bucket, session_id)
        del self._bucket(bucket).sessions[session_id]

    async def resume_session(self, session: Session, body: AsyncIterable[Chunk]) -> StoredObject:
        record = self._record(session.bucket, session.session_id)
        if len(record.data) != session.persisted_size:
            raise FailedPrecondition(_STALE)
        revision, part_size = record.revision, record.part_size
        hasher = Hasher(record.sha256_state, record.crc32c, resumable=True)
        part = bytearray()  # the part being filled: the only bytes this stream holds
        async for chunk in body:
            view = memoryview(chunk)
            while view:
                room = part_size - len(part)
                part += view[:room]
                view = view[room:]
                if len(part) < part_size:
                    continue
                with memoryview(part) as whole:
                    hasher.update(whole)
                record = self._current(session, revision)
                record.data += part
                record.sha256_state, record.crc32c = hasher.state()
                record.revision = revision = revision + 1
                record.touched = time.monotonic()
                part = bytearray()
        record = self._current(session, revision)
        with memoryview(part) as tail:
            hasher.update(tail)
        sums = hasher.checksums()
        ref, options = session.spec.ref, session.spec.options
        try:
            verify(options.known, sums)
            self._store.check_preconditions(ref, options)
        except (InvalidArgument, FailedPrecondition):
            # The whole object is wrong, or can never be written: no resume helps.
            del self._bucket(session.bucket).sessions[session.session_id]
            raise
        del self._bucket(session.bucket).sessions[session.session_id]
        record.data += part
        return self._store.commit(ref, record.data, options, sums)

    async def progress(self, session: Session) -> int:
        return len(self._record(session.bucket, session.session_id).data)

    # The memory store offers no direct sessions (it has no URLs to sign).
    async def presign_parts(
        self, session: Session, parts: Sequence[PartSpec], expires_in: int
    ) -> list[DirectPart]:
        self._record(session.bucket, session.session_id)
        raise FailedPrecondition(NOT_DIRECT)

    async def complete_direct(
        self, session: Session, size: int, sums: ContentChecksums
    ) -> StoredObject:
        self._record(session.bucket, session.session_id)
        raise FailedPrecondition(NOT_DIRECT)

    async def sweep(self, buckets: list[str]) -> int:
        """Abort the sessions idle past the expiry. A plain put holds its data
        only while it runs, so there is no orphaned upload to abort."""
        cutoff = time.monotonic() - self.expiry.total_seconds()
        aborted = 0
        for name in buckets:
            sessions = self._store.bucket(name).sessions
            for session_id in [s for s, rec in sessions.items() if rec.touched < cutoff]:
                del sessions[session_id]
                aborted += 1
        return aborted
