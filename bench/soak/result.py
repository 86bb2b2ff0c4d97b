"""A soak's outcome: what each kind of operation did, the memory and CPU
the processes used, and the report printed from it; for an attack run, the
victims' calls and the gateway's memory phase by phase, and its report."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bench import MiB
from bench.common.markdown_table import head, row
from bench.soak.abusers import Abusers
from bench.soak.options import (
    KINDS,
    OVERHEAD_MIB,
    ROLES,
    STREAM_OVERHEAD_MIB,
    AttackPlan,
    SoakOptions,
)
from bench.soak.victims import VictimStats


@dataclass
class KindStats:
    """What happened to the operations of one kind."""

    ops: int = 0  # completed without error (mismatches included)
    errors: int = 0
    mismatches: int = 0
    nbytes: int = 0  # payload moved by successful operations
    seconds: list[float] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)  # first few errors and mismatches

    def note(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)


@dataclass
class SoakResult:
    """What a soak measured, and what went wrong."""

    options: SoakOptions
    active: float = 0.0  # seconds during which operations started
    elapsed: float = 0.0  # seconds until the last one ended
    stats: dict[str, KindStats] = field(default_factory=lambda: {k: KindStats() for k in KINDS})
    idle_rss: float = 0.0  # MiB, the gateway before any transfer
    calibration_peak: float = 0.0  # MiB, VmHWM during one max-size upload
    calibration_from: float = 0.0  # MiB, VmRSS just before it
    peak_rss: float = 0.0  # MiB, the gateway's VmHWM during the soak
    start_rss: float = 0.0  # MiB, VmRSS when the soak started
    end_rss: float = 0.0  # MiB, VmRSS after the soak
    peak_sampled: float = 0.0  # MiB, the highest VmRSS sample (every 0.2 s)
    peak_sampled_at: float = 0.0  # seconds into the soak of that sample
    moto_peak: float = 0.0  # MiB
    client_peak: float = 0.0  # MiB
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process, soak only
    max_concurrent: dict[str, int] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)  # multipart uploads left in S3
    log_problems: list[str] = field(default_factory=list)  # gateway ERROR/Traceback lines
    log_warnings: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)  # machine, code, commands
    abusers: Abusers | None = None  # the misbehaving clients, if any ran

    @property
    def bound(self) -> float:
        return self.options.bound_mib

    def failures(self) -> list[str]:
        """Why the run failed; empty if it passed."""
        why = []
        for kind, stats in self.stats.items():
            if stats.errors:
                why.append(f"{stats.errors} {kind} errors, e.g. {stats.examples[:2]}")
            if stats.mismatches:
                why.append(f"{stats.mismatches} {kind} mismatches, e.g. {stats.examples[:2]}")
        if self.peak_rss > self.bound:
            why.append(f"gateway peak RSS {self.peak_rss:.1f} MiB > bound {self.bound:.0f} MiB")
        if self.leftovers:
            why.append(f"multipart uploads left behind: {self.leftovers[:3]}")
        if self.log_problems:
            why.append(f"gateway logged errors: {self.log_problems[:3]}")
        if self.abusers is not None and self.abusers.unexpected():
            why.append(
                f"misbehaving clients' calls ended unexpectedly: {self.abusers.unexpected()}"
            )
        return why


def report(result: SoakResult) -> str:
    """The soak's tables and verdict, after the run's header lines."""
    o = result.options
    count = {r: sum(1 for n in range(o.streams) if ROLES[n % len(ROLES)] == r) for r in ROLES}
    roles = f"upload {count['upload']}, download {count['download']}, stat or list (2:1) "
    roles += f"{count['unary']}"
    lines = [*result.header, ""]
    lines += [
        *head("soak", "value", align="ll"),
        row("duration: operations started for (s)", f"{result.active:.0f}"),
        row("duration: until the last ended (s)", f"{result.elapsed:.1f}"),
        row("concurrent streams (workers)", o.streams),
        row("upload sizes (MiB)", f"{o.min_size / MiB:g} to {o.max_size / MiB:g}, uniform"),
        row("workers by role", roles),
        row("gateway settings", f"memory_budget {o.budget // MiB} MiB, "
            f"max_streams {o.gateway_max_streams}, part_size {o.part_size // MiB} MiB, "
            f"parts_in_flight {o.parts_in_flight}"),
        row("objects kept at once, reads before delete", f"{o.live_cap}, {o.reads_per_object}"),
        row("seed", o.seed),
        row("identity", "TLS + JWT (workers one principal, misbehaving clients another)"
            if o.identity == "jwt" else "plaintext"),
        "",
        *head("kind", "ops", "errors", "mismatches", "MiB moved", "MB/s (over the whole run)",
              "most at once", "p50 ms", "p95 ms", "max ms", align="lrrrrrrrrr"),
    ]  # fmt: skip
    lines += [kind_row(kind, s, result) for kind, s in result.stats.items()]
    total_errors = sum(s.errors for s in result.stats.values())
    total_mismatch = sum(s.mismatches for s in result.stats.values())
    total_ops = sum(s.ops for s in result.stats.values())
    lines.append(row("all", total_ops, total_errors, total_mismatch, *[None] * 6))
    if result.abusers is not None:
        lines += [
            "",
            *head(
                f"misbehaving clients ({o.abusers}, stream_idle_timeout "
                f"{o.idle_timeout:g} s): how their calls ended",
                "calls",
                align="lr",
            ),
        ]
        lines += [row(what, n) for what, n in sorted(result.abusers.outcomes.items())]
    lines += ["", *memory_table(result), ""]
    lines += head("CPU seconds during the soak", "client", "gateway", "moto", align="lrrr")
    lines.append(
        row(None, *(f"{result.cpu.get(p, 0.0):.1f}" for p in ("client", "gateway", "moto")))
    )
    for kind, s in result.stats.items():
        lines += [f"{kind}: {text}" for text in s.examples]
    if result.log_warnings:
        lines.append(f"NOTE: gateway logged {len(result.log_warnings)} warnings, e.g. "
                     f"{result.log_warnings[:3]}")  # fmt: skip
    failures = result.failures()
    lines.append("")
    lines += [f"FAIL: {why}" for why in failures] or ["PASS: no errors, no mismatches, "
                                                     "peak RSS under the bound"]  # fmt: skip
    return "\n".join(lines)


def kind_row(kind: str, s: KindStats, result: SoakResult) -> str:
    """One kind's counts, rate and latencies."""
    rate = s.nbytes / result.elapsed / 1e6 if result.elapsed and s.nbytes else 0.0
    times = sorted(s.seconds)
    p50 = statistics.median(times) * 1000 if times else 0.0
    p95 = times[min(len(times) - 1, int(0.95 * len(times)))] * 1000 if times else 0.0
    top = times[-1] * 1000 if times else 0.0
    most = result.max_concurrent.get(kind, 0)
    return row(kind, s.ops, s.errors, s.mismatches, f"{s.nbytes / MiB:.0f}", f"{rate:.1f}",
               most, f"{p50:.0f}", f"{p95:.0f}", f"{top:.0f}")  # fmt: skip


def memory_table(result: SoakResult) -> list[str]:
    """The processes' RSS, and the gateway's peak against the bound."""
    o = result.options
    ok = "PASS" if result.peak_rss <= result.bound else "FAIL"
    one_part_set = min(o.max_size, (1 + o.parts_in_flight) * o.part_size) / MiB
    bound = (
        f"{result.bound:.0f} = {o.budget // MiB} budget + {OVERHEAD_MIB} overhead "
        f"+ {o.gateway_max_streams} max_streams x {STREAM_OVERHEAD_MIB} per stream"
    )
    return [
        *head("memory (MiB)", "value", "bound", "ok", align="lrrl"),
        row("gateway idle RSS", f"{result.idle_rss:.1f}", None, None),
        row(f"gateway peak RSS, one {o.max_size // MiB} MiB upload alone "
            f"(from {result.calibration_from:.1f}; its parts {one_part_set:.0f})",
            f"{result.calibration_peak:.1f}", None, None),
        row(f"gateway peak RSS during the soak (VmHWM; from {result.start_rss:.1f})",
            f"{result.peak_rss:.1f}", bound, ok),
        row(f"gateway highest VmRSS sample (every 0.2 s), at {result.peak_sampled_at:.0f} s",
            f"{result.peak_sampled:.1f}", None, None),
        row("gateway RSS after the soak", f"{result.end_rss:.1f}", None, None),
        row("moto peak RSS during the soak", f"{result.moto_peak:.1f}", None, None),
        row("client (this process) peak RSS", f"{result.client_peak:.1f}", None, None),
    ]  # fmt: skip


@dataclass
class PhaseResult:
    """One phase of an attack run."""

    name: str  # "baseline" or the attack's kind
    attack: str  # what the attack held ("none" for the baseline)
    victims: VictimStats
    end_rss: float  # MiB, the gateway's VmRSS at the end of the phase, attack still on
    peak_rss: float  # MiB, its VmHWM over the phase
    ready_after: float  # seconds the attack took to open its calls
    outcomes: dict[str, int]  # how the attack's calls stood at the end
    problem: str | None = None  # the attack itself failed (a harness problem)
    start_rss: float = 0.0  # MiB, the gateway's VmRSS when the phase started


@dataclass
class AttackResult:
    """What an attack run measured."""

    options: SoakOptions
    plan: AttackPlan
    mode: str = ""  # plaintext, or TLS + JWT
    idle_rss: float = 0.0  # MiB, the gateway before the first phase
    phases: list[PhaseResult] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)
    log_warnings: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)

    def failures(self) -> list[str]:
        """Why the run failed: the harness or the gateway broke, or, with
        ``require_victims_ok``, a victim's call failed in some phase."""
        why = [f"{p.name}: the attack failed: {p.problem}" for p in self.phases if p.problem]
        if self.log_problems:
            why.append(f"gateway logged errors: {self.log_problems[:3]}")
        if not any(p.victims.ops for p in self.phases[:1]):
            why.append("no victim call succeeded in the baseline phase")
        if self.plan.require_victims_ok:
            for p in self.phases:
                if p.victims.errors:
                    why.append(f"{p.name}: {p.victims.errors} victim calls failed: "
                               f"{p.victims.error_kinds}")  # fmt: skip
        return why


def attack_report(result: AttackResult) -> str:
    """The attack run's settings, the phase table and the verdict."""
    o, plan = result.options, result.plan
    limits = [f"memory_budget {o.budget // MiB} MiB", f"max_streams {o.gateway_max_streams}",
              f"part_size {o.part_size // MiB} MiB",
              f"stream_idle_timeout {o.idle_timeout:g} s"]  # fmt: skip
    if o.max_calls is not None:
        limits.append(f"max_calls {o.max_calls}")
    if o.max_connections is not None:
        limits.append(f"max_connections {o.max_connections}")
    lines = [*result.header, ""]
    lines += [
        *head("attack run", "value", align="ll"),
        row("identity", result.mode),
        row("gateway settings (others: defaults)", ", ".join(limits)),
        row("victims", f"{plan.victims}, each connecting anew for every Upload, Stat, "
            f"Download, Delete of {plan.victim_size // 1024} KiB; calls under "
            f"{plan.victim_timeout:g} s"),
        row("phase length (s), after the attack's calls are open", f"{plan.phase_seconds:g}"),
        row("gateway idle RSS (MiB)", f"{result.idle_rss:.1f}"),
        "",
        "Victims' calls: p50 and p99 of the successful ones (and that p99 against the "
        "baseline's); \"all\" counts a failed call too, at the time it took to fail. "
        "Gateway RSS (MiB): VmRSS when the phase started and when it ended (the attack "
        "still on), VmHWM over the phase.",
        "",
        *head("phase", "attack", "victim calls ok", "errors", "p50 ms", "p99 ms",
              "p99 / baseline", "p99 ms, all", "RSS at start", "RSS at end", "peak",
              align="llrrrrrrrrr"),
    ]  # fmt: skip
    base = result.phases[0].victims.percentile(0.99) if result.phases else None
    for p in result.phases:
        v = p.victims
        p50, p99 = v.percentile(0.5), v.percentile(0.99)
        p99_all = v.percentile(0.99, failed_too=True)
        ratio = f"{p99 / base:.1f}" if p99 is not None and base else "-"
        lines.append(row(p.name, p.attack, v.ops, v.errors, _ms(p50), _ms(p99), ratio,
                         _ms(p99_all), f"{p.start_rss:.1f}", f"{p.end_rss:.1f}",
                         f"{p.peak_rss:.1f}"))  # fmt: skip
    lines += ["", *head("phase", "the attack's calls at the end of the phase", "calls",
                        align="llr")]  # fmt: skip
    for p in result.phases[1:]:
        lines.append(row(p.name, f"(opened in {p.ready_after:.1f} s)", None))
        lines += [row(None, what, n or None) for what, n in sorted(p.outcomes.items())]
    for p in result.phases:
        if p.victims.error_kinds:
            lines.append(f"{p.name}: victims' errors {p.victims.error_kinds}; "
                         f"e.g. {p.victims.examples[:2]}")  # fmt: skip
    if result.log_warnings:
        lines.append(f"NOTE: gateway logged {len(result.log_warnings)} warnings, e.g. "
                     f"{result.log_warnings[:3]}")  # fmt: skip
    failures = result.failures()
    lines.append("")
    verdict = "PASS: the harness ran every phase"
    if plan.require_victims_ok:
        verdict += "; no victim call failed"
    lines += [f"FAIL: {why}" for why in failures] or [verdict]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
