"""The progress bars of ``blobgate put``/``get``: drawn when stderr is a real
terminal (a pseudo-terminal here), absent when it is not or with --json."""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import struct
import sys
import termios
from pathlib import Path

import pytest

from blobgate.server.app import Gateway
from tests.support import ROOT
from tests.support.cli import Run, run_cli
from tests.support.server_process import SOURCE_PATH

MiB = 1024 * 1024
DATA = random.Random(1).randbytes(3 * MiB + 17)


@pytest.fixture
def server(gateway: Gateway) -> str:
    return f"127.0.0.1:{gateway.port}"


def _read_all(fd: int) -> bytes:
    """Everything the terminal shows until the last writer closes it."""
    output = bytearray()
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the pty's other side
            break
        if not data:
            break
        output += data
    return bytes(output)


async def run_cli_tty(*args: str) -> Run:
    """Run the CLI with stderr on a pseudo-terminal (80x24), stdout on a pipe."""
    main_fd, tty_fd = os.openpty()
    fcntl.ioctl(tty_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "blobgate.client.cli.main",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=tty_fd,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": SOURCE_PATH},
        )
    finally:
        os.close(tty_fd)
    try:
        reader = asyncio.create_task(asyncio.to_thread(_read_all, main_fd))
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        terminal = await asyncio.wait_for(reader, timeout=10)
    finally:
        os.close(main_fd)
    assert proc.returncode is not None
    return Run(proc.returncode, out, terminal.decode(errors="replace"))


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(DATA)
    return path


async def test_put_and_get_draw_a_bar_on_a_terminal(
    server: str, big_file: Path, tmp_path: Path
) -> None:
    put = await run_cli_tty("--server", server, "put", str(big_file), "bars/big.bin")
    assert put.returncode == 0, put.stderr
    assert "100%" in put.stderr and "put bars/big.bin" in put.stderr, put.stderr
    assert "3.00M" in put.stderr, put.stderr
    assert put.text.startswith("put bars/big.bin: 3.0 MiB")  # stdout untouched
    # Every byte sent, the server commits: the bar says so meanwhile, and
    # the line it leaves has the plain label again.
    assert "put bars/big.bin (committing)" in put.stderr, put.stderr
    final = put.stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert final.startswith("put bars/big.bin: 100%"), final

    copy = tmp_path / "copy.bin"
    get = await run_cli_tty("--server", server, "get", "bars/big.bin", str(copy))
    assert get.returncode == 0, get.stderr
    assert "100%" in get.stderr and "get bars/big.bin" in get.stderr, get.stderr
    assert "committing" not in get.stderr
    assert await asyncio.to_thread(copy.read_bytes) == DATA

    # Object to stdout: the bar still goes to the terminal, the bytes stay clean.
    to_stdout = await run_cli_tty("--server", server, "get", "bars/big.bin", "-")
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert "100%" in to_stdout.stderr
    assert to_stdout.stdout == DATA


async def test_no_bar_with_json_or_no_progress(server: str, big_file: Path) -> None:
    put = await run_cli_tty("--server", server, "--json", "put", str(big_file), "bars/j.bin")
    assert put.returncode == 0, put.stderr
    assert put.stderr == ""
    get = await run_cli_tty("--server", server, "get", "--no-progress", "bars/j.bin", "-")
    assert get.returncode == 0, get.stderr
    assert get.stderr == ""


async def test_failure_on_a_terminal_is_one_line(server: str) -> None:
    result = await run_cli_tty("--server", server, "get", "bars/missing", "-")
    assert result.returncode == 3
    assert result.stderr.strip().startswith("blobgate: NOT_FOUND"), result.stderr
    assert "%" not in result.stderr


async def test_no_bar_without_a_terminal(server: str, big_file: Path, tmp_path: Path) -> None:
    put = await run_cli("--server", server, "put", str(big_file), "bars/plain.bin")
    assert (put.returncode, put.stderr) == (0, "")
    get = await run_cli("--server", server, "get", "bars/plain.bin", str(tmp_path / "c"))
    assert (get.returncode, get.stderr) == (0, "")
    to_stdout = await run_cli("--server", server, "get", "bars/plain.bin", "-")
    assert (to_stdout.returncode, to_stdout.stderr) == (0, "")
    assert to_stdout.stdout == DATA
