"""Soak: many concurrent mixed streams through one gateway process for a while.

Starts moto's S3 server and blobgate-server as subprocesses on 127.0.0.1 (the
gateway with an explicit --memory-budget and --max-streams), then drives it
from this process with the project's async client (client.Client, one
channel, no retries: every failure counts) from --streams concurrent workers
for --duration seconds. Worker n has a fixed role (ROLES): 3 of 8 upload, 3 of
8 download, 2 of 8 stat or list; each draws its choices from its own seeded RNG:

- upload: a new object of random size in [--min-size-mib, --max-size-mib] MiB
  (any byte count, so part ends are unaligned), with metadata; the reply must
  carry the size and a sha256;
- download: a previously uploaded object, whole (the client also checks its
  sha256), a middle range or a suffix (negative offset); every byte is
  compared with the known content as it arrives, and the object's description
  with what was uploaded;
- stat (2 in 3 of the stat-or-list calls): size, etag, sha256, content type
  and metadata must match;
- list: every object under the run's prefix, 50 a page; each listed key must
  be one this run uploaded, with its size, and every object that stayed live
  during the listing must be in it.

Object content is cheap to make and to check: a 64-byte header naming the
object, then a seeded random block of 1 MiB + 4087 bytes (a prime) repeated
from an offset of the object's own, so sha256s differ, and bytes shifted by a
whole number of MiB (a message or part put in the wrong place, repeated or
lost) never match.

Objects are deleted (through the client, counted as "delete") after
--reads-per-object downloads and stats, or when more than --max-live are
kept, so moto (which keeps every object) stays small.

Before the soak it measures the idle gateway's RSS and its peak (VmHWM) during
one --max-size-mib upload; then it resets VmHWM and reports the soak's peak
against the bound memory_budget + OVERHEAD_MIB + max_streams x
STREAM_OVERHEAD_MIB (see OVERHEAD_MIB for the reasoning). Exit status 1 if any
operation failed, any byte or field mismatched, a multipart upload was left
behind, the gateway logged an error, or the peak RSS passed the bound.

--stream-cost N measures STREAM_OVERHEAD_MIB instead of soaking: on a gateway
whose memory_budget is one part, N uploads (from a client that sends without
waiting for "blobgate-upload: accepted") wait for budget, then, on a new
gateway, N downloads stop reading after their first data message; it reports
the gateway's RSS growth per stream, steady and at the phase's peak.

--identity jwt runs the gateway with TLS and JWT identities: a throwaway
CA and server certificate and an ES256 JWKS (bench/soak/identity.py), and a
bearer token for each principal (the mixed soak's workers are one principal,
allowed every stream).

--attack KIND[,KIND...] (or "all") runs an attack run instead of the mixed
soak (bench/soak/phases.py): a baseline phase, then one phase per attack, in
the order given; in each, the attack opens its calls, then --victims
well-behaved callers (their own principal in JWT mode) connect anew for
every small Upload, Stat, Download and Delete for --phase-seconds while it
holds them. The report has, per phase, the victims' successful calls,
errors, p50 and p99 latency (and p99 against the baseline's), and the
gateway's RSS at the end of the phase and its peak. Attacks:

  watch-flood          --watch-streams Health Watch streams, no token
  idle-sockets         --idle-sockets TCP connections that send nothing
  unfinished-messages  --unfinished-messages Stat calls, no token, each
                       announcing an --announced-mib request message that
                       never ends (raw HTTP/2)
  trickle-uploads      one principal's --trickle-uploads Upload streams,
                       1 byte every --trickle-interval s (needs --identity jwt)
  many-principals      --principals principals, --trickle-uploads each
                       (needs --identity jwt)

"all" means every attack that fits --identity. It fails (exit 1) if an
attack broke, the gateway logged an error, or no victim call succeeded in the
baseline; with --require-victims-ok also if any victim call failed.

    .venv/bin/python -m bench.soak [--duration 60] [--streams 64] [--max-size-mib 64]
        [--budget-mib 256] [--seed 1]
    .venv/bin/python -m bench.soak --stream-cost 64
    .venv/bin/python -m bench.soak --identity jwt --attack all --budget-mib 32 \
        --max-calls 256 --max-connections 256
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from bench import MiB
from bench.common.bounded_run import run_bounded
from bench.common.command_line import add_gateway_options, bench_parser, command_line
from bench.soak.options import ATTACKS, IDENTITIES, NEEDS_IDENTITY, AttackPlan, SoakOptions
from bench.soak.phases import attack_soak
from bench.soak.result import attack_report, report
from bench.soak.run import soak
from bench.soak.stream_cost import cost_report, stream_cost
from blobgate.client import BlobgateError


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("bench.soak", __doc__)
    add = parser.add_argument
    add("--duration", type=float, default=60.0, help="seconds during which operations start")
    add("--streams", type=int, default=64, help="concurrent workers (streams)")
    add("--min-size-mib", type=int, default=1, help="smallest upload, MiB")
    add("--max-size-mib", type=int, default=64, help="largest upload, MiB")
    add("--budget-mib", type=int, default=256, help="the gateway's memory_budget, MiB")
    add("--max-streams", type=int, help="the gateway's max_streams (default: --streams)")
    add("--part-size-mib", type=int, default=8, help="the gateway's part_size, MiB (>= 5)")
    add("--parts-in-flight", type=int, default=4, help="the gateway's parts_in_flight")
    add("--seed", type=int, default=1, help="seeds the content and every worker's choices")
    add("--max-live", type=int, help="objects kept in S3 at once (default: half of --streams)")
    add("--reads-per-object", type=int, default=6, help="downloads and stats before deleting")
    add("--op-timeout", type=float, default=300.0, help="seconds allowed per operation")
    add(
        "--abusers",
        type=int,
        default=0,
        metavar="N",
        help="misbehaving clients alongside the workers: idle uploads and stalled downloads "
        "that the gateway must end (they add to the default --max-streams)",
    )
    add("--idle-timeout", type=float, default=30.0,
        help="the gateway's stream_idle_timeout, seconds")  # fmt: skip
    add_gateway_options(parser)
    add("--log-dir", type=Path, help="for moto.log and gateway.log (default: new temp dir)")
    add("--stream-cost", type=int, metavar="N",
        help="instead of soaking, measure what N concurrent streams (N uploads waiting "
             "for budget, then N downloads whose client stopped reading) each hold "
             "outside memory_budget")  # fmt: skip
    add_attack_options(parser)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.streams < 1 or not 1 <= args.min_size_mib <= args.max_size_mib:
        parser.error("need --duration > 0, --streams >= 1, 1 <= --min-size-mib <= --max-size-mib")
    options = SoakOptions(
        duration=args.duration, streams=args.streams, min_size=args.min_size_mib * MiB,
        max_size=args.max_size_mib * MiB, budget=args.budget_mib * MiB,
        max_streams=args.max_streams, part_size=args.part_size_mib * MiB,
        parts_in_flight=args.parts_in_flight, seed=args.seed, max_live=args.max_live,
        reads_per_object=args.reads_per_object, op_timeout=args.op_timeout,
        log_dir=args.log_dir, gateway_log_level=args.gateway_log_level,
        gateway_cmd=tuple(shlex.split(args.gateway_cmd or "")),
        abusers=args.abusers, idle_timeout=args.idle_timeout, identity=args.identity,
        max_calls=args.max_calls, max_connections=args.max_connections,
        attack=attack_plan(parser, args),
    )  # fmt: skip
    print("command:", command_line("bench.soak"), flush=True)
    started = time.monotonic()
    if args.stream_cost is not None:
        if args.stream_cost < 1:
            parser.error("need --stream-cost >= 1")
        if options.attack is not None or options.identity != "none":
            parser.error("--stream-cost runs in plaintext, without --attack")
        within = 3 * options.op_timeout + 180
        cost = run_bounded(
            stream_cost(options, args.stream_cost), within, "measurement", failures=(BlobgateError,)
        )
        print(cost_report(cost))
        print(f"\nrun took {time.monotonic() - started:.0f} s")
        return 0
    if options.attack is not None:
        plan = options.attack
        phases = 1 + len(plan.attacks)
        within = phases * (plan.phase_seconds + 2 * plan.victim_timeout + 120) + 180
        outcome = run_bounded(attack_soak(options), within, "attack run",
                              failures=(BlobgateError,))  # fmt: skip
        print(attack_report(outcome))
        print(f"\nrun took {time.monotonic() - started:.0f} s")
        return 1 if outcome.failures() else 0
    within = options.duration + 2 * options.op_timeout + 180
    result = run_bounded(soak(options), within, "soak", failures=(BlobgateError,))
    print(report(result))
    print(f"\nrun took {time.monotonic() - started:.0f} s")
    return 1 if result.failures() else 0


def add_attack_options(parser: argparse.ArgumentParser) -> None:
    """The identity, the gateway's connection limits, and the attack run."""
    add = parser.add_argument
    add(
        "--identity",
        choices=IDENTITIES,
        default="none",
        help="none: plaintext; jwt: TLS and a bearer JWT per principal (throwaway CA, JWKS)",
    )
    add("--max-calls", type=int, help="the gateway's max_calls (default: its own)")
    add("--max-connections", type=int, help="the gateway's max_connections (default: its own)")
    add(
        "--attack",
        metavar="KIND[,KIND...]",
        help=f"an attack run instead of the mixed soak: a baseline phase, then one phase "
        f"per attack ({', '.join(ATTACKS)}, or all)",
    )
    add("--phase-seconds", type=float, default=15.0, help="seconds the victims run in each phase")
    add("--victims", type=int, default=4, help="victims (concurrent callers)")
    add("--victim-size-kib", type=int, default=64, help="the victims' object size, KiB")
    add("--victim-timeout", type=float, default=10.0, help="deadline of a victim's call, s")
    add("--watch-streams", type=int, default=300, help="watch-flood: Watch streams")
    add("--idle-sockets", type=int, default=300, help="idle-sockets: connections")
    add("--unfinished-messages", type=int, default=40, help="unfinished-messages: calls")
    add(
        "--announced-mib",
        type=int,
        default=8,
        help="unfinished-messages: the message size each announces, MiB",
    )
    add(
        "--trickle-uploads",
        type=int,
        default=8,
        help="trickle-uploads, many-principals: Upload streams per principal",
    )
    add(
        "--trickle-interval",
        type=float,
        default=5.0,
        help="seconds between a trickling Upload's 1-byte messages",
    )
    add("--principals", type=int, default=16, help="many-principals: principals")
    add("--require-victims-ok", action="store_true",
        help="fail the attack run if any victim call failed in any phase")  # fmt: skip


def attack_plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> AttackPlan | None:
    """The attack run the arguments ask for, or None (the mixed soak)."""
    if args.attack is None:
        return None
    names = [name.strip() for name in args.attack.split(",") if name.strip()]
    if names == ["all"]:
        names = [a for a in ATTACKS if args.identity == "jwt" or a not in NEEDS_IDENTITY]
    unknown = [name for name in names if name not in ATTACKS]
    if unknown or not names:
        parser.error(f"--attack: unknown {unknown}; choose from {', '.join(ATTACKS)} or all")
    if args.identity != "jwt" and (need := [a for a in names if a in NEEDS_IDENTITY]):
        parser.error(f"--attack {','.join(need)} acts as principals: it needs --identity jwt")
    if args.phase_seconds <= 0 or args.victims < 1 or args.victim_size_kib < 1:
        parser.error("need --phase-seconds > 0, --victims >= 1, --victim-size-kib >= 1")
    return AttackPlan(
        attacks=tuple(names), phase_seconds=args.phase_seconds, victims=args.victims,
        victim_size=args.victim_size_kib * 1024, victim_timeout=args.victim_timeout,
        watch_streams=args.watch_streams, idle_sockets=args.idle_sockets,
        unfinished_messages=args.unfinished_messages, announced=args.announced_mib * MiB,
        trickle_uploads=args.trickle_uploads, trickle_interval=args.trickle_interval,
        principals=args.principals, require_victims_ok=args.require_victims_ok,
    )  # fmt: skip
