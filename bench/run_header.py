"""What a benchmark run prints about the machine and the gateway code it measured."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

from bench import ROOT


def code_version() -> str:
    """The commit, and a digest of server/ as it is on disk (the tree may be ahead of it)."""
    git = ["git", "-C", str(ROOT)]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run([*git, "status", "--porcelain", "server"], capture_output=True,
                               text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = "?", ""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "server").rglob("*.py")):
        digest.update(path.read_bytes())
    state = " + uncommitted changes" if dirty else ""
    return f"gateway code: commit {commit}{state}, server/**/*.py sha256 {digest.hexdigest()[:12]}"


def machine() -> str:
    """CPUs, CPU model, OS, and the versions of Python and the libraries that matter."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        "?",
    )
    malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    return (
        f"machine: nproc {len(os.sched_getaffinity(0))}, CPU {model}, {platform.platform()}, "
        f"Python {platform.python_version()}, grpcio {version('grpcio')}, "
        f"aioboto3 {version('aioboto3')}, moto {version('moto')}"
        + (f", client env {malloc}" if malloc else "")
    )
