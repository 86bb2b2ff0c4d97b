"""Per-principal quotas, as store decorators: concurrent transfer streams and
open resumable upload sessions of one identified caller.

Only callers with an identity (``identity.current_principal()`` not None:
mTLS or a bearer JWT) are counted; without an identity source nothing
changes, and the server-wide limits (``storage.limits``) still apply to all.

Streams are counted in this process, as ``max_streams`` is: a caller may
hold ``limit`` streams on each instance. Sessions outlive any instance, so
their count lives in the store, among the backend's own records
(``protocols.Records``): one empty marker per open session under the
reserved prefix, at a per-principal prefix named by a hash of the principal
(never the name itself). Starting a
session counts the principal's markers with one List call (page size = the
quota); markers older than ``session_expiry`` are ignored and deleted, so an
expired session frees its slot. A marker is refreshed when its session is
resumed and deleted when the session commits or is cancelled.

The count is not atomic: starts that run at the same time (on one instance
or several) can all see room and all succeed, so a principal may hold up to
the quota plus the number of its concurrent starts. A session that ends
where this decorator does not see it (the janitor aborting it, an instance
killed between the commit and the marker's deletion) holds its slot until
its marker is older than ``session_expiry``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import AsyncIterable

from blobgate.server.core.errors import NotFound, ResourceExhausted, ServiceError
from blobgate.server.core.identity import current_principal
from blobgate.server.storage.decorators import SessionStoreDecorator
from blobgate.server.storage.limits import Release, once
from blobgate.server.storage.protocols import (
    RESERVED_PREFIX,
    Chunk,
    Records,
    Session,
    SessionSpec,
    SessionStore,
    StoredObject,
)

log = logging.getLogger(__name__)

SESSION_MARKERS = f"{RESERVED_PREFIX}quotas/sessions/"


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


def marker_key(principal: str, bucket: str, session_id: str) -> str:
    return principal_prefix(principal) + _hash("session", bucket, session_id)


class SessionQuota(SessionStoreDecorator):
    """SessionStore decorator: an identified caller may have at most
    ``limit`` sessions open (across every instance sharing the store); the
    markers are the backend's ``records`` in ``markers_bucket`` (the default
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

    async def open_count(self, principal: str) -> int:
        """The principal's open sessions, up to ``limit``; expired markers
        are not counted, and are deleted."""
        listed = await self._markers.list(self._bucket, principal_prefix(principal), self.limit)
        cutoff = time.time() - self._expiry
        expired = [key for key, written in listed if written.timestamp() < cutoff]
        for key in expired:
            await self._markers.delete(self._bucket, key)
        return len(listed) - len(expired)

    async def start_session(self, spec: SessionSpec) -> Session:
        principal = current_principal()
        if principal is None:
            return await self._inner.start_session(spec)
        if await self.open_count(principal) >= self.limit:
            raise ResourceExhausted(
                f"this caller has {self.limit} resumable upload sessions open, its limit: "
                "finish or cancel one (CancelResumableUpload), or wait until an idle one expires"
            )
        session = await self._inner.start_session(spec)
        try:
            await self._markers.put(
                self._bucket, marker_key(principal, session.bucket, session.session_id), b""
            )
        except BaseException:
            # Uncounted, the session must not stay: it would escape the quota.
            with contextlib.suppress(ServiceError):
                await asyncio.shield(self._inner.cancel_session(session.bucket, session.session_id))
            raise
        return session

    async def resume_session(self, session: Session, body: AsyncIterable[Chunk]) -> StoredObject:
        principal = current_principal()
        if principal is None:
            return await self._inner.resume_session(session, body)
        key = marker_key(principal, session.bucket, session.session_id)
        await self._markers.put(self._bucket, key, b"")  # used now: its idle time starts again
        try:
            stored = await self._inner.resume_session(session, body)
        except Exception:
            await self._settle(key, session)
            raise
        await self._forget(key)
        return stored

    async def cancel_session(self, bucket: str, session_id: str) -> None:
        await self._inner.cancel_session(bucket, session_id)
        principal = current_principal()
        if principal is not None:
            await self._forget(marker_key(principal, bucket, session_id))

    async def _settle(self, key: str, session: Session) -> None:
        """After a failed resume: drop the marker if the failure ended the
        session (a check that can never pass, S3 losing its parts)."""
        try:
            await self._inner.open_session(session.bucket, session.session_id)
        except NotFound:
            await self._forget(key)
        except ServiceError:
            pass  # S3 trouble: the marker stays until it expires or the session ends

    async def _forget(self, key: str) -> None:
        try:
            await self._markers.delete(self._bucket, key)
        except ServiceError:
            log.warning("could not delete an ended session's quota marker", exc_info=True)
