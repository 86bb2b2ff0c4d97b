"""The ``event_loop`` setting: blobgate-server runs on uvloop or asyncio's
loop as asked, says which in its start-up log, serves on either, and refuses
to start when uvloop is asked for and cannot be imported."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from blobgate.client import Client
from tests.support.server_process import SOURCE_PATH, ServerProcess

SERVED_BY = {
    "auto": "event loop: uvloop",
    "uvloop": "event loop: uvloop",
    "asyncio": "event loop: asyncio",
}


def gateway_args(moto_endpoint: str, bucket: str, choice: str) -> list[str]:
    return [
        "--listen", "127.0.0.1:0", "--s3-endpoint", moto_endpoint, "--default-bucket", bucket,
        "--create-buckets", "--drain-delay", "0", "--event-loop", choice,
    ]  # fmt: skip


def without_uvloop(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import uvloop`` fails: a module of that name
    that raises ImportError, ahead of site-packages on the path."""
    (tmp_path / "uvloop.py").write_text('raise ImportError("no uvloop in this test")\n')
    path = os.pathsep.join([str(tmp_path), SOURCE_PATH])
    return {"PYTHONPATH": path}


async def round_trip(port: int) -> None:
    async with Client(f"127.0.0.1:{port}") as client:
        blob = os.urandom(300_000)
        await client.upload("loop.bin", blob)
        assert b"".join([chunk async for chunk in client.download("loop.bin")]) == blob


@pytest.mark.parametrize("choice", ["auto", "asyncio", "uvloop"])
async def test_server_runs_on_the_loop_asked_for(
    choice: str, moto_endpoint: str, bucket: str, processes: list[ServerProcess]
) -> None:
    server = await ServerProcess.start(*gateway_args(moto_endpoint, bucket, choice))
    processes.append(server)
    port = await server.wait_listening()
    assert SERVED_BY[choice] in server.text()
    await round_trip(port)
    server.proc.send_signal(signal.SIGTERM)
    assert await server.proc.wait() == 0


async def test_auto_falls_back_to_asyncio_without_uvloop(
    moto_endpoint: str, bucket: str, processes: list[ServerProcess], tmp_path: Path
) -> None:
    server = await ServerProcess.start(
        *gateway_args(moto_endpoint, bucket, "auto"), env=without_uvloop(tmp_path)
    )
    processes.append(server)
    port = await server.wait_listening()
    assert "event loop: asyncio (uvloop is not installed)" in server.text()
    await round_trip(port)


async def test_uvloop_asked_for_but_missing_stops_start_up(
    moto_endpoint: str, bucket: str, processes: list[ServerProcess], tmp_path: Path
) -> None:
    server = await ServerProcess.start(
        *gateway_args(moto_endpoint, bucket, "uvloop"), env=without_uvloop(tmp_path)
    )
    processes.append(server)
    assert await server.proc.wait() == 1
    assert server.proc.stderr is not None
    err = (await server.proc.stderr.read()).decode()
    assert "event_loop is uvloop, but uvloop cannot be imported (no uvloop in this test)" in err
    assert "listening" not in err
