"""Fair use of the transfers pool (``s3_max_connections``): at most
``share`` S3 data requests (part uploads, small uploads' PutObject, GETs of
downloads) of one principal at once (``s3_connections_per_principal``);
more of that principal's requests wait, first come first served, while other
principals' requests go on. A download's GET holds its place until the
reader is closed, as it holds its connection.

Callers without an identity count as one principal, the empty name, when
``count_anonymous`` (an identity source is configured); otherwise they are
not limited here, only by the pool itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from blobgate.server.core.identity import current_principal

Release = Callable[[], None]


def _nothing() -> None:
    """The release of a request that took no place."""


class ConnectionShares:
    """Per-principal places on the transfers pool."""

    def __init__(self, share: int, *, count_anonymous: bool = True) -> None:
        self.share = share
        self.count_anonymous = count_anonymous
        self._places: dict[str, asyncio.Semaphore] = {}
        self._holders: dict[str, int] = {}  # holders and waiters, to drop idle principals
        self.active: dict[str, int] = {}  # places held now, by principal

    async def take(self) -> Release:
        """Wait for a place of the current principal; the release (safe to
        call more than once)."""
        principal = current_principal()
        if principal is None:
            if not self.count_anonymous:
                return _nothing
            principal = ""
        places = self._places.get(principal)
        if places is None:
            places = self._places[principal] = asyncio.Semaphore(self.share)
        self._holders[principal] = self._holders.get(principal, 0) + 1
        try:
            await places.acquire()
        except BaseException:
            self._leave(principal)
            raise
        self.active[principal] = self.active.get(principal, 0) + 1
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                self.active[principal] -= 1
                if not self.active[principal]:
                    del self.active[principal]
                places.release()
                self._leave(principal)

        return release

    def _leave(self, principal: str) -> None:
        self._holders[principal] -= 1
        if not self._holders[principal]:
            del self._holders[principal]
            del self._places[principal]

    @contextlib.asynccontextmanager
    async def holding(self) -> AsyncIterator[None]:
        """Hold a place of the current principal for the block."""
        release = await self.take()
        try:
            yield
        finally:
            release()
