"""The agent thread's event loop, as the other threads reach it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable


class AgentLoop:
    """The running agent's loop and thread, or nothing while it is stopped."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread_id: int | None = None

    def enter(self) -> None:
        """Take the running loop and this thread as the agent's (at start)."""
        self.loop = asyncio.get_running_loop()
        self.thread_id = threading.get_ident()

    def leave(self) -> None:
        """Forget them (the loop is about to close)."""
        self.loop = None
        self.thread_id = None

    def inside(self) -> bool:
        """Whether the caller runs in the agent's loop."""
        return self.thread_id == threading.get_ident()

    def call(self, fn: Callable[[], object]) -> None:
        """Run fn in the agent's loop now (from the loop) or soon (elsewhere)."""
        if self.inside():
            fn()
            return
        loop = self.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(fn)
