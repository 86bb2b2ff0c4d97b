"""blobgate-probe, the container HEALTHCHECK: exit 0 only when SERVING."""

from __future__ import annotations

import asyncio
import sys

import pytest

from blobgate.server.app import Gateway

# Every test runs blobgate-probe as a subprocess.
pytestmark = pytest.mark.slow

PROBE = [sys.executable, "-m", "blobgate.server.probe"]


async def _probe(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *PROBE, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_probe_says_serving(gateway: Gateway) -> None:
    code, out = await _probe("--address", f"127.0.0.1:{gateway.port}")
    assert code == 0, out
    assert "SERVING" in out


async def test_probe_fails_once_shutdown_starts(gateway: Gateway) -> None:
    await gateway.health.enter_graceful_shutdown()
    code, out = await _probe("--address", f"127.0.0.1:{gateway.port}")
    assert code == 1, out
    assert "NOT_SERVING" in out


async def test_probe_fails_when_nothing_listens(gateway: Gateway) -> None:
    port = gateway.port
    await gateway.stop(grace=0)
    code, out = await _probe("--address", f"127.0.0.1:{port}", "--timeout", "1")
    assert code == 1
    assert out.count("\n") == 1 and "Traceback" not in out
