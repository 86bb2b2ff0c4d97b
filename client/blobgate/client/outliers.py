"""Outlier ejection: instances that cannot serve are taken out of the
rotation for a while.

An instance is ejected at once when a connection to it cannot be set up (TCP
refused or timed out, a TLS handshake the client rejects, no HTTP/2 answer),
and after ``after`` calls in a row that it failed with UNAVAILABLE (or a lost
status, or a cancellation of its own). An ejection lasts ``base`` seconds,
doubling with each ejection in a row up to ``cap``; when it ends the
instance is on probation: one more failure ejects it again, for longer,
while one call it serves clears its record. Each ejection is logged once, at
WARNING, with the instance and why.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EjectionPolicy:
    """When an instance is ejected, and for how long (see the module)."""

    after: int
    base: float
    cap: float

    def duration(self, ejections: int) -> float:
        """The length of the ``ejections``-th ejection in a row (from 1)."""
        return float(min(self.base * 2 ** min(ejections - 1, 32), self.cap))


@dataclass
class _Record:
    """What an instance has failed lately."""

    failures: int = 0  # calls in a row it failed
    ejections: int = 0  # ejections in a row: the exponent of the next one's length
    until: float = -math.inf  # ejected until (the clock's time)
    failed_at: float = -math.inf  # its latest failure
    reason: str = ""  # why it was last ejected


class Outliers:
    """The failure records of a client's instances, by address."""

    def __init__(self, policy: EjectionPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._records: dict[str, _Record] = {}

    def ejected(self, address: str) -> bool:
        """Whether ``address`` is out of the rotation now."""
        record = self._records.get(address)
        return record is not None and record.until > self._clock()

    def ejections(self) -> dict[str, str]:
        """The addresses ejected now, and why."""
        now = self._clock()
        return {a: r.reason for a, r in self._records.items() if r.until > now}

    def last_failure(self, address: str) -> float:
        """When ``address`` last failed (the clock's time; -inf: never)."""
        record = self._records.get(address)
        return record.failed_at if record is not None else -math.inf

    def connect_failed(self, address: str, why: str) -> None:
        """A connection to ``address`` could not be set up: eject it."""
        record = self._records.setdefault(address, _Record())
        record.failed_at = self._clock()
        self._eject(address, record, f"no connection: {why}")

    def call_failed(self, address: str, why: str) -> None:
        """A call on ``address`` failed as an instance that cannot serve
        fails (UNAVAILABLE...): eject it after ``after`` in a row, or at once
        on probation."""
        record = self._records.setdefault(address, _Record())
        record.failed_at = self._clock()
        record.failures += 1
        if record.failures >= self.policy.after or record.ejections:
            self._eject(address, record, f"{record.failures} call(s) in a row failed: {why}")

    def call_served(self, address: str) -> None:
        """``address`` answered a call: its record is cleared."""
        record = self._records.pop(address, None)
        if record is not None and record.ejections:
            log.info("blobgate instance %s serves again", address)

    def keep_only(self, addresses: Iterable[str]) -> None:
        """Forget the records of every address but ``addresses``."""
        kept = set(addresses)
        for address in [a for a in self._records if a not in kept]:
            del self._records[address]

    def _eject(self, address: str, record: _Record, why: str) -> None:
        now = self._clock()
        if record.until > now:
            # Still ejected (a call that was already running, or the last
            # resort when every instance is ejected): no new ejection, but
            # the current one lasts as long as a new one would.
            record.until = max(record.until, now + self.policy.duration(record.ejections))
            log.debug("blobgate instance %s, ejected, failed again: %s", address, why)
            return
        record.ejections += 1
        record.failures = 0
        record.reason = why
        duration = self.policy.duration(record.ejections)
        record.until = now + duration
        log.warning(
            "blobgate instance %s ejected for %gs (ejection %d in a row): %s",
            address,
            duration,
            record.ejections,
            why,
        )
