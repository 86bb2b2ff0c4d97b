"""Server-wide limits: a budget of bytes buffered across all uploads, and a
cap on concurrent transfer streams.

Past the byte budget an upload waits before taking more data, so gRPC flow
control slows its client (backpressure); past the stream cap a new Upload or
Download is refused with RESOURCE_EXHAUSTED, so the server never dies of
memory under load.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from blobgate.server.errors import ResourceExhausted


class ByteBudget:
    """Bytes that may be held in upload buffers at once, across all streams."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._freed = asyncio.Condition()

    async def acquire(self, size: int) -> None:
        """Wait until ``size`` more bytes fit. A request larger than the whole
        budget waits for an empty budget instead of forever."""
        async with self._freed:
            await self._freed.wait_for(lambda: self.used + size <= self.limit or self.used == 0)
            self.used += size
            self.peak = max(self.peak, self.used)

    async def release(self, size: int) -> None:
        if size <= 0:
            return
        async with self._freed:
            self.used -= size
            self._freed.notify_all()


class StreamLimit:
    """At most ``limit`` transfer streams at once; more are refused, not queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.active >= self.limit:
            raise ResourceExhausted(
                f"the server is at its limit of {self.limit} concurrent transfers; retry later"
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
