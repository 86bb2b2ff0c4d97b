"""Running a benchmark under one deadline, and how a failed run ends."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

import grpc

from bench.common.errors import BenchError

T = TypeVar("T")
# What ends a run with exit status 1 (beside a run's own ``failures``).
FAILURES: tuple[type[Exception], ...] = (BenchError, TimeoutError, OSError, grpc.aio.AioRpcError)


async def bounded(run: Awaitable[T], within: float) -> T:
    """The whole run under one deadline; SIGTERM cancels it like Ctrl-C does."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await asyncio.wait_for(run, within)


def run_bounded(
    run: Coroutine[Any, Any, T], within: float, what: str, timed_out: str = "timed out",
    failures: tuple[type[Exception], ...] = (),
) -> T:  # fmt: skip
    """Run ``run`` under one deadline; on a failure (one of FAILURES or
    ``failures``) or an interrupt, say so and exit (1, or 130 when interrupted)
    after its subprocesses stopped. ``timed_out`` is said of a failure
    without a message (a timeout)."""
    caught = FAILURES + failures
    try:
        return asyncio.run(bounded(run, within))
    except caught as exc:
        print(f"\n{what} failed: {type(exc).__name__}: {str(exc) or timed_out}", file=sys.stderr)
        raise SystemExit(1) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; subprocesses stopped", file=sys.stderr)
        raise SystemExit(130) from None
