"""A process's memory (RSS, its peak) and CPU time, read from /proc."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from bench.common.errors import BenchError

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def status_mib(pid: int, field: str) -> float:
    """A size line of /proc/PID/status (VmRSS, VmHWM, ...) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no {field} in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> None:
    """Reset the process's VmHWM to its current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


class RssSampler:
    """A process's VmRSS every 0.2 s: when during a run the peak came."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.highest = 0.0
        self.at = 0.0

    async def run(self) -> None:
        start = time.monotonic()
        while True:
            rss = status_mib(self.pid, "VmRSS")
            if rss > self.highest:
                self.highest, self.at = rss, time.monotonic() - start
            await asyncio.sleep(0.2)
