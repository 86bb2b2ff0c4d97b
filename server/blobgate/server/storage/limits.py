"""Server-wide limits: a budget of bytes buffered across all uploads
(``ByteBudget``, in ``storage.byte_budget``, with a share per principal), and
a cap on concurrent transfer streams, the latter as store decorators.

Past the byte budget (or its principal's share of it) an upload waits before
taking more data, so gRPC flow control slows its client (backpressure); past
the stream cap a new Upload or Download is refused with RESOURCE_EXHAUSTED,
so the server never dies of memory under load. The budget is taken where
bytes are buffered (the S3 store cuts parts under it); the stream cap needs
only the call, so it wraps any store. The same decorators hold the per-principal quota's slots
(``storage.quotas``), given those ``Slots`` instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Protocol

from blobgate.server.core.errors import ResourceExhausted
from blobgate.server.storage.byte_budget import ByteBudget as ByteBudget
from blobgate.server.storage.decorators import (
    ObjectReaderDecorator,
    ObjectStoreDecorator,
    SessionStoreDecorator,
)
from blobgate.server.storage.protocols import (
    ByteRange,
    Chunk,
    ObjectReader,
    ObjectRef,
    ObjectStore,
    PutOptions,
    Session,
    SessionStore,
    StoredObject,
)

Release = Callable[[], None]
"""Gives a taken slot back; calling it again does nothing."""


class Slots(Protocol):
    """Something that hands out transfer slots: the server-wide StreamLimit,
    or a per-principal quota (``storage.quotas``)."""

    def take(self) -> Release:
        """Take a slot, or raise ResourceExhausted when none is free."""
        ...


@contextlib.asynccontextmanager
async def holding(slots: Slots) -> AsyncIterator[None]:
    """Hold a slot of ``slots`` for the block."""
    release = slots.take()
    try:
        yield
    finally:
        release()


def once(release: Release) -> Release:
    """``release``, made safe to call more than once."""
    done = False

    def release_once() -> None:
        nonlocal done
        if not done:
            done = True
            release()

    return release_once


class StreamLimit:
    """At most ``limit`` transfer streams at once; more are refused, not queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def take(self) -> Release:
        if self.active >= self.limit:
            raise ResourceExhausted(
                f"the server is at its limit of {self.limit} concurrent transfers; retry later"
            )
        self.active += 1
        return once(self._give_back)

    def _give_back(self) -> None:
        self.active -= 1


class _SlotReader(ObjectReaderDecorator):
    """An ObjectReader that gives its transfer slot back when closed."""

    def __init__(self, inner: ObjectReader, release: Release) -> None:
        super().__init__(inner)
        self._release = release

    async def close(self) -> None:
        try:
            await self._inner.close()
        finally:
            self._release()


class StreamLimitedStore(ObjectStoreDecorator):
    """ObjectStore decorator: an upload (put) and a download (open until its
    reader is closed) each hold one of ``slots``' slots. Copy is a unary
    call whose bytes stay in S3: no slot."""

    def __init__(self, inner: ObjectStore, slots: Slots) -> None:
        super().__init__(inner)
        self._slots = slots

    async def put(
        self, ref: ObjectRef, body: AsyncIterable[Chunk], options: PutOptions
    ) -> StoredObject:
        async with holding(self._slots):
            return await self._inner.put(ref, body, options)

    async def open(self, ref: ObjectRef, byte_range: ByteRange, if_match: str) -> ObjectReader:
        release = self._slots.take()
        try:
            reader = await self._inner.open(ref, byte_range, if_match)
        except BaseException:
            release()
            raise
        return _SlotReader(reader, release)


class StreamLimitedSessions(SessionStoreDecorator):
    """SessionStore decorator: an Upload continuing a session holds a slot."""

    def __init__(self, inner: SessionStore, slots: Slots) -> None:
        super().__init__(inner)
        self._slots = slots

    async def resume_session(self, session: Session, body: AsyncIterable[Chunk]) -> StoredObject:
        async with holding(self._slots):
            return await self._inner.resume_session(session, body)
