"""Bounds on concurrent unary StorageService calls: at most
``max_list_calls`` Lists and ``max_unary_calls`` other unary calls run at
once, each kind waiting in its own line for at most ``unary_queue_timeout``
seconds. An identified caller also holds at most its share of each kind
(``max_list_calls_per_principal``, ``max_unary_calls_per_principal``): past
it, its calls wait in a line of their own, holding none of the shared
slots, so one caller's slow or stalled calls cannot make every other
caller wait. Streams are bounded by the stream cap (``storage.limits``)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from blobgate.server.core.errors import ResourceExhausted
from blobgate.server.core.identity import current_principal
from blobgate.server.rpc.interceptors import Behaviour, Handler, MethodInterceptor, rewrap
from blobgate.server.rpc.status_codes import Context


class _PrincipalLine:
    """One caller's share of a limit, and how many of its calls use it (the
    line is dropped when none does)."""

    def __init__(self, share: int) -> None:
        self.slots = asyncio.Semaphore(share)
        self.calls = 0


async def _take(wanted: list[asyncio.Semaphore], taken: list[asyncio.Semaphore]) -> None:
    """Acquire ``wanted`` in order, noting each in ``taken`` as it is held."""
    for slots in wanted:
        await slots.acquire()
        taken.append(slots)


class _CallLimit:
    """At most ``limit`` calls at once, and at most ``per_principal`` of one
    identified caller; the rest wait in arrival order for up to
    ``queue_timeout`` seconds in all, then are refused with
    RESOURCE_EXHAUSTED. A caller first waits for its own share, then for a
    shared slot, so a caller at its share waits without holding one."""

    def __init__(self, what: str, limit: int, per_principal: int, queue_timeout: float) -> None:
        self._what = what
        self._slots = asyncio.Semaphore(limit)
        self._per_principal = per_principal
        self._lines: dict[str, _PrincipalLine] = {}
        self._queue_timeout = queue_timeout

    async def run(self, call: Coroutine[Any, Any, Any]) -> Any:
        principal = current_principal()
        if principal is None:
            return await self._run(call, None)
        line = self._lines.get(principal)
        if line is None:
            line = self._lines[principal] = _PrincipalLine(self._per_principal)
        line.calls += 1
        try:
            return await self._run(call, line.slots)
        finally:
            line.calls -= 1
            if not line.calls:
                del self._lines[principal]

    async def _run(self, call: Coroutine[Any, Any, Any], own: asyncio.Semaphore | None) -> Any:
        wanted = [slots for slots in (own, self._slots) if slots is not None]
        taken: list[asyncio.Semaphore] = []
        try:
            if any(slots.locked() for slots in wanted):
                async with asyncio.timeout(self._queue_timeout):
                    await _take(wanted, taken)
            else:
                await _take(wanted, taken)  # free slots: at once, with no timer
        except TimeoutError:
            call.close()  # never started
            for slots in taken:
                slots.release()
            if own is not None and own not in taken:
                raise ResourceExhausted(
                    f"this caller has as many {self._what} open as its share allows: "
                    "retry later, with backoff"
                ) from None
            raise ResourceExhausted(
                f"the server is busy with {self._what}: retry later, with backoff"
            ) from None
        except BaseException:
            call.close()
            for slots in taken:
                slots.release()
            raise
        try:
            return await call
        finally:
            for slots in taken:
                slots.release()


class UnaryLimitInterceptor(MethodInterceptor):
    """Bounds the StorageService's unary calls, List apart from the rest: a
    flood of large listings queues behind its own limit and cannot make
    another caller's Stat wait for it. Streams are bounded by the stream
    cap (storage.limits); health is never limited."""

    def __init__(
        self,
        max_lists: int,
        max_others: int,
        queue_timeout: float,
        *,
        lists_per_principal: int | None = None,
        others_per_principal: int | None = None,
    ) -> None:
        super().__init__()
        self._lists = _CallLimit(
            "listings", max_lists, lists_per_principal or max_lists, queue_timeout
        )
        self._others = _CallLimit(
            "calls", max_others, others_per_principal or max_others, queue_timeout
        )

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
