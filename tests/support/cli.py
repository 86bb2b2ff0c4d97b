"""The ``blobgate`` command as a real subprocess, and the checks on what it
printed."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support import ROOT
from tests.support.server_process import SOURCE_PATH


@dataclass
class Run:
    """What a run of the command gave: its exit status and its output."""

    returncode: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode()


async def run_cli(
    *args: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    program: tuple[str, ...] = (sys.executable, "-m", "blobgate.client.cli.main"),
    cwd: Path = ROOT,
) -> Run:
    """Run the command (this checkout's code) with ``args``; what it gave."""
    environ = {**os.environ, "PYTHONPATH": SOURCE_PATH}
    environ.pop("GRPC_VERBOSITY", None)  # the command's own choice, unless a test sets it
    environ.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        *program,
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=environ,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=60)
    assert proc.returncode is not None
    return Run(proc.returncode, out, err.decode())


def assert_one_line_error(result: Run, code: int, starts: str) -> None:
    """The command failed with ``code``: one line on stderr that begins with
    ``starts``, no traceback, nothing on stdout."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stderr.startswith(starts), result.stderr
    assert result.stderr.endswith("\n")
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == b""
