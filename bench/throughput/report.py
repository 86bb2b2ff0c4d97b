"""The throughput benchmark's tables: each path's MB/s, ratio to direct S3 and
CPU per GiB of every process; the targets; the small-object ops; and, with
--compare-loops, uvloop against asyncio's loop."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Sequence

from bench import MiB
from bench.common.markdown_table import head, row
from bench.throughput.run import ANSWERS, DOWNLOADS, UPLOADS, Recorder, named
from bench.throughput.small_objects import KINDS

# The targets: ratios to direct S3, gateway CPU-seconds per GiB, S3-side CPU
# of a gateway upload over a direct one's, memory, small objects; downloads
# through the gateway (a stub, the Client) and the Client's direct downloads.
UPLOAD_RATIO, DOWNLOAD_RATIO, SMALL_RATIO = 0.95, 0.70, 0.85
SMALL_ADDED_MS = 1.5  # one at a time: the gateway's p50 over direct's, per small op
CLIENT_RATIO, DIRECT_RATIO, DIRECT_CPU = 0.65, 0.95, 0.05
UPLOAD_CPU, DOWNLOAD_CPU, S3_SIDE = 2.0, 0.6, 1.10
PEAK_RSS_MIB, RSS_GROWTH_PCT = 160, 10
PROCESSES = ("gateway", "client", "moto")
GiB = 1024 * MiB
Test = Callable[[float], bool] | None


def ratios(top: Sequence[float], bottom: Sequence[float]) -> list[float]:
    """Per-rep ratios (the reps are paired: same rep, same moto state)."""
    return [a / b for a, b in zip(top, bottom, strict=True) if b]


def median_of(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def derive(rec: Recorder, args: argparse.Namespace) -> None:
    """Add the derived per-rep series: ratios, CPU-seconds per GiB, RSS growth."""
    per_rep, gib = rec.values, args.size_mib * MiB / GiB
    paths = ["upload direct", "download direct"]
    for label in rec.labels:
        paths += [named(op, label) for op in (*UPLOADS, *DOWNLOADS)]
    for path in paths:
        direct = "upload direct" if path.startswith("upload") else "download direct"
        for proc in PROCESSES:
            cpu = per_rep[f"{path} cpu {proc}"]
            per_rep[f"{path} cpu/GiB {proc}"] = [s / gib for s in cpu]
            # CPU over the direct aioboto3 client's own for the same transfer, same rep.
            per_rep[f"{path} cpu/client {proc}"] = ratios(cpu, per_rep[f"{direct} cpu client"])
        per_rep[f"{path} ratio"] = ratios(per_rep[path], per_rep[direct])
        moto, direct_moto = per_rep[f"{path} cpu moto"], per_rep[f"{direct} cpu moto"]
        per_rep[f"{path} s3 side"] = ratios(moto, direct_moto)
    for label in rec.labels:
        answer = named("direct answer cpu", label)
        per_rep[f"{answer}/GiB"] = [seconds / gib for seconds in per_rep[answer]]
        per_rep[f"{answer} ms"] = [seconds * 1000 for seconds in per_rep[answer]]
        big, small = named(UPLOADS[0], label), named("upload small", label)
        pairs = zip(per_rep[f"{big} rss"], per_rep[f"{small} rss"], strict=True)
        per_rep[named("rss growth", label)] = [100 * (b / s - 1) for b, s in pairs]
        for kind in KINDS:
            gateway, direct = f"small {kind} {named('gateway', label)}", f"small {kind} direct"
            ops, direct_ops = per_rep[f"{gateway} ops/s"], per_rep[f"{direct} ops/s"]
            per_rep[f"{gateway} ratio"] = ratios(ops, direct_ops)
            p50s = zip(per_rep[f"{gateway} p50"], per_rep[f"{direct} p50"], strict=True)
            per_rep[f"{gateway} added ms"] = [g - d for g, d in p50s]
            cpu, direct_cpu = per_rep[f"{gateway} cpu gateway"], per_rep[f"{direct} cpu client"]
            per_rep[f"{gateway} cpu/direct"] = ratios(cpu, direct_cpu)


def report(rec: Recorder, args: argparse.Namespace) -> None:
    """Print the paths, the targets, the small objects and the loops compared."""
    derive(rec, args)
    if args.size_mib:  # 0: the small objects only
        paths(rec, args)
    targets(rec, args)
    if args.small_ops:
        small_objects(rec, args)
    if len(rec.labels) == 2:
        loops(rec, args)


def cpu_cell(per_rep: dict[str, list[float]], path: str, proc: str) -> str:
    """CPU-s/GiB of ``proc``, and (in brackets) its CPU over the direct
    aioboto3 client's for the same transfer."""
    per_gib = cell(median_of(per_rep[f"{path} cpu/GiB {proc}"]))
    return f"{per_gib} ({cell(median_of(per_rep[f'{path} cpu/client {proc}']))})"


def paths(rec: Recorder, args: argparse.Namespace) -> None:
    per_rep = rec.values
    print()
    print(*head(f"{args.size_mib} MiB, medians of {args.reps} reps", "MB/s", "/ direct",
                *(f"{p} CPU-s/GiB (/ direct client's)" for p in PROCESSES),
                "moto CPU / direct's", align="lrrrrrr"), sep="\n")  # fmt: skip
    for kind, ops in (("upload", UPLOADS), ("download", DOWNLOADS)):
        rows = [f"{kind} direct"] + [named(op, label) for label in rec.labels for op in ops]
        for path in rows:
            direct = path == f"{kind} direct"
            print(row(path, cell(rec.median(path), 0),
                      "" if direct else cell(median_of(per_rep[f"{path} ratio"])),
                      "" if direct else cpu_cell(per_rep, path, "gateway"),
                      cpu_cell(per_rep, path, "client"), cpu_cell(per_rep, path, "moto"),
                      "" if direct else cell(median_of(per_rep[f"{path} s3 side"]))))  # fmt: skip
    print()
    print("Ratios are medians of per-rep ratios (the paths interleave within each rep). CPU is")
    print("utime + stime of each process (/proc/PID/stat) during the transfer, per GiB moved;")
    print("in brackets, over the direct aioboto3 client's CPU for the same transfer in the")
    print("same rep. Gateway downloads: the Python client's stub (data messages as views, no")
    print("protobuf objects); 'Client', blobgate's Client through the gateway (the same, plus")
    print("its CRC32C check of the whole object); 'parsed', a generated stub making a protobuf")
    print("object of every data message; 'Client, direct from S3', the Client asking for a")
    print("direct download: the gateway describes and presigns, the Client GETs from moto with")
    print("aiohttp and checks the CRC32C (the gateway's CPU is then its per-call cost only,")
    print(f"below the 10 ms resolution of one transfer: the targets take it from {ANSWERS}")
    print("answers per rep, without their GETs). Upload 'Client, direct to S3': the Client's")
    print("upload in a direct session: the gateway checks, presigns each part (pinning its")
    print("CRC32C) and commits; the Client hashes its source and PUTs the parts with aiohttp.")


def targets(rec: Recorder, args: argparse.Namespace) -> None:
    big, small = f"{args.size_mib} MiB", f"{args.small_mib} MiB"
    rows: list[tuple[str, str, str, Test]] = []  # label, series, target text, target test
    for label in rec.labels:
        up, up_free, up_direct, down, down_client, direct = (
            named(op, label)
            for op in (UPLOADS[0], UPLOADS[1], UPLOADS[2], DOWNLOADS[0], DOWNLOADS[1], DOWNLOADS[3])
        )
        for path in (up, up_free):
            rows += [
                (f"{path}: ratio to direct", f"{path} ratio", f">= {UPLOAD_RATIO}",
                 lambda v: v >= UPLOAD_RATIO),
                (f"{path}: S3-side CPU / direct's", f"{path} s3 side", f"<= {S3_SIDE}",
                 lambda v: v <= S3_SIDE),
                (f"{path}: gateway CPU-s/GiB", f"{path} cpu/GiB gateway", f"<= {UPLOAD_CPU}",
                 lambda v: v <= UPLOAD_CPU),
            ]  # fmt: skip
        rows += [
            (f"{up_direct}: ratio to direct", f"{up_direct} ratio", f">= {UPLOAD_RATIO}",
             lambda v: v >= UPLOAD_RATIO),
            (f"{up_direct}: gateway CPU-s/GiB", f"{up_direct} cpu/GiB gateway",
             f"<= {DIRECT_CPU}", lambda v: v <= DIRECT_CPU),
            (f"{down}: ratio to direct", f"{down} ratio", f">= {DOWNLOAD_RATIO}",
             lambda v: v >= DOWNLOAD_RATIO),
            (f"{down_client}: ratio to direct", f"{down_client} ratio", f">= {CLIENT_RATIO}",
             lambda v: v >= CLIENT_RATIO),
            (f"{direct}: ratio to direct", f"{direct} ratio", f">= {DIRECT_RATIO}",
             lambda v: v >= DIRECT_RATIO),
            (f"{direct}: gateway CPU-s/GiB (of {ANSWERS} answers)",
             f"{named('direct answer cpu', label)}/GiB", f"<= {DIRECT_CPU}",
             lambda v: v <= DIRECT_CPU),
            (named("direct download answer: gateway CPU ms", label),
             f"{named('direct answer cpu', label)} ms", "", None),
            (f"{down}: gateway CPU-s/GiB", f"{down} cpu/GiB gateway", f"<= {DOWNLOAD_CPU}",
             lambda v: v <= DOWNLOAD_CPU),
            (named(f"gateway peak RSS, {small} upload (MiB)", label),
             f"{named('upload small', label)} rss", "", None),
            (named(f"gateway peak RSS, {big} upload (MiB)", label), f"{up} rss",
             f"<= {PEAK_RSS_MIB}", lambda v: v <= PEAK_RSS_MIB),
            (named(f"RSS growth, {big} vs {small} upload (%)", label),
             named("rss growth", label), f"<= {RSS_GROWTH_PCT}", lambda v: v <= RSS_GROWTH_PCT),
            (named(f"gateway peak RSS, {big} download (MiB)", label), f"{down} rss", "", None),
            (named("gateway idle RSS before transfers (MiB)", label),
             named("idle rss", label), "", None),
        ]  # fmt: skip
        if args.small_ops:
            gateway = named("gateway", label)
            for kind in KINDS:
                rows.append((f"small {kind} {gateway}: ops/s / direct's",
                             f"small {kind} {gateway} ratio", f">= {SMALL_RATIO}",
                             lambda v: v >= SMALL_RATIO))  # fmt: skip
            rows.append((f"small upload {gateway}: S3 requests per upload",
                         f"small upload {gateway} s3", "1", lambda v: v <= 1.0))  # fmt: skip
            for kind in KINDS:
                test: Test = None
                if args.concurrency == 1:
                    test = lambda v: v <= SMALL_ADDED_MS  # noqa: E731
                rows.append((f"small {kind} {gateway}: p50 ms added to direct's",
                             f"small {kind} {gateway} added ms",
                             f"<= {SMALL_ADDED_MS} (one at a time)", test))  # fmt: skip
    if not args.size_mib:
        rows = [r for r in rows if r[1].startswith("small ")]
    print()
    print(*head(f"target (median of {args.reps} reps)", "value", "per rep", "target", "ok",
                align="lrlll"), sep="\n")  # fmt: skip
    for text, name, target, test in rows:
        values = rec.values.get(name) or []
        value = median_of(values)
        verdict = "" if test is None or value is None else ("PASS" if test(value) else "FAIL")
        each = ", ".join(f"{v:.2f}" for v in values)
        if rec.values.get(f"{name}0"):  # peak RSS: show where each transfer started from
            pairs = zip(values, rec.values[f"{name}0"], strict=True)
            each = ", ".join(f"{peak:.1f} (from {start:.1f})" for peak, start in pairs)
        print(row(text, cell(value), each, target, verdict))
    print()
    print("Peak RSS is VmHWM after resetting it to the current RSS just before the transfer.")


def small_objects(rec: Recorder, args: argparse.Namespace) -> None:
    per_rep = rec.values
    sides = [named("gateway", label) for label in rec.labels] + ["direct"]
    size = f"{args.small_size / 1024:g} KiB" if args.small_size >= 1024 else f"{args.small_size} B"
    print()
    print(*head(f"{size} x {args.small_ops}, {args.concurrency} at once (medians)", "ops/s",
                "/ direct", "p50 ms", "p50 ms added", "p99 ms", "S3 requests / op",
                *(f"{p} CPU ms/op" for p in PROCESSES), "gateway CPU / direct client's",
                align="lrrrrrlrrrr"), sep="\n")  # fmt: skip
    for kind in KINDS:
        for side in sides:
            name = f"small {kind} {side}"
            prefix = f"{name} s3 "
            by_op = sorted(k[len(prefix) :] for k in per_rep if k.startswith(prefix))
            requests = "-"
            if per_rep.get(f"{name} s3"):
                detail = ", ".join(f"{op} {cell(median_of(per_rep[prefix + op]))}" for op in by_op)
                requests = f"{cell(median_of(per_rep[f'{name} s3']))} ({detail or 'none'})"
            gateway = side != "direct"
            print(row(f"{kind} {side}", cell(median_of(per_rep[f"{name} ops/s"]), 0),
                      cell(median_of(per_rep[f"{name} ratio"])) if gateway else "",
                      cell(median_of(per_rep[f"{name} p50"]), 1),
                      cell(median_of(per_rep[f"{name} added ms"]), 1) if gateway else "",
                      cell(median_of(per_rep[f"{name} p99"]), 1), requests,
                      *(cell(median_of(per_rep.get(f"{name} cpu {p}") or [])) for p in PROCESSES),
                      cell(median_of(per_rep[f"{name} cpu/direct"])) if gateway else "",
                      ))  # fmt: skip
    print()
    print("S3 requests: the direct client's botocore calls (before-call events) and the")
    print("gateway's blobgate_s3_request_duration_seconds_count, both by operation, per op;")
    print("the gateway's HeadBucket health probes are left out. '-': metrics off. 'p50 ms")
    print("added': the gateway's p50 minus direct's, same rep; the last column, the gateway's")
    print("CPU per op over the direct aioboto3 client's, same rep (medians of the reps).")


def loops(rec: Recorder, args: argparse.Namespace) -> None:
    """uvloop against asyncio's loop: the same paths on two gateways, interleaved."""
    per_rep = rec.values
    a, u = rec.labels
    print()
    print(*head("gateway path", "MB/s uvloop / asyncio", "gateway CPU-s/GiB asyncio",
                "gateway CPU-s/GiB uvloop", align="lrrr"), sep="\n")  # fmt: skip
    for op in (*UPLOADS, *DOWNLOADS):
        print(row(op, cell(median_of(ratios(per_rep[named(op, u)], per_rep[named(op, a)]))),
                  cell(median_of(per_rep[f"{named(op, a)} cpu/GiB gateway"])),
                  cell(median_of(per_rep[f"{named(op, u)} cpu/GiB gateway"]))))  # fmt: skip
    if args.small_ops:
        for kind in KINDS:
            top, bottom = (f"small {kind} {named('gateway', x)}" for x in (u, a))
            print(row(f"small {kind} (ops/s)",
                      cell(median_of(ratios(per_rep[f"{top} ops/s"], per_rep[f"{bottom} ops/s"]))),
                      cell(median_of(per_rep[f"{bottom} cpu gateway"])) + " ms/op",
                      cell(median_of(per_rep[f"{top} cpu gateway"])) + " ms/op"))  # fmt: skip
