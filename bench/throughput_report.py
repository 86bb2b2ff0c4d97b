"""The throughput benchmark's tables: medians, per-rep values and the targets."""

from __future__ import annotations

import argparse

from bench.markdown_table import head, row
from bench.throughput_run import Recorder

UPLOAD_RATIO, DOWNLOAD_RATIO, PEAK_RSS_MIB, RSS_GROWTH_PCT = 0.9, 0.7, 160, 20  # the targets


def report(rec: Recorder, args: argparse.Namespace) -> None:
    """Print the metrics against their targets, then CPU time per transfer."""
    big, small = f"{args.size_mib} MiB", f"{args.small_mib} MiB"
    per_rep = rec.values
    for kind in ("upload", "download"):
        pairs = zip(per_rep[f"{kind} gateway"], per_rep[f"{kind} direct"], strict=True)
        per_rep[f"{kind} ratio"] = [gateway / direct for gateway, direct in pairs]
    pairs = zip(per_rep["upload gateway rss"], per_rep["upload small rss"], strict=True)
    per_rep["rss growth"] = [100 * (big_rss / small_rss - 1) for big_rss, small_rss in pairs]
    rows = [  # label, values, target text, target test
        ("upload gateway (MB/s)", "upload gateway", "", None),
        ("upload direct (MB/s)", "upload direct", "", None),
        ("upload ratio gateway/direct", "upload ratio", f">= {UPLOAD_RATIO}",
         lambda v: v >= UPLOAD_RATIO),
        ("download gateway (MB/s)", "download gateway", "", None),
        ("download direct (MB/s)", "download direct", "", None),
        ("download ratio gateway/direct", "download ratio", f">= {DOWNLOAD_RATIO}",
         lambda v: v >= DOWNLOAD_RATIO),
        (f"gateway peak RSS, {small} upload (MiB)", "upload small rss", "", None),
        (f"gateway peak RSS, {big} upload (MiB)", "upload gateway rss", f"<= {PEAK_RSS_MIB}",
         lambda v: v <= PEAK_RSS_MIB),
        (f"RSS growth, {big} vs {small} upload (%)", "rss growth", f"<= {RSS_GROWTH_PCT}",
         lambda v: v <= RSS_GROWTH_PCT),
        (f"gateway peak RSS, {big} download (MiB)", "download gateway rss", "", None),
        ("gateway idle RSS before transfers (MiB)", "idle rss", "", None),
    ]  # fmt: skip
    print()
    print(*head(f"metric (median of {args.reps} reps)", "value", "per rep", "target", "ok",
                align="lrlll"), sep="\n")  # fmt: skip
    for label, name, target, test in rows:
        value = rec.median(name)
        verdict = "" if test is None else ("PASS" if test(value) else "FAIL")
        each = ", ".join(f"{v:.2f}" if "ratio" in name else f"{v:.1f}" for v in per_rep[name])
        if per_rep.get(f"{name}0"):  # peak RSS: show where each transfer started from
            pairs = zip(per_rep[name], per_rep[f"{name}0"], strict=True)
            each = ", ".join(f"{peak:.1f} (from {start:.1f})" for peak, start in pairs)
        print(row(label, f"{value:.2f}", each, target, verdict))
    print("Ratios are medians of per-rep ratios. Peak RSS is VmHWM after resetting it to the")
    print("current RSS just before the transfer, so memory kept from earlier transfers counts.")
    print()
    columns = ("MB/s", "client CPU s", "gateway CPU s", "moto CPU s")
    print(*head(f"{big} transfer (medians)", *columns, align="lrrrr"), sep="\n")
    for op in ("upload gateway", "upload direct", "download gateway", "download direct"):
        cpus = (f"{rec.median(f'{op} cpu {p}'):.2f}" for p in ("client", "gateway", "moto"))
        print(row(op, f"{rec.median(op):.0f}", *cpus))
