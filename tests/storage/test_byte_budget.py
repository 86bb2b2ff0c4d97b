"""The memory budget (storage.byte_budget): a share per principal, budget
taken as a part's bytes arrive, turns by principal, and no deadlock between
parts that are partly buffered."""

from __future__ import annotations

import asyncio
import random

import pytest

from blobgate.server.storage.byte_budget import ByteBudget, Claim


async def _covered(claim: Claim, filled: int) -> Claim:
    await claim.cover(filled)
    return claim


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_principal_at_its_share_waits_while_others_go_on() -> None:
    budget = ByteBudget(16, 4, step=1)
    held = [await _covered(budget.claim(4, "greedy"), 4)]
    more = asyncio.create_task(_covered(budget.claim(4, "greedy"), 1))
    await _settle()
    assert not more.done() and budget.used_by["greedy"] == 4
    # Another principal is not held back by the greedy one's waiter.
    other = await asyncio.wait_for(_covered(budget.claim(4, "other"), 4), 1)
    assert budget.used == 8
    held[0].release()
    await asyncio.wait_for(more, 1)
    other.release()
    (await more).release()
    assert budget.used == 0 and not budget.used_by


async def test_principals_with_waiters_take_turns() -> None:
    """Three waiters of one principal queued before one of another: the
    grants alternate between the principals, each principal's in order."""
    budget = ByteBudget(5, step=1)
    full = await _covered(budget.claim(5, "x"), 5)
    order: list[str] = []
    granted: list[Claim] = []

    async def wait(name: str, principal: str) -> None:
        claim = budget.claim(1, principal)
        await claim.cover(1)
        order.append(name)
        granted.append(claim)

    tasks = [asyncio.create_task(wait(f"a{i}", "a")) for i in range(3)]
    await _settle()
    tasks.append(asyncio.create_task(wait("b0", "b")))
    await _settle()
    tasks.append(asyncio.create_task(wait("c0", "c")))
    await _settle()
    full.release()  # room for all five, granted by turns
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert order == ["a0", "b0", "c0", "a1", "a2"]
    for claim in granted:
        claim.release()
    assert budget.used == 0


async def test_one_principals_new_parts_are_served_in_order() -> None:
    budget = ByteBudget(10, step=1)
    holders = [await _covered(budget.claim(3, "p"), 3), await _covered(budget.claim(7, "p"), 7)]
    order: list[str] = []

    async def wait(name: str, size: int) -> Claim:
        claim = await _covered(budget.claim(size, "p"), size)
        order.append(name)
        return claim

    first = asyncio.create_task(wait("first", 8))
    await _settle()
    gone = asyncio.create_task(wait("cancelled", 2))
    await _settle()
    small = asyncio.create_task(wait("small", 2))
    await _settle()
    gone.cancel()
    holders[0].release()  # 2 would fit "small", but "first" came earlier
    await _settle()
    assert order == []
    holders[1].release()
    claims = await asyncio.wait_for(asyncio.gather(first, small), 1)
    assert order == ["first", "small"] and budget.used == 10
    with pytest.raises(asyncio.CancelledError):
        await gone
    for claim in claims:
        claim.release()
    assert budget.used == 0


async def test_a_part_already_begun_can_always_finish() -> None:
    """Parts of 4 bytes in a budget of 8, covered a byte at a time: taken
    whole at their first byte only two could be filled at once; here five
    begin, and a sixth must wait, since then no part could finish."""
    budget = ByteBudget(8, step=1)
    begun = [await asyncio.wait_for(_covered(budget.claim(4, f"p{i}"), 1), 1) for i in range(5)]
    sixth = asyncio.create_task(_covered(budget.claim(4, "p5"), 1))
    await _settle()
    assert not sixth.done()
    # The first fills up, is sent (released) and so on: every one finishes.
    for claim in begun:
        await asyncio.wait_for(claim.cover(4), 1)
        claim.release()
    (await asyncio.wait_for(sixth, 1)).release()
    assert budget.used == 0 and budget.peak <= 8


async def test_random_uploads_never_deadlock_nor_overrun() -> None:
    """Uploads of several principals, random message sizes, parts sent (and
    their budget given back) a little later: every upload ends, the limit and
    the shares always hold, and nothing is left taken."""
    rng = random.Random(7)
    part, limit, share = 16, 40, 24
    budget = ByteBudget(limit, share, step=4)
    sends: list[asyncio.Task[None]] = []

    def check() -> None:
        assert budget.used <= limit
        assert all(held <= share for held in budget.used_by.values())

    async def send(claim: Claim) -> None:
        await asyncio.sleep(rng.random() / 500)
        claim.release()
        check()

    async def upload(principal: str, size: int) -> None:
        claim, filled = budget.claim(part, principal), 0
        while size:
            piece = min(size, rng.randint(1, 9), part - filled)
            await claim.cover(filled + piece)
            check()
            filled, size = filled + piece, size - piece
            if filled == part:
                sends.append(asyncio.create_task(send(claim)))
                claim, filled = budget.claim(part, principal), 0
            await asyncio.sleep(0)
        claim.seal()
        sends.append(asyncio.create_task(send(claim)))

    uploads = [upload(f"p{i % 3}", rng.randint(0, 80)) for i in range(24)]
    await asyncio.wait_for(asyncio.gather(*uploads), 10)
    await asyncio.gather(*sends)
    assert budget.used == 0 and not budget.used_by and budget.peak <= limit


async def test_a_cancelled_waiter_takes_nothing() -> None:
    budget = ByteBudget(4, step=1)
    full = await _covered(budget.claim(4, "a"), 4)
    claim = budget.claim(2, "b")
    waiting = asyncio.create_task(claim.cover(2))
    await _settle()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    full.release()
    claim.release()
    assert budget.used == 0 and claim.taken == 0


async def test_callers_without_an_identity_count_as_one_principal() -> None:
    counted = ByteBudget(8, 4, step=1)
    first = await _covered(counted.claim(4, None), 4)
    blocked = asyncio.create_task(_covered(counted.claim(4, None), 1))
    await _settle()
    assert not blocked.done() and counted.used_by[""] == 4
    blocked.cancel()
    first.release()
    # Without an identity source nobody is named: no share, the whole budget.
    uncounted = ByteBudget(8, 4, step=1, count_anonymous=False)
    claims = [await asyncio.wait_for(_covered(uncounted.claim(4, None), 4), 1) for _ in range(2)]
    assert uncounted.used == 8
    for claim in claims:
        claim.release()
