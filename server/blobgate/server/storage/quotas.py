"""Per-principal quotas, as store decorators: concurrent transfer streams and
open resumable upload sessions of one identified caller.

Only callers with an identity (``identity.current_principal()`` not None:
mTLS or a bearer JWT) are counted; without an identity source nothing
changes, and the server-wide limits (``storage.limits``) still apply to all.

Streams are counted in this process, as ``max_streams`` is: a caller may
hold ``limit`` streams on each instance. Sessions outlive any instance, so
their count lives in the store, among the backend's own records
(``protocols.Records``), under the reserved prefix at a per-principal prefix
named by a hash of the principal (never the name itself): the principal has
``limit`` numbered slots, and an open session holds one. Starting a session
lists the principal's slots (one List call, page size = the quota) and takes
a free one with a conditional create (S3's If-None-Match: *), so that of
starts racing for a slot, on one instance or several, exactly one wins; a
loser tries the next free slot, and is refused when none is left. A slot
older than ``session_expiry`` is free too: it is taken over with a
conditional write on the ETag the listing showed (If-Match), so that two
starts cannot both reclaim it. A second record, named by a hash of the
session, says which slot (and which ETag of it) the session holds: resuming
the session rewrites its slot (its idle time starts again), and the commit
or cancel frees it with a conditional delete, which leaves a slot another
start has reclaimed meanwhile alone.

A session that ends where this decorator does not see it (the janitor
aborting it, an instance killed between the commit and the slot's release)
holds its slot until the slot is older than ``session_expiry``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import logging
import random
import secrets
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass

from blobgate.server.core.errors import (
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    ServiceError,
)
from blobgate.server.core.identity import current_principal
from blobgate.server.storage.decorators import SessionStoreDecorator
from blobgate.server.storage.limits import Release, once
from blobgate.server.storage.protocols import (
    RESERVED_PREFIX,
    Chunk,
    ContentChecksums,
    Session,
    SessionSpec,
    SessionStore,
    StoredObject,
)
from blobgate.server.storage.records import Records

log = logging.getLogger(__name__)

SESSION_MARKERS = f"{RESERVED_PREFIX}quotas/sessions/"
SESSION_HOLDERS = f"{RESERVED_PREFIX}quotas/holders/"


# --- streams ------------------------------------------------------------------


class PrincipalStreams:
    """At most ``limit`` transfer streams per principal at once, in this
    process; more are refused, not queued. Callers without an identity pass.
    Its slots are held by the stream-limit decorators (``storage.limits``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active: collections.Counter[str] = collections.Counter()

    def take(self) -> Release:
        """Take a slot for the current principal, or raise ResourceExhausted
        when it holds ``limit`` already."""
        principal = current_principal()
        if principal is None:
            return _no_slot
        if self.active[principal] >= self.limit:
            raise ResourceExhausted(
                f"this caller is at its limit of {self.limit} concurrent transfers on this "
                "server; end one or retry later"
            )
        self.active[principal] += 1
        return once(functools.partial(self._give_back, principal))

    def _give_back(self, principal: str) -> None:
        self.active[principal] -= 1
        if self.active[principal] <= 0:
            del self.active[principal]


def _no_slot() -> None:
    """The release of a caller without an identity: it took nothing."""


# --- session markers ------------------------------------------------------------


def _hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def principal_prefix(principal: str) -> str:
    """Where one principal's session markers live: a hash, never the name."""
    return f"{SESSION_MARKERS}{_hash('principal', principal)[:40]}/"


def slot_key(principal: str, slot: int) -> str:
    """The principal's slot number ``slot``: the markers of open sessions."""
    return f"{principal_prefix(principal)}slot-{slot:04d}"


def holder_key(principal: str, bucket: str, session_id: str) -> str:
    """The record of which slot a session holds (outside the markers)."""
    return f"{SESSION_HOLDERS}{_hash('session', principal, bucket, session_id)}"


@dataclass(frozen=True)
class _Held:
    """A slot a session holds, as written last: its key and ETag."""

    slot: str
    etag: str

    def encode(self) -> bytes:
        return f"{self.slot}\n{self.etag}".encode()

    @classmethod
    def decode(cls, data: bytes) -> _Held | None:
        slot, _, etag = data.decode("utf-8", "replace").partition("\n")
        return cls(slot, etag) if slot.startswith(SESSION_MARKERS) and etag else None


class SessionQuota(SessionStoreDecorator):
    """SessionStore decorator: an identified caller may have at most
    ``limit`` sessions open (across every instance sharing the store); the
    slots are the backend's ``records`` in ``markers_bucket`` (the default
    bucket)."""

    def __init__(
        self,
        inner: SessionStore,
        markers: Records,
        markers_bucket: str,
        limit: int,
        expiry: float,
    ) -> None:
        super().__init__(inner)
        self._markers = markers
        self._bucket = markers_bucket
        self.limit = limit
        self._expiry = expiry

    async def _take_slot(self, principal: str) -> _Held:
        """A slot of the principal's, taken for a new session; ResourceExhausted
        when all ``limit`` are held by sessions that have not expired."""
        slots = slot_key(principal, 0)[:-4]  # the prefix of the numbered slots
        taken = await self._markers.list(self._bucket, slots, self.limit)
        held = {entry.key: entry for entry in taken}
        free = [slot_key(principal, n) for n in range(self.limit)]
        free = [key for key in free if key not in held]
        random.shuffle(free)  # racing starts spread over the free slots
        cutoff = time.time() - self._expiry
        expired = [entry for entry in taken if entry.written.timestamp() < cutoff]
        content = secrets.token_hex(16).encode()  # a fresh ETag for every claim
        for key in free:
            with contextlib.suppress(FailedPrecondition):
                etag = await self._markers.put(self._bucket, key, content, if_none_match=True)
                return _Held(key, etag)
        for entry in expired:
            with contextlib.suppress(FailedPrecondition):
                etag = await self._markers.put(
                    self._bucket, entry.key, content, if_match=entry.etag
                )
                return _Held(entry.key, etag)
        raise ResourceExhausted(
            f"this caller has {self.limit} resumable upload sessions open, its limit: "
            "finish or cancel one (CancelResumableUpload), or wait until an idle one expires"
        )

    async def _release(self, held: _Held) -> None:
        """Free a slot unless another start has reclaimed it meanwhile."""
        with contextlib.suppress(FailedPrecondition):
            await self._markers.delete(self._bucket, held.slot, if_match=held.etag)

    async def start_session(self, spec: SessionSpec) -> Session:
        principal = current_principal()
        if principal is None:
            return await self._inner.start_session(spec)
        held = await self._take_slot(principal)
        try:
            session = await self._inner.start_session(spec)
        except BaseException:
            with contextlib.suppress(ServiceError):
                await asyncio.shield(self._release(held))
            raise
        try:
            key = holder_key(principal, session.bucket, session.session_id)
            await self._markers.put(self._bucket, key, held.encode())
        except BaseException:
            # Uncounted, the session must not stay: it would escape the quota.
            with contextlib.suppress(ServiceError):
                await asyncio.shield(self._inner.cancel_session(session.bucket, session.session_id))
            with contextlib.suppress(ServiceError):
                await asyncio.shield(self._release(held))
            raise
        return session

    async def _held(self, key: str) -> _Held | None:
        """The slot the session of holder record ``key`` holds, if any."""
        try:
            return _Held.decode(await self._markers.get(self._bucket, key))
        except NotFound:
            return None  # started where no quota applied, or its record is gone

    async def resume_session(self, session: Session, body: AsyncIterable[Chunk]) -> StoredObject:
        principal = current_principal()
        if principal is None:
            return await self._inner.resume_session(session, body)
        key = holder_key(principal, session.bucket, session.session_id)
        held = await self._refresh(key)
        try:
            stored = await self._inner.resume_session(session, body)
        except Exception:
            await self._settle(key, held, session)
            raise
        await self._forget(key, held)
        return stored

    async def complete_direct(
        self, session: Session, size: int, sums: ContentChecksums
    ) -> StoredObject:
        principal = current_principal()
        if principal is None:
            return await self._inner.complete_direct(session, size, sums)
        key = holder_key(principal, session.bucket, session.session_id)
        held = await self._held(key)
        try:
            stored = await self._inner.complete_direct(session, size, sums)
        except Exception:
            await self._settle(key, held, session)
            raise
        await self._forget(key, held)
        return stored

    async def _refresh(self, key: str) -> _Held | None:
        """Rewrite the session's slot: used now, its idle time starts again."""
        held = await self._held(key)
        if held is None:
            return None
        try:
            etag = await self._markers.put(
                self._bucket, held.slot, secrets.token_hex(16).encode(), if_match=held.etag
            )
        except FailedPrecondition:
            return None  # expired and reclaimed by another start: the slot is not ours
        held = _Held(held.slot, etag)
        await self._markers.put(self._bucket, key, held.encode())
        return held

    async def cancel_session(self, bucket: str, session_id: str) -> None:
        await self._inner.cancel_session(bucket, session_id)
        principal = current_principal()
        if principal is not None:
            key = holder_key(principal, bucket, session_id)
            await self._forget(key, await self._held(key))

    async def _settle(self, key: str, held: _Held | None, session: Session) -> None:
        """After a failed resume: free the slot if the failure ended the
        session (a check that can never pass, S3 losing its parts)."""
        try:
            await self._inner.open_session(session.bucket, session.session_id)
        except NotFound:
            await self._forget(key, held)
        except ServiceError:
            pass  # S3 trouble: the slot stays held until it expires or the session ends

    async def _forget(self, key: str, held: _Held | None) -> None:
        try:
            if held is not None:
                await self._release(held)
            await self._markers.delete(self._bucket, key)
        except ServiceError:
            log.warning("could not free an ended session's quota slot", exc_info=True)
