"""The soak benchmark (python -m bench.soak), short: a few seconds of eight concurrent
mixed workers through a real gateway process on a real moto server process.
Nothing may fail, no byte may differ, every kind of operation must have run,
and the gateway's peak RSS must stay under the benchmark's bound:
memory_budget + a fixed overhead + max_streams x the cost of a stream. The
budget is smaller than what the upload workers would hold at once, so
uploads wait for it (backpressure) during the run. An attack run (--attack)
in TLS and JWT mode, short, must measure its victims in every phase and
report the table of their latencies and the gateway's memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak.content import HEADER_SIZE, Corpus
from bench.soak.main import main
from bench.soak.options import KINDS, ROLES, AttackPlan, SoakOptions
from bench.soak.phases import attack_soak
from bench.soak.result import AttackResult, PhaseResult, attack_report, report
from bench.soak.run import soak
from bench.soak.victims import VictimStats

MiB = 1024 * 1024


async def test_short_soak_has_no_errors_or_mismatches_and_stays_under_the_bound(
    tmp_path: Path,
) -> None:
    options = SoakOptions(
        duration=6.0,
        streams=8,
        min_size=1 * MiB,
        max_size=12 * MiB,
        part_size=5 * MiB,  # S3's minimum: 12 MiB objects go up in three parts
        parts_in_flight=2,  # an upload holds at most three parts: 15 MiB
        budget=24 * MiB,  # under the 45 MiB the three upload workers would hold:
        # measured, about one part in eight waits for budget
        seed=7,
        op_timeout=60.0,
        log_dir=tmp_path,
    )
    uploaders = sum(ROLES[n % len(ROLES)] == "upload" for n in range(options.streams))
    held = uploaders * (1 + options.parts_in_flight) * options.part_size
    assert held > options.budget, "the budget must bind: uploads must wait for it"
    result = await soak(options)
    print(report(result))  # shown when the test fails

    assert result.failures() == []
    for kind in KINDS:
        assert result.stats[kind].ops >= 1, f"no {kind} ran"
        assert result.stats[kind].errors == 0
        assert result.stats[kind].mismatches == 0
    assert result.stats["upload"].nbytes > 0 and result.stats["download"].nbytes > 0
    assert 0 < result.peak_rss <= result.bound
    assert result.leftovers == []


async def test_a_short_soak_with_misbehaving_clients(tmp_path: Path) -> None:
    """Idle uploads and stalled downloads among the workers: the gateway ends
    every one (DEADLINE_EXCEEDED after stream_idle_timeout) while the
    well-behaved workers see no error and memory stays under the bound."""
    options = SoakOptions(
        duration=6.0,
        streams=8,
        max_size=12 * MiB,
        part_size=5 * MiB,
        parts_in_flight=2,
        budget=24 * MiB,
        seed=11,
        op_timeout=60.0,
        log_dir=tmp_path,
        abusers=4,
        idle_timeout=1.0,
    )
    result = await soak(options)
    print(report(result))  # shown when the test fails

    assert result.failures() == []
    assert result.abusers is not None and result.abusers.unexpected() == {}
    assert result.abusers.ended_by_gateway() >= 4
    for kind in KINDS:
        assert result.stats[kind].errors == 0 and result.stats[kind].mismatches == 0
    assert 0 < result.peak_rss <= result.bound
    assert result.leftovers == []


def test_soak_content_ranges_match_the_whole_and_shifts_never_match() -> None:
    corpus = Corpus(3, "p/")
    first, second = corpus.new(0, 3 * MiB + 5), corpus.new(1, 3 * MiB + 5)
    whole = corpus.content(first)
    assert len(whole) == first.size and whole != corpus.content(second)
    for start, end in [(0, 1), (10, 100), (60, 70), (64, 2 * MiB), (MiB + 3, first.size), (5, 5)]:
        assert corpus.content(first, start, end) == whole[start:end]
    body = whole[HEADER_SIZE:]
    assert body[MiB : 2 * MiB] != body[:MiB]  # a message out of place is caught


async def test_a_short_attack_run_reports_the_victims_phase_by_phase(tmp_path: Path) -> None:
    """TLS and JWT mode: a baseline, then a Watch flood without a token and
    Stat calls whose request never ends. The harness must hold every attack
    call open (or report how the gateway ended it), measure the victims in
    every phase and print their table; whether the victims suffer is what
    the run measures, not what this test asserts."""
    plan = AttackPlan(
        attacks=("watch-flood", "unfinished-messages"), phase_seconds=2.0, victims=2,
        victim_size=16 * 1024, victim_timeout=5.0, watch_streams=20, unfinished_messages=3,
    )  # fmt: skip
    options = SoakOptions(identity="jwt", attack=plan, log_dir=tmp_path, budget=32 * MiB,
                          max_calls=64)  # fmt: skip
    result = await attack_soak(options)
    text = attack_report(result)
    print(text)  # shown when the test fails

    assert result.failures() == []
    assert result.mode == "TLS + JWT"
    assert [p.name for p in result.phases] == ["baseline", "watch-flood", "unfinished-messages"]
    baseline, flood, unfinished = result.phases
    assert baseline.victims.ops >= 4 and baseline.victims.errors == 0
    assert sum(flood.outcomes.values()) == 20
    assert sum(n for what, n in unfinished.outcomes.items() if not what.startswith("MiB")) == 3
    for p in result.phases:
        assert p.victims.ops + p.victims.errors > 0
        assert 0 < p.end_rss <= p.peak_rss
        assert f"| {p.name} |" in text
    assert (
        "| phase | attack | victim calls ok | errors | p50 ms | p99 ms | p99 / baseline |" in text
    )
    assert "PASS" in text.splitlines()[-1]
    assert (tmp_path / "identity" / "jwks.json").exists()


def test_require_victims_ok_fails_an_attack_run_on_a_victim_error() -> None:
    plan = AttackPlan(attacks=("idle-sockets",), require_victims_ok=True)
    result = AttackResult(SoakOptions(attack=plan), plan)
    hurt = VictimStats(ops=3, seconds=[0.01, 0.02, 0.5])
    hurt.failed("upload", TimeoutError("no budget"))
    result.phases = [
        PhaseResult("baseline", "none", VictimStats(ops=2, seconds=[0.01, 0.02]), 100.0, 101.0,
                    0.0, {}),
        PhaseResult("idle-sockets", "300 TCP connections", hurt, 120.0, 121.0, 0.1,
                    {"held open": 300}),
    ]  # fmt: skip
    assert result.failures() == ["idle-sockets: 1 victim calls failed: {'upload: TimeoutError': 1}"]
    lenient = AttackResult(SoakOptions(), AttackPlan(attacks=("idle-sockets",)))
    lenient.phases = result.phases
    assert lenient.failures() == []
    assert (
        "| idle-sockets | 300 TCP connections | 3 | 1 | 20 | 500 | 25.0 | 500 |"
        in attack_report(result)
    )


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--attack", "trickle-uploads"], "needs --identity jwt"),
        (["--attack", "watch-flood,bogus"], "unknown ['bogus']"),
        (["--attack", "all", "--stream-cost", "4"], "--stream-cost runs in plaintext"),
    ],
)
def test_attack_options_are_checked(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert complaint in capsys.readouterr().err
