"""Blocking queries: a query with ``?index=`` waits until what it watches
changes past that index, or until its ``?wait=`` ends."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

DEFAULT_WAIT = 300.0  # blocking queries: 5 minutes unless ?wait= says otherwise
MAX_WAIT = 600.0  # ... and never more than 10 minutes (plus wait/16 jitter)


class ChangeFeed:
    """Wakes every blocked query whenever the catalog changes (they re-check
    their index)."""

    def __init__(self) -> None:
        self._changed: asyncio.Event | None = None

    def open(self) -> None:
        """A fresh event in the agent's loop, at every start."""
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Wake the queries blocked now (agent loop only)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def block(self, current_index: Callable[[], int], min_index: int, wait: float) -> None:
        """Hold a blocking query until current_index() passes min_index or the
        wait (capped at 10 minutes, plus up to wait/16 jitter) ends."""
        if wait <= 0:
            wait = DEFAULT_WAIT
        wait = min(wait, MAX_WAIT)
        wait += random.uniform(0, wait / 16)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while current_index() <= min_index:
            remaining = deadline - loop.time()
            changed = self._changed
            if remaining <= 0 or changed is None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
