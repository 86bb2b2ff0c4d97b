"""Server-wide limits: a budget of bytes buffered across all uploads, and a
cap on concurrent transfer streams, the latter as store decorators.

Past the byte budget an upload waits before taking more data, so gRPC flow
control slows its client (backpressure); past the stream cap a new Upload or
Download is refused with RESOURCE_EXHAUSTED, so the server never dies of
memory under load. The budget is taken where bytes are buffered (the S3
store cuts parts under it); the stream cap needs only the call, so it wraps
any store.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterable, AsyncIterator

from blobgate.server.errors import ResourceExhausted
from blobgate.server.storage.decorators import ObjectStoreDecorator, SessionStoreDecorator
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


class ByteBudget:
    """Bytes that may be held in upload buffers at once, across all streams.
    Waiters are served first come, first served, so a stream that asked
    earlier is never overtaken by later ones."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def _fits(self, size: int) -> bool:
        # A request larger than the whole budget waits for an empty budget
        # instead of forever.
        return self.used + size <= self.limit or self.used == 0

    def _take(self, size: int) -> None:
        self.used += size
        self.peak = max(self.peak, self.used)

    def _grant_waiting(self) -> None:
        while self._waiting:
            size, granted = self._waiting[0]
            if granted.done():  # its waiter was cancelled
                self._waiting.popleft()
                continue
            if not self._fits(size):
                return
            self._waiting.popleft()
            self._take(size)
            granted.set_result(None)

    async def acquire(self, size: int) -> None:
        """Wait until ``size`` more bytes fit, behind everyone already waiting."""
        if not self._waiting and self._fits(size):
            self._take(size)
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append((size, granted))
        try:
            await granted
        except BaseException:
            if granted.done() and not granted.cancelled():
                self._give_back(size)  # granted as the waiter was cancelled
            else:
                granted.cancel()
                self._grant_waiting()
            raise

    def _give_back(self, size: int) -> None:
        self.used -= size
        self._grant_waiting()

    async def release(self, size: int) -> None:
        if size > 0:
            self._give_back(size)


class StreamLimit:
    """At most ``limit`` transfer streams at once; more are refused, not queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def take(self) -> None:
        """Take a slot, or raise ResourceExhausted when none is free."""
        if self.active >= self.limit:
            raise ResourceExhausted(
                f"the server is at its limit of {self.limit} concurrent transfers; retry later"
            )
        self.active += 1

    def give_back(self) -> None:
        self.active -= 1

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.take()
        try:
            yield
        finally:
            self.give_back()


class _SlotReader:
    """An ObjectReader that gives its transfer slot back when closed."""

    def __init__(self, inner: ObjectReader, streams: StreamLimit) -> None:
        self._inner = inner
        self._streams: StreamLimit | None = streams
        self.info = inner.info

    def chunks(self, size: int) -> AsyncIterator[list[bytes]]:
        return self._inner.chunks(size)

    async def close(self) -> None:
        try:
            await self._inner.close()
        finally:
            if self._streams is not None:
                self._streams.give_back()
                self._streams = None


class StreamLimitedStore(ObjectStoreDecorator):
    """ObjectStore decorator: an upload (put) and a download (open until its
    reader is closed) each hold one of ``streams``' slots. Copy is a unary
    call whose bytes stay in S3: no slot."""

    def __init__(self, inner: ObjectStore, streams: StreamLimit) -> None:
        super().__init__(inner)
        self._streams = streams

    async def put(
        self, ref: ObjectRef, body: AsyncIterable[Chunk], options: PutOptions
    ) -> StoredObject:
        async with self._streams.slot():
            return await self._inner.put(ref, body, options)

    async def open(self, ref: ObjectRef, byte_range: ByteRange, if_match: str) -> ObjectReader:
        self._streams.take()
        try:
            reader = await self._inner.open(ref, byte_range, if_match)
        except BaseException:
            self._streams.give_back()
            raise
        return _SlotReader(reader, self._streams)


class StreamLimitedSessions(SessionStoreDecorator):
    """SessionStore decorator: an Upload continuing a session holds a slot."""

    def __init__(self, inner: SessionStore, streams: StreamLimit) -> None:
        super().__init__(inner)
        self._streams = streams

    async def resume_session(self, session: Session, body: AsyncIterable[Chunk]) -> StoredObject:
        async with self._streams.slot():
            return await self._inner.resume_session(session, body)
