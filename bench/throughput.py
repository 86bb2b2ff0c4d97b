"""Gateway vs direct-S3 throughput, and the gateway's memory, in one run.

Starts moto's S3 server and blobgate-server as subprocesses on 127.0.0.1; this
process is the client (three processes sharing the machine). Over --reps
interleaved repetitions it uploads and downloads one --size-mib object through
the gateway (grpc.aio, 1 MiB messages, expected sha256 computed beforehand) and
directly with aioboto3 (multipart with the gateway's part size and parts in
flight; get_object read in 1 MiB reads), checks every downloaded byte against the
source as it arrives, and reads the gateway's peak RSS (VmHWM, reset through
/proc/PID/clear_refs) around each transfer. Prints medians, paired
gateway/direct ratios and the targets.

    .venv/bin/python -m bench.throughput [--reps 3] [--size-mib 256]
        [--gateway-env MALLOC_MMAP_THRESHOLD_=67108864 --gateway-env ...]
        [--metrics-cost]   # the whole run twice, metrics off then on; the ratios
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from pathlib import Path

from pydantic import ByteSize, TypeAdapter, ValidationError

from bench.bounded_run import run_bounded
from bench.command_line import add_gateway_options, bench_parser, command_line
from bench.services import plan_services
from bench.throughput_report import report
from bench.throughput_run import measure
from bench.throughput_transfers import BUCKET


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
    add("--size-mib", type=int, default=256, help="object size for throughput and peak RSS")
    add("--small-mib", type=int, default=32, help="the small upload that peak RSS is compared to")
    add("--part-size", type=parse_size, default="8MiB", help="multipart part size, e.g. 8MiB")
    add("--parts-in-flight", type=int, default=4, help="parts uploaded at once")
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
    if args.reps < 1 or args.size_mib < 1 or not 1 <= args.small_mib <= args.size_mib:
        parser.error("--reps and --size-mib must be >= 1, and 1 <= --small-mib <= --size-mib")
    settings = [
        "--part-size", str(args.part_size), "--parts-in-flight", str(args.parts_in_flight),
        "--log-level", args.gateway_log_level,
    ]  # fmt: skip
    if args.metrics_cost:
        return _metrics_cost(args, settings)
    plan = plan_services(
        bucket=BUCKET, settings=settings, gateway_cmd=shlex.split(args.gateway_cmd or ""),
        gateway_env=dict(args.gateway_env), log_dir=args.log_dir, log_prefix="blobgate-bench-",
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
    gateway_log = plan.logs["gateway"].read_text(errors="replace").splitlines()
    problems = [ln for ln in gateway_log if re.search(r"WARNING|ERROR|CRITICAL|Traceback", ln)]
    if problems:
        notes.append(f"gateway log has {len(problems)} warning/error lines, e.g. {problems[:3]}")
    for note in notes:
        print("NOTE:", note)
    print(f"\nrun took {time.monotonic() - started:.0f} s")
    return 0


def _metrics_cost(args: argparse.Namespace, settings: list[str]) -> int:
    """The same run with metrics off, then on; the on/off throughput ratios."""
    medians: dict[str, dict[str, float]] = {}
    for label, extra in (("off", []), ("on", ["--metrics-listen", "127.0.0.1:0"])):
        plan = plan_services(
            bucket=BUCKET, settings=settings + extra,
            gateway_cmd=shlex.split(args.gateway_cmd or ""), gateway_env=dict(args.gateway_env),
            log_dir=args.log_dir, log_prefix=f"blobgate-bench-metrics-{label}-",
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


if __name__ == "__main__":
    sys.exit(main())
