"""The blobgate-server process: start-up, bad settings, --dev, and graceful
shutdown on SIGTERM with an upload in flight."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import HeldUpload
from server_process import SERVER, ServerProcess

from blobgate.v1 import storage_pb2 as pb
from blobgate.v1 import storage_pb2_grpc

MiB = 1024 * 1024


async def health_status(channel: grpc.aio.Channel, service: str = "") -> Any:
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5
    )
    return response.status


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        (["--part-size", "1MiB"], {}, "part_size"),
        (["--listen", "nowhere"], {}, "listen"),
        ([], {"BLOBGATE_PARTS_IN_FLIGHT": "many"}, "parts_in_flight"),
        (["--log-level", "loud"], {}, "log_level"),
    ],
)
async def test_bad_setting_stops_startup_with_one_line(
    argv: list[str], env: dict[str, str], names: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *SERVER, *argv, stderr=asyncio.subprocess.PIPE, env={**os.environ, **env}
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2
    assert len(lines) == 1, lines
    assert names in lines[0]
    assert "Traceback" not in lines[0]


async def test_dev_mode_serves_an_embedded_s3(processes: list[ServerProcess]) -> None:
    server = await ServerProcess.start("--dev", "--listen", "127.0.0.1:0")
    processes.append(server)
    port = await server.wait_listening()
    assert "lost on exit" in server.text()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = storage_pb2_grpc.StorageServiceStub(channel)

        async def requests() -> AsyncIterator[pb.UploadRequest]:
            yield pb.UploadRequest(spec=pb.UploadSpec(key="hello.txt"))
            yield pb.UploadRequest(data=b"hello, blobgate")

        uploaded = await stub.Upload(requests(), timeout=30)
        assert uploaded.object.bucket == "blobgate"
        assert uploaded.object.content_type == "text/plain"
        chunks = [m async for m in stub.Download(pb.DownloadRequest(key="hello.txt"), timeout=30)]
        assert b"".join(m.data for m in chunks[1:]) == b"hello, blobgate"
    server.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(server.proc.wait(), 30) == 0


async def test_sigterm_drains_in_flight_upload(
    moto_endpoint: str, bucket: str, s3: Any, processes: list[ServerProcess]
) -> None:
    server = await ServerProcess.gateway(
        moto_endpoint, bucket, "--part-size", "5MiB", "--shutdown-grace", "20", "--drain-delay", "0"
    )
    processes.append(server)
    port = await server.wait_listening()
    held = HeldUpload("drained.bin", os.urandom(7 * MiB), hold_at=4 * MiB)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        upload = asyncio.ensure_future(stub.Upload(held.requests(), timeout=60))
        await held.holding()
        server.proc.send_signal(signal.SIGTERM)

        # Draining: health says NOT_SERVING and new calls are refused...
        async with asyncio.timeout(20):
            while True:
                try:
                    status = await health_status(channel)
                except grpc.aio.AioRpcError as exc:
                    # Refused, or cancelled unstarted as the server stopped
                    # accepting (gRPC core does that: grpc/grpc#41785).
                    assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
                    break
                if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                await asyncio.sleep(0.05)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as fresh:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await storage_pb2_grpc.StorageServiceStub(fresh).Stat(
                    pb.StatRequest(key="drained.bin"), timeout=5
                )
            # Refused at connect (UNAVAILABLE), or cancelled by gRPC core if it
            # arrived just as the server stopped accepting: never served.
            assert refused.value.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.CANCELLED,
            )

        # ...while the upload in flight completes.
        await held.completes(upload)

    assert await asyncio.wait_for(server.proc.wait(), 30) == 0
    stored = await s3.get_object(Bucket=bucket, Key="drained.bin")
    assert await stored["Body"].read() == held.blob
    assert "shutting down" in server.text()
