"""What a benchmark run prints about the machine and the gateway code it measured."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

from bench import ROOT

# What the gateway process runs: its own portion, and the shared room and the
# generated code it imports from protos/.
GATEWAY_CODE = ("server/blobgate", "protos/blobgate")


def _git(*args: str) -> str:
    command = ["git", "-C", str(ROOT), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()


def code_version() -> str:
    """The commit, and a digest of the gateway's code as it is on disk (the
    tree may be ahead of the commit)."""
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", *GATEWAY_CODE)
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = "?", ""
    digest = hashlib.sha256()
    for folder in GATEWAY_CODE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(path.read_bytes())
    state = " + uncommitted changes" if dirty else ""
    folders = " ".join(f"{folder}/**/*.py" for folder in GATEWAY_CODE)
    return f"gateway code: commit {commit}{state}, {folders} sha256 {digest.hexdigest()[:12]}"


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
