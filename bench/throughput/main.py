"""Gateway vs direct-S3 throughput, CPU per GiB, small-object ops and the
gateway's memory, in one run.

Starts moto's S3 server and blobgate-server as subprocesses on 127.0.0.1; this
process is the client (three processes sharing the machine). Over --reps
interleaved repetitions it uploads one --size-mib object through the gateway
(grpc.aio, 1 MiB messages; with size and sha256 declared, and with neither,
as a client streaming from a source) and directly with aioboto3 (multipart
with the gateway's part size and parts in flight), and downloads it through
the gateway (the Python client's raw deserializer, the Client, and a
generated stub that parses every message), with the Client sent to S3 by the
gateway (--direct-transfers: a presigned GET, read with aiohttp), and
directly (get_object read in 1 MiB reads); checks
every downloaded byte against the source as it arrives; takes each process's
CPU time (/proc/PID/stat) and the gateway's peak RSS (VmHWM, reset through
/proc/PID/clear_refs) around each transfer. Then --small-ops uploads, Stats
and downloads of --small-size objects, --concurrency at once, through the
gateway and directly: ops/s, p50/p99 latency, CPU and S3 requests per op.
Prints medians, paired gateway/direct ratios and the targets.

    .venv/bin/python -m bench.throughput [--reps 3] [--size-mib 256]
        [--small-ops 400 --small-size 4KiB --concurrency 16]  # --size-mib 0: these only
        [--event-loop auto|asyncio|uvloop]   # the gateway's loop
        [--compare-loops]  # two gateways, asyncio's loop and uvloop, interleaved
        [--gateway-env MALLOC_MMAP_THRESHOLD_=67108864 --gateway-env ...]
        [--metrics-cost]   # the whole run twice, metrics off then on; the ratios
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import time
from pathlib import Path

from pydantic import ByteSize, TypeAdapter, ValidationError

from bench.common.bounded_run import run_bounded
from bench.common.command_line import add_gateway_options, bench_parser, command_line
from bench.common.services import plan_services
from bench.throughput.report import report
from bench.throughput.run import measure
from bench.throughput.transfers import BUCKET


def parse_size(text: str) -> int:
    """Sizes as the gateway parses them (pydantic's ByteSize): 8MiB, 8388608, 8MB."""
    try:
        return int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 8MiB)") from None


def env_pair(text: str) -> tuple[str, str]:
    """KEY=VALUE, as --gateway-env takes it."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("bench.throughput", __doc__)
    add = parser.add_argument
    add("--reps", type=int, default=3, help="interleaved repetitions; medians are reported")
    add("--size-mib", type=int, default=256,
        help="object size for throughput and peak RSS; 0: small objects only")  # fmt: skip
    add("--small-mib", type=int, default=32, help="the small upload that peak RSS is compared to")
    add("--part-size", type=parse_size, default="8MiB", help="multipart part size, e.g. 8MiB")
    add("--parts-in-flight", type=int, default=4, help="parts uploaded at once")
    add(
        "--small-ops",
        type=int,
        default=400,
        help="small-object ops of each kind (upload, Stat, download) per side and rep; 0: none",
    )
    add("--small-size", type=parse_size, default="4KiB", help="the small objects' size")
    add("--concurrency", type=int, default=16, help="small-object ops at once")
    add(
        "--event-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the gateway's event_loop setting",
    )
    add(
        "--compare-loops",
        action="store_true",
        help="run two gateways on the same moto, asyncio's loop and uvloop, interleaved",
    )
    add("--gateway-env", type=env_pair, action="append", default=[], metavar="KEY=VALUE",
        help="extra environment for the gateway process (repeatable)")  # fmt: skip
    add_gateway_options(parser)
    add("--op-timeout", type=float, default=300, help="seconds allowed per transfer")
    add("--timeout", type=float, default=1800, help="seconds allowed for the whole run")
    add("--log-dir", type=Path, help="for moto.log and gateway.log (default: new temp dir)")
    add("--metrics-cost", action="store_true",
        help="run twice, gateway metrics off then on (--metrics-listen 127.0.0.1:0), "
        "and print the on/off ratio of the gateway's median throughputs")  # fmt: skip
    args = parser.parse_args(argv)
    if args.reps < 1 or args.size_mib < 0:
        parser.error("--reps must be >= 1 and --size-mib >= 0")
    if args.size_mib and not 1 <= args.small_mib <= args.size_mib:
        parser.error("1 <= --small-mib <= --size-mib")
    if not args.size_mib and not args.small_ops:
        parser.error("--size-mib 0 runs the small objects only: --small-ops must be > 0")
    if args.small_ops < 0 or args.concurrency < 1 or args.small_size < 1:
        parser.error("--small-ops must be >= 0, --concurrency and --small-size >= 1")
    if args.small_ops and args.small_ops < 2 * args.concurrency:
        parser.error("--small-ops must be 0 or at least twice --concurrency")
    if args.metrics_cost and not args.size_mib:
        parser.error("--metrics-cost compares the big transfers: --size-mib must be >= 1")
    if args.compare_loops and args.metrics_cost:
        parser.error("--compare-loops and --metrics-cost are separate runs")
    settings = [
        "--part-size", str(args.part_size), "--parts-in-flight", str(args.parts_in_flight),
        "--log-level", args.gateway_log_level,
        "--event-loop", "asyncio" if args.compare_loops else args.event_loop,
        "--direct-transfers",  # only the Client of the direct path asks for them
    ]  # fmt: skip
    if args.metrics_cost:
        return _metrics_cost(args, settings)
    plan = plan_services(
        bucket=BUCKET, settings=settings, gateway_cmd=shlex.split(args.gateway_cmd or ""),
        gateway_env=dict(args.gateway_env), log_dir=args.log_dir, log_prefix="blobgate-bench-",
        metrics=True,  # the gateway's S3 requests per small op, from its /metrics
    )  # fmt: skip
    machine, code, *commands = plan.header
    print(machine)
    print(code)
    print("command:", command_line("bench.throughput"))
    print(*commands, sep="\n")
    notes: list[str] = []
    started = time.monotonic()
    timed_out = "timed out (see --op-timeout, --timeout)"
    rec = run_bounded(measure(args, plan, notes), args.timeout, "benchmark", timed_out)
    report(rec, args)
    for log in sorted(plan.logs["gateway"].parent.glob("gateway*.log")):
        lines = log.read_text(errors="replace").splitlines()
        problems = [ln for ln in lines if re.search(r"WARNING|ERROR|CRITICAL|Traceback", ln)]
        if problems:
            notes.append(f"{log.name} has {len(problems)} warning/error lines, e.g. {problems[:3]}")
    for note in notes:
        print("NOTE:", note)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cpus = len(os.sched_getaffinity(0))
    print(f"\nrun took {time.monotonic() - started:.0f} s; load average (1, 5, 15 min) at the "
          f"end {load} on {cpus} CPUs (the run itself adds about 3)")  # fmt: skip
    return 0


def _metrics_cost(args: argparse.Namespace, settings: list[str]) -> int:
    """The same run with metrics off, then on; the on/off throughput ratios."""
    medians: dict[str, dict[str, float]] = {}
    for label, metrics in (("off", False), ("on", True)):
        plan = plan_services(
            bucket=BUCKET, settings=settings,
            gateway_cmd=shlex.split(args.gateway_cmd or ""), gateway_env=dict(args.gateway_env),
            log_dir=args.log_dir, log_prefix=f"blobgate-bench-metrics-{label}-", metrics=metrics,
        )  # fmt: skip
        print(f"\n== metrics {label}:", plan.header[-1])
        notes: list[str] = []
        rec = run_bounded(measure(args, plan, notes), args.timeout, "benchmark", "timed out")
        report(rec, args)
        for note in notes:
            print("NOTE:", note)
        medians[label] = {op: rec.median(op) for op in ("upload gateway", "download gateway")}
    print("\nmetrics on / off, median MB/s:")
    for op, off in medians["off"].items():
        on = medians["on"][op]
        print(f"  {op}: off {off:.0f}, on {on:.0f}, ratio {on / off:.3f}")
    return 0
