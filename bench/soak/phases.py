"""An attack run (``--attack``): start moto and the gateway (in TLS and JWT
mode with ``--identity jwt``), then a baseline phase with the victims alone,
then one phase per attack: the attack opens its calls, and once they are all
open (or refused) the victims run for ``phase_seconds`` while it holds them.
The gateway's VmRSS is read at the end of each phase, before the attack lets
go, and its peak (VmHWM, reset when the phase starts) over the phase."""

from __future__ import annotations

import asyncio
import contextlib
import re

from bench.common.process_usage import reset_peak_rss, status_mib
from bench.common.services import services
from bench.soak.attacks import Attack, make_attacks
from bench.soak.identity import Access, make_identity
from bench.soak.options import SoakOptions
from bench.soak.result import AttackResult, PhaseResult
from bench.soak.victims import Victims

READY_WITHIN = 60.0  # seconds an attack may take to open its calls
LET_GO_WITHIN = 30.0  # seconds an attack may take to close them
SETTLE = 2.0  # seconds between phases, for the gateway to let go of the last attack


async def attack_soak(options: SoakOptions) -> AttackResult:
    """Start moto and the gateway, run the phases, stop them; the outcome."""
    plan = options.attack
    assert plan is not None
    identity = make_identity(options.identity, options.log_dir)
    result = AttackResult(options, plan)
    async with services(options.services_plan("blobgate-attack-", identity)) as running:
        result.header = running.header
        pid = running.gateway.pid
        access = Access(running.gateway_addr, identity)
        result.mode = access.mode
        victims = Victims(access, plan, options.seed)
        result.idle_rss = status_mib(pid, "VmRSS")
        for attack in [None, *make_attacks(plan, access)]:
            result.phases.append(await phase(attack, victims, pid, plan.phase_seconds))
            print(f"phase {result.phases[-1].name}: done", flush=True)
            await asyncio.sleep(SETTLE)
        if running.gateway.poll() is not None:
            result.log_problems.append(f"gateway exited with code {running.gateway.returncode}")
    for line in running.logs["gateway"].read_text(errors="replace").splitlines():
        if re.search(r"ERROR|CRITICAL|Traceback", line):
            result.log_problems.append(line)
        elif "WARNING" in line:
            result.log_warnings.append(line)
    return result


async def phase(attack: Attack | None, victims: Victims, pid: int, seconds: float) -> PhaseResult:
    """One phase: ``attack`` (None: the baseline) held while the victims run."""
    name = "baseline" if attack is None else attack.kind
    what = "none" if attack is None else attack.describe()
    start_rss = status_mib(pid, "VmRSS")
    reset_peak_rss(pid)
    stop = asyncio.Event()
    holding: asyncio.Task[None] | None = None
    ready_after = 0.0
    loop = asyncio.get_running_loop()
    if attack is not None:
        began = loop.time()
        holding = asyncio.create_task(attack.run(stop))
        ready = asyncio.create_task(attack.ready.wait())
        await asyncio.wait({holding, ready}, timeout=READY_WITHIN,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        ready.cancel()
        ready_after = loop.time() - began
    stats = await victims.run(seconds)
    end_rss, peak_rss = status_mib(pid, "VmRSS"), status_mib(pid, "VmHWM")
    problem = None
    if holding is not None:
        stop.set()
        try:
            async with asyncio.timeout(LET_GO_WITHIN):
                await holding
        except Exception as exc:  # the attack's own failure is reported, not raised
            problem = f"{type(exc).__name__}: {exc}"
        finally:
            holding.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await holding
    outcomes = {} if attack is None else dict(attack.outcomes)
    return PhaseResult(
        name, what, stats, end_rss, peak_rss, ready_after, outcomes, problem, start_rss
    )
