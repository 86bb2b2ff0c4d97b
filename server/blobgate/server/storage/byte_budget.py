"""The memory budget: bytes that may be held in upload buffers at once,
across all streams (``memory_budget``), with a share per principal
(``memory_budget_per_principal``).

Budget is taken per part, as the part's bytes arrive: a part being filled
holds a ``Claim`` on ``size`` bytes that it covers in steps (``step``, 1 MiB
by default, or the message in hand if larger) as messages arrive, so a
stream that trickles holds only about what it has sent. A claim's bytes go
back when the part has been sent (or dropped).

Who is charged: the principal of the call (``identity.current_principal()``,
passed by the caller). Callers without an identity count as one principal,
the empty name; whether that principal is held to a share is the
``count_anonymous`` switch (the factory turns it on only when an identity
source is configured: without one every caller is the same nobody, and the
share would only shrink the whole budget).

Invariants, kept by every grant (a grant that would break one waits):

1. ``used <= limit`` and, for each principal held to a share,
   ``used_by[p] <= share``.
2. No deadlock. A part that is *open* (partly covered: ``0 < taken < size``)
   still needs ``size - taken``; a *whole* part (covered, or sealed when its
   stream ended) needs nothing more and goes back once sent to S3 (sending
   waits at most for the upload's parts in flight and its principal's S3
   places, ``s3.connection_shares``, neither of which waits on budget).
   After every grant, ``limit`` less what open parts hold is at least the
   smallest need of all open parts, and likewise each
   principal's share less what its open parts hold is at least the smallest
   need of its own open parts. So once the whole parts have been sent, the
   open part with the smallest need can be covered to its end without
   waiting for any other open part (only for its own client); covering it
   keeps the invariant, and once sent it returns a whole part, more than
   any other open part needs, and the argument repeats. A part that is
   partly buffered can therefore always finish; a new part starts only
   where that stays true.

Waiters are served fairly: principals with waiters take turns (round
robin), one grant per turn; within a principal, the rest of parts already
open go first (they are what frees budget), then new parts first come,
first served. A waiter held back by its own principal's share never holds
back other principals; a new part held back by the shared budget holds
back other principals' new parts (so a large number of small grants cannot
starve it), never the rest of open parts.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
from dataclasses import dataclass, field

MiB = 1024 * 1024
STEP = MiB
ANONYMOUS = ""
"""The principal that callers without an identity are counted as."""


@dataclass(eq=False)
class _Waiter:
    claim: Claim
    size: int
    granted: asyncio.Future[None] = field(repr=False)


class _OpenParts:
    """Open parts of a group (everyone's, or one principal's): the bytes they
    hold and their smallest need, kept as they change (a heap of needs; an
    entry whose part has since changed or closed is dropped when it reaches
    the top)."""

    def __init__(self) -> None:
        self.held = 0
        self.claims: dict[Claim, None] = {}
        self._needs: list[tuple[int, int, Claim]] = []

    def update(self, claim: Claim, held_before: int, held_now: int) -> None:
        self.held += held_now - held_before
        if held_now:
            self.claims[claim] = None
            heapq.heappush(self._needs, (claim.need, claim.number, claim))
            if len(self._needs) > 4 * len(self.claims) + 64:  # too many stale entries
                self._needs = [(c.need, c.number, c) for c in self.claims]
                heapq.heapify(self._needs)
        else:
            self.claims.pop(claim, None)

    def smallest(self) -> int | None:
        """The smallest need of an open part, None when none is open."""
        while self._needs:
            need, _, claim = self._needs[0]
            if claim in self.claims and claim.need == need:
                return need
            heapq.heappop(self._needs)
        return None


_numbers = itertools.count()


class Claim:
    """One part's claim on the budget: up to ``size`` bytes, covered as the
    part fills (``cover``), given back at once by ``release``."""

    def __init__(self, budget: ByteBudget, size: int, principal: str) -> None:
        self._budget = budget
        self.size = size
        self.principal = principal
        self.taken = 0
        self.sealed = False  # takes no more: its bytes only wait to go back
        self.held_open = 0  # what the budget counts as held by an open part
        self.number = next(_numbers)  # orders equal needs in the heaps

    @property
    def need(self) -> int:
        """Bytes still to cover before the part is whole (0 once sealed)."""
        return 0 if self.sealed else self.size - self.taken

    async def cover(self, filled: int) -> None:
        """Wait until at least ``filled`` bytes (<= size) are covered,
        taking at least a step (or the rest of the part) at a time."""
        short = filled - self.taken
        if short <= 0:
            return
        if self.sealed:
            raise RuntimeError("a sealed claim takes no more budget")
        await self._budget._take(self, min(self.size - self.taken, max(short, self._budget.step)))

    def seal(self) -> None:
        """The part is complete (its stream ended): it takes no more budget
        and keeps what it holds until ``release``."""
        if not self.sealed:
            self.sealed = True
            self._budget._closed(self)

    def release(self) -> None:
        """Give every covered byte back; calling it again does nothing."""
        self.seal()
        taken, self.taken = self.taken, 0
        if taken:
            self._budget._give_back(self.principal, taken)


class ByteBudget:
    """``limit`` bytes across all parts being filled or sent, at most
    ``share`` of them held by one principal (see the module docstring)."""

    def __init__(
        self,
        limit: int,
        share: int | None = None,
        *,
        step: int = STEP,
        count_anonymous: bool = True,
    ) -> None:
        if share is not None and not 0 < share <= limit:
            raise ValueError(f"a principal's share {share} must be between 1 and {limit}")
        self.limit = limit
        self.share = limit if share is None else share
        self.step = step
        self.count_anonymous = count_anonymous
        self.used = 0
        self.peak = 0
        self.used_by: collections.Counter[str] = collections.Counter()
        self._open = _OpenParts()  # everyone's open parts
        self._open_by: dict[str, _OpenParts] = {}  # each principal's open parts
        # Principals with waiters, in turn order; each principal's waiters in order.
        self._waiting: dict[str, collections.deque[_Waiter]] = {}

    def claim(self, size: int, principal: str | None) -> Claim:
        """A claim for one part of ``size`` bytes (at most ``share``), charged
        to ``principal`` (None: a caller without an identity). It holds
        nothing until covered."""
        if size > self.share:
            raise ValueError(f"a part of {size} bytes is larger than a share of {self.share}")
        return Claim(self, size, ANONYMOUS if principal is None else principal)

    def share_of(self, principal: str) -> int:
        """What ``principal`` may hold at once."""
        if principal == ANONYMOUS and not self.count_anonymous:
            return self.limit
        return self.share

    # --- grants ---------------------------------------------------------------

    def _fits_share(self, claim: Claim, size: int) -> bool:
        """Invariants 1 and 2 for the claim's principal, after ``size`` more."""
        principal = claim.principal
        share = self.share_of(principal)
        if self.used_by[principal] + size > share:
            return False
        return self._safe(claim, size, share, self._open_by.get(principal))

    def _fits_budget(self, claim: Claim, size: int) -> bool:
        """Invariants 1 and 2 for the whole budget, after ``size`` more."""
        if self.used + size > self.limit:
            return False
        return self._safe(claim, size, self.limit, self._open)

    @staticmethod
    def _safe(claim: Claim, size: int, limit: int, group: _OpenParts | None) -> bool:
        """Invariant 2 after ``size`` more for ``claim``: ``limit`` less what
        the group's open parts hold covers the smallest need of one. Whole
        parts are left out: they go back once sent, needing nothing more.
        The smallest need is read before the grant, the claim's own current
        need included: never less strict than after it, and different only
        when the claim itself has the smallest need, which the invariant
        lets go on to its end in any case."""
        taken = claim.taken + size
        held = 0 if group is None else group.held - claim.held_open
        smallest = None if group is None else group.smallest()
        if taken < claim.size:
            held += taken
            left = claim.size - taken
            smallest = left if smallest is None else min(smallest, left)
        return smallest is None or limit - held >= smallest

    def _grant(self, claim: Claim, size: int) -> None:
        claim.taken += size
        self.used += size
        self.used_by[claim.principal] += size
        self.peak = max(self.peak, self.used)
        self._track(claim)

    def _track(self, claim: Claim) -> None:
        """Count the claim among the open parts while it is partly covered."""
        before = claim.held_open
        now = claim.taken if 0 < claim.taken < claim.size and not claim.sealed else 0
        if now == before and not now:
            return
        claim.held_open = now
        self._open.update(claim, before, now)
        group = self._open_by.get(claim.principal)
        if group is None:
            group = self._open_by[claim.principal] = _OpenParts()
        group.update(claim, before, now)
        if not group.claims:
            del self._open_by[claim.principal]

    def _fits(self, waiter: _Waiter) -> bool:
        return self._fits_share(waiter.claim, waiter.size) and self._fits_budget(
            waiter.claim, waiter.size
        )

    def _pick(self, waiters: collections.deque[_Waiter], new_parts: bool) -> _Waiter | bool:
        """A principal's next waiter: the first open part's rest that fits,
        else its first new part (if ``new_parts``) when it fits. Else True
        when that new part is held back by the shared budget alone, False
        when there is nothing to grant."""
        live = [waiter for waiter in waiters if not waiter.granted.done()]  # not cancelled
        for waiter in live:
            if waiter.claim.taken and self._fits(waiter):
                return waiter
        head = next((w for w in live if not w.claim.taken), None)
        if head is None or not new_parts or not self._fits_share(head.claim, head.size):
            return False
        return head if self._fits_budget(head.claim, head.size) else True

    def _serve(self) -> None:
        """Grant what fits, one waiter per principal per turn."""
        granted = True
        while granted and self._waiting:
            granted = False
            new_parts = True
            for principal in list(self._waiting):
                waiters = self._waiting[principal]
                waiter = self._pick(waiters, new_parts)
                if waiter is True:
                    new_parts = False  # later principals' new parts wait behind it
                if isinstance(waiter, bool):
                    continue
                waiters.remove(waiter)
                self._grant(waiter.claim, waiter.size)
                waiter.granted.set_result(None)
                del self._waiting[principal]
                if waiters:
                    self._waiting[principal] = waiters  # to the end of the turn order
                granted = True

    async def _take(self, claim: Claim, size: int) -> None:
        """Take ``size`` more bytes for ``claim``, in its principal's turn."""
        if not self._waiting and self._fits_share(claim, size) and self._fits_budget(claim, size):
            self._grant(claim, size)  # nobody waits: no turn to keep
            return
        waiter = _Waiter(claim, size, asyncio.get_running_loop().create_future())
        self._waiting.setdefault(claim.principal, collections.deque()).append(waiter)
        self._serve()
        if waiter.granted.done():
            return
        try:
            await waiter.granted
        except BaseException:
            if waiter.granted.done() and not waiter.granted.cancelled():
                # Granted just as the waiter was cancelled: give it back.
                claim.taken -= size
                self._track(claim)
                self._give_back(claim.principal, size)
            else:
                self._drop(waiter)
                self._serve()
            raise

    def _drop(self, waiter: _Waiter) -> None:
        waiters = self._waiting.get(waiter.claim.principal)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._waiting[waiter.claim.principal]

    # --- returns --------------------------------------------------------------

    def _closed(self, claim: Claim) -> None:
        self._track(claim)
        self._serve()  # its need no longer counts

    def _give_back(self, principal: str, size: int) -> None:
        self.used -= size
        self.used_by[principal] -= size
        if self.used_by[principal] <= 0:
            del self.used_by[principal]
        self._serve()
