"""A policy file is read whole or not at all: written in place in pieces,
it is never in force half-written. The policy and its watcher run as the
gateway runs them (``AccessPolicy`` and its ``watch`` task); what is in
force is looked at every 10 ms while a writer pauses between its pieces.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import pytest

from blobgate.server.core import access_policy
from blobgate.server.core.access_policy import AccessPolicy, Action, PolicyError
from blobgate.server.core.principal_names import IdentitySource
from blobgate.server.core.whole_files import Unsettled, read_whole, stamp_of
from tests.support.helpers import eventually

CERTIFICATE = IdentitySource.CERTIFICATE
ALICE = "spiffe://example.org/ns/a/sa/alice"


def backdate(path: Path, seconds: float = 60.0) -> None:
    """Give ``path`` an mtime ``seconds`` old: a file left alone, read at once."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def grant(principal: str) -> str:
    return (
        f'[[grant]]\nprincipals = ["{principal}"]\nbuckets = ["b"]\nprefixes = [""]\n'
        'actions = ["read"]\n'
    )


OLD = grant(ALICE).replace('prefixes = [""]', 'prefixes = ["alice/"]')
# A grant that, cut short before its last line, would give more: a presign
# right for the server's 7 days instead of one minute.
NEW_HEAD = (
    f'[[grant]]\nprincipals = ["{ALICE}"]\nbuckets = ["b"]\nactions = ["read", "presign"]\n'
    'prefixes = ["alice/"]\n'
)
NEW = NEW_HEAD + "max_presign_expiry = 60\n"


@asynccontextmanager
async def watched(path: Path) -> AsyncIterator[AccessPolicy]:
    """The policy of ``path`` (left alone before), with its watcher looking
    every 20 ms and every decision looking too."""
    backdate(path)
    policy = AccessPolicy(path, CERTIFICATE)
    task = asyncio.create_task(policy.watch())
    try:
        yield policy
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def presign_limits(policy: AccessPolicy) -> int | None:
    return policy.presign_limit(ALICE, "b", "alice/k")


async def write_in_two_pieces(
    path: Path, first: str, rest: str, policy: AccessPolicy, until: Callable[[], bool]
) -> set[int | None]:
    """Truncate ``path`` and write ``first``, look at the rights in force
    every 10 ms until ``until()`` (5 s at most), then write ``rest``; the
    presign limits seen meanwhile."""
    seen = set()
    with path.open("w") as file:
        file.write(first)
        file.flush()
        deadline = time.monotonic() + 5
        while not until():
            assert time.monotonic() < deadline, "the pause never ended"
            seen.add(presign_limits(policy))
            await asyncio.sleep(0.01)
        file.write(rest)
    return seen


def after(seconds: float) -> Callable[[], bool]:
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline


async def test_a_file_written_in_place_is_not_read_between_its_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(access_policy, "WATCH_INTERVAL", 0.02)
    monkeypatch.setattr(access_policy, "RELOAD_CHECK_INTERVAL", 0.0)
    path = tmp_path / "policy.toml"
    path.write_text(OLD)
    async with watched(path) as policy:
        assert presign_limits(policy) is None
        # The writer pauses 0.3 s (15 of the watcher's looks; the settle
        # time is a second) between its pieces.
        rest = NEW[len(NEW_HEAD) :]
        seen = await write_in_two_pieces(path, NEW_HEAD, rest, policy, after(0.3))

        async def new_in_force() -> None:
            assert presign_limits(policy) == 60

        await eventually(new_in_force, 5)
    assert seen == {None}  # the old rights, never the half file's 7 days
    assert policy.reloads == 1


async def test_a_grant_cut_short_before_its_prefixes_does_not_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="blobgate.server.core.access_policy")
    monkeypatch.setattr(access_policy, "WATCH_INTERVAL", 0.02)
    monkeypatch.setattr(access_policy, "RELOAD_CHECK_INTERVAL", 0.0)
    monkeypatch.setattr(access_policy, "SETTLE_SECONDS", 0.1)
    path = tmp_path / "policy.toml"
    path.write_text(OLD)
    cut = NEW.index("prefixes")
    async with watched(path) as policy:
        # A writer pausing longer than the settle time: the half file is read,
        # and refused, since a grant without prefixes is not the whole bucket.
        def refused() -> bool:
            return any("grant[0].prefixes: missing" in r.getMessage() for r in caplog.records)

        seen = await write_in_two_pieces(path, NEW[:cut], NEW[cut:], policy, refused)

        async def new_in_force() -> None:
            assert presign_limits(policy) == 60

        await eventually(new_in_force, 5)
        assert not policy.allows(ALICE, Action.READ, "b", "bob/k")
    assert seen == {None}
    assert policy.reloads == 1


async def test_start_up_waits_for_a_file_still_being_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(access_policy, "SETTLE_SECONDS", 0.3)
    path = tmp_path / "policy.toml"
    path.write_text(NEW)
    began = time.monotonic()
    policy = AccessPolicy(path, CERTIFICATE)
    assert time.monotonic() - began >= 0.25
    assert presign_limits(policy) == 60
    # One that keeps changing stops start-up, saying how to write it.
    monkeypatch.setattr(access_policy, "START_UP_WAIT", 0.5)
    monkeypatch.setattr(access_policy, "SETTLE_SECONDS", 3600.0)
    with pytest.raises(PolicyError, match=r"kept changing for 0.5s: write it whole"):
        AccessPolicy(path, CERTIFICATE)


def test_a_read_counts_only_if_the_file_is_the_same_after_it(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(OLD)
    before = stamp_of(path.stat())
    assert read_whole(path, before, 1024) == OLD.encode()
    with path.open("a") as file:  # a writer's next piece, between the stat and the read
        file.write(NEW)
    with pytest.raises(Unsettled):
        read_whole(path, before, 1024)


async def test_sighup_leaves_a_file_being_written_to_a_later_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="blobgate.server.core.access_policy")
    monkeypatch.setattr(access_policy, "WATCH_INTERVAL", 0.02)
    monkeypatch.setattr(access_policy, "RELOAD_CHECK_INTERVAL", 3600.0)  # only the watcher
    monkeypatch.setattr(access_policy, "SETTLE_SECONDS", 0.3)
    path = tmp_path / "policy.toml"
    path.write_text(OLD)
    async with watched(path) as policy:
        path.write_text(NEW)
        assert policy.reload() is False  # written a moment ago: not yet
        assert presign_limits(policy) is None
        assert any("is read once it has been left alone" in r.getMessage() for r in caplog.records)

        async def new_in_force() -> None:
            assert presign_limits(policy) == 60

        await eventually(new_in_force, 5)
