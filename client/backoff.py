"""Jittered exponential backoff, shared by call retries and the Consul watch.

A dozen lines of our own rather than a dependency: the retry loops around it
(which instance to try next, the call's deadline, which errors count) are
ours either way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays that double from ``base`` up to ``cap`` seconds, each drawn
    uniformly from the upper half of its step ("equal jitter"), so that
    clients that failed together do not retry together, yet never retry in a
    tight loop."""

    base: float
    cap: float

    def delay(self, failures: int) -> float:
        """The pause after ``failures`` consecutive failures (1 or more)."""
        step = min(self.cap, self.base * 2 ** max(failures - 1, 0))
        return random.uniform(step / 2, step)
