"""Retries of a call, with tenacity's loop and jittered exponential backoff.

A call gets a ``CallBudget``: attempts, a deadline, and the addresses that
already failed it (the next attempt goes elsewhere if it can). ``retry_call``
repeats an attempt while the failure is ``BlobgateError.retryable`` (for a
call that is not idempotent, only while it is ``unsent``: no server saw it),
an attempt is left and the pause ends before the deadline. One budget can span
several ``retry_call`` runs: a download reopened after its stream broke, a
resumable upload that refunds the attempts that made progress.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_exponential,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from blobgate.client.errors import BlobgateError, translate_errors
from blobgate.client.transport import Endpoint, Transport
from blobgate.client.wire import call_metadata

log = logging.getLogger(__name__)

T = TypeVar("T")


def equal_jitter(base: float, cap: float) -> wait_base:
    """Pauses that double from ``base`` up to ``cap`` seconds, each drawn
    uniformly from the upper half of its step ("equal jitter"), so that
    clients that failed together do not retry together, yet never retry in a
    tight loop: half the step fixed, plus up to half of it at random."""
    return wait_exponential(multiplier=base / 2, max=cap / 2) + wait_random_exponential(
        multiplier=base / 2, max=cap / 2
    )


# Pauses between attempts of an idempotent call: about 0.1, 0.2, 0.4 s.
RETRY_WAIT = equal_jitter(0.1, 2.0)


class GiveUp(Exception):
    """Raised by an attempt to end the call with ``error`` (raised from its
    ``__cause__``), retryable or not."""

    def __init__(self, error: BlobgateError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class CallBudget:
    """What the attempts of one call may still use."""

    attempts: int
    deadline: float | None  # time.monotonic() value
    tried: set[str] = field(default_factory=set)  # addresses that failed
    failed_at: str | None = None  # the address of the attempt that just failed

    @classmethod
    def start(cls, timeout: float | None, attempts: int) -> CallBudget:
        """The budget of a call starting now."""
        return cls(attempts, None if timeout is None else time.monotonic() + timeout)

    def remaining(self) -> float | None:
        """Seconds left until the deadline (None: no deadline)."""
        return None if self.deadline is None else max(self.deadline - time.monotonic(), 0.0)

    def exhausted(self, state: RetryCallState) -> bool:
        """Whether to stop: no attempt left, or the deadline passes during the pause."""
        remaining = self.remaining()
        return self.attempts <= 0 or (remaining is not None and state.upcoming_sleep >= remaining)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, BlobgateError) and exc.retryable


def _unsent(exc: BaseException) -> bool:
    return isinstance(exc, BlobgateError) and exc.retryable and exc.unsent


async def retry_call(
    budget: CallBudget,
    attempt: Callable[[], Awaitable[T]],
    *,
    target: str,
    after: BlobgateError | None = None,
    idempotent: bool = True,
) -> T:
    """Run ``attempt`` until it succeeds or fails for good (the last error
    is raised). ``after`` is a failure that happened before this run (a
    broken download): it counts as the first attempt, so the run starts with
    a pause, or raises it when no retry is left. ``target`` names the
    destination in log messages when no address failed. A call that is not
    ``idempotent`` is retried only after failures that are ``unsent``."""

    def before_sleep(state: RetryCallState) -> None:
        if budget.failed_at is not None:
            budget.tried.add(budget.failed_at)
        exc = state.outcome.exception() if state.outcome is not None else None
        log.debug(
            "%s: %s; retrying in %.2fs", budget.failed_at or target, exc, state.upcoming_sleep
        )

    retrying = AsyncRetrying(
        retry=retry_if_exception(_retryable if idempotent else _unsent),
        wait=RETRY_WAIT,
        stop=budget.exhausted,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        async for try_ in retrying:
            with try_:
                if after is not None:
                    failure, after = after, None
                    raise failure
                return await attempt()
    except GiveUp as give_up:
        raise give_up.error from give_up.error.__cause__
    raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover


async def retry_unary(transport: Transport, budget: CallBudget, method: str, request: Any) -> Any:
    """Call the unary ``method`` with retries (all of them are idempotent)."""

    async def use(endpoint: Endpoint, time_left: float | None) -> Any:
        call = getattr(endpoint.stub, method)
        return await call(request, timeout=time_left, metadata=call_metadata())

    return await retry_call(
        budget, lambda: on_endpoint(transport, budget, use), target=transport.target
    )


async def connected(transport: Transport, budget: CallBudget) -> Endpoint:
    """A connected endpoint for a call that is not idempotent: the transport
    is asked again while ``budget`` allows, for its failures are ``unsent``.
    The caller releases the endpoint."""

    async def attempt() -> Endpoint:
        budget.attempts -= 1
        return await transport.acquire(budget.tried, budget.remaining())

    return await retry_call(budget, attempt, target=transport.target, idempotent=False)


async def on_endpoint(
    transport: Transport,
    budget: CallBudget,
    use: Callable[[Endpoint, float | None], Awaitable[T]],
    *,
    keep: bool = False,
) -> T:
    """One attempt: take an endpoint from ``transport`` (one not tried yet
    if possible) and ``use`` it within the time left. The endpoint goes back
    when ``use`` ends, unless it succeeded and ``keep`` is set: then the
    caller releases it (a download, once its stream ends)."""
    budget.attempts -= 1
    budget.failed_at = None
    endpoint = await transport.acquire(budget.tried, budget.remaining())
    budget.failed_at = endpoint.address
    try:
        with translate_errors():
            result = await use(endpoint, budget.remaining())
    except BaseException as exc:
        transport.release(endpoint, exc if isinstance(exc, BlobgateError) else None)
        raise
    if not keep:
        transport.release(endpoint)
    return result
