"""The soak benchmark (python -m bench.soak), short: a few seconds of eight concurrent
mixed workers through a real gateway process on a real moto server process.
Nothing may fail, no byte may differ, every kind of operation must have run,
and the gateway's peak RSS must stay under the benchmark's bound:
memory_budget + a fixed overhead + max_streams x the cost of a stream. The
budget is smaller than what the upload workers would hold at once, so
uploads wait for it (backpressure) during the run."""

from __future__ import annotations

from pathlib import Path

from bench.soak.content import HEADER_SIZE, Corpus
from bench.soak.options import KINDS, ROLES, SoakOptions
from bench.soak.result import report
from bench.soak.run import soak

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
