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

    .venv/bin/python -m bench.soak [--duration 60] [--streams 64] [--max-size-mib 64]
        [--budget-mib 256] [--seed 1]
    .venv/bin/python -m bench.soak --stream-cost 64
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from bench import MiB
from bench.common.bounded_run import run_bounded
from bench.common.command_line import add_gateway_options, bench_parser, command_line
from bench.soak.options import SoakOptions
from bench.soak.result import report
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
        abusers=args.abusers, idle_timeout=args.idle_timeout,
    )  # fmt: skip
    print("command:", command_line("bench.soak"), flush=True)
    started = time.monotonic()
    if args.stream_cost is not None:
        if args.stream_cost < 1:
            parser.error("need --stream-cost >= 1")
        within = 3 * options.op_timeout + 180
        cost = run_bounded(
            stream_cost(options, args.stream_cost), within, "measurement", failures=(BlobgateError,)
        )
        print(cost_report(cost))
        print(f"\nrun took {time.monotonic() - started:.0f} s")
        return 0
    within = options.duration + 2 * options.op_timeout + 180
    result = run_bounded(soak(options), within, "soak", failures=(BlobgateError,))
    print(report(result))
    print(f"\nrun took {time.monotonic() - started:.0f} s")
    return 1 if result.failures() else 0
