"""Bounds on concurrent unary StorageService calls: at most
``max_list_calls`` Lists and ``max_unary_calls`` other unary calls run at
once, each kind waiting in its own line for at most ``unary_queue_timeout``
seconds. Streams are bounded by the stream cap (``storage.limits``)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from blobgate.server.core.errors import ResourceExhausted
from blobgate.server.rpc.interceptors import Behaviour, Handler, MethodInterceptor, rewrap
from blobgate.server.rpc.status_codes import Context


class _CallLimit:
    """At most ``limit`` calls at once; the rest wait in arrival order for up
    to ``queue_timeout`` seconds, then are refused with RESOURCE_EXHAUSTED."""

    def __init__(self, what: str, limit: int, queue_timeout: float) -> None:
        self._what = what
        self._slots = asyncio.Semaphore(limit)
        self._queue_timeout = queue_timeout

    async def run(self, call: Coroutine[Any, Any, Any]) -> Any:
        try:
            if self._slots.locked():  # a free slot is taken at once, with no timer
                async with asyncio.timeout(self._queue_timeout):
                    await self._slots.acquire()
            else:
                await self._slots.acquire()
        except TimeoutError:
            call.close()  # never started
            raise ResourceExhausted(
                f"the server is busy with {self._what}: retry later, with backoff"
            ) from None
        try:
            return await call
        finally:
            self._slots.release()


class UnaryLimitInterceptor(MethodInterceptor):
    """Bounds the StorageService's unary calls, List apart from the rest: a
    flood of large listings queues behind its own limit and cannot make
    another caller's Stat wait for it. Streams are bounded by the stream
    cap (storage.limits); health is never limited."""

    def __init__(self, max_lists: int, max_others: int, queue_timeout: float) -> None:
        super().__init__()
        self._lists = _CallLimit("listings", max_lists, queue_timeout)
        self._others = _CallLimit("calls", max_others, queue_timeout)

    def applies(self, handler: Handler) -> bool:
        return handler.unary_unary is not None

    def wrap(self, handler: Handler, method: str) -> Handler:
        limit = self._lists if method == "List" else self._others

        def limited(behaviour: Behaviour) -> Behaviour:
            async def call(request: Any, context: Context) -> Any:
                return await limit.run(behaviour(request, context))

            return call

        return rewrap(handler, limited)


__all__ = ["UnaryLimitInterceptor"]
