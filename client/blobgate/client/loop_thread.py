"""An event loop in a background thread, and blocking calls into it: what a
``SyncClient`` runs its ``Client`` on."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import grpc

from blobgate.client.errors import BlobgateError

T = TypeVar("T")

_names = itertools.count(1)


class LoopThread:
    """A private event loop running in a daemon thread until ``stop``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name=f"blobgate-sync-{next(_names)}", daemon=True
        )
        self.thread.start()
        self.stopped = False

    def on_thread(self) -> bool:
        """Whether the caller runs on the loop's own thread."""
        return threading.current_thread() is self.thread

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result; an interrupt
        (Ctrl-C) while waiting cancels it there."""
        if self.stopped:
            coro.close()
            raise BlobgateError(grpc.StatusCode.CANCELLED, "client is closed")
        if self.on_thread():
            coro.close()
            raise RuntimeError("a SyncClient cannot be called from its own callbacks")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise BlobgateError(grpc.StatusCode.CANCELLED, "call cancelled") from None
        except BaseException:
            future.cancel()
            raise

    def run_unless_stopped(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` unless the loop stopped (which ended it already)."""
        if self.stopped:
            coro.close()
            return
        self.run(coro)

    def stop(self) -> None:
        """Stop the loop, wait for its thread and close it."""
        self.stopped = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()
