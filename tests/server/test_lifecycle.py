"""The blobgate-server process: start-up, bad settings and start-up mistakes
(each its exit code, in one line of the log format), --dev, and graceful
shutdown on SIGTERM with an upload in flight."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blobgate.v1 import storage_pb2 as pb
from blobgate.v1 import storage_pb2_grpc
from tests.fakes.pki import CA
from tests.support.helpers import HeldUpload
from tests.support.server_process import SERVER, ServerProcess

# Every test starts blobgate-server as a subprocess.
pytestmark = pytest.mark.slow

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


def refusal_args(case: str, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """The flags and environment of a start-up mistake."""
    base = ["--listen", "127.0.0.1:0", "--s3-endpoint", "http://127.0.0.1:9"]
    if case == "otel":  # an exporter this server does not have
        return base, {"OTEL_TRACES_EXPORTER": "zipkin"}
    if case == "tls":  # a file a setting names is missing
        missing = str(tmp_path / "missing.pem")
        return [*base, "--tls-cert-file", missing, "--tls-key-file", missing], {}
    ca = CA()  # "policy": a policy file that does not load
    cert, key = ca.server().write(tmp_path, "server")
    policy = tmp_path / "policy.toml"
    policy.write_text("[[grant]")
    tls = ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    return [
        *base, *tls, "--tls-client-ca-file", str(ca.write(tmp_path)),
        "--auth-policy-file", str(policy),
    ], {}  # fmt: skip


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize(
    ("case", "code", "fragment"),
    [
        ("otel", 2, "OTEL_TRACES_EXPORTER='zipkin' is not supported"),
        ("tls", 1, "bad setting tls_cert_file (--tls-cert-file / BLOBGATE_TLS_CERT_FILE)"),
        ("policy", 1, "bad setting auth_policy_file (--auth-policy-file"),
    ],
)
async def test_start_up_mistakes_exit_with_their_code_in_one_line_of_the_log_format(
    tmp_path: Path, case: str, code: int, fragment: str, log_format: str
) -> None:
    argv, env = refusal_args(case, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        *SERVER, *argv, "--log-format", log_format,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **env},
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == code
    [line] = err.decode().strip().splitlines()
    if log_format == "text":
        assert line.startswith(f"blobgate-server: {fragment}"), line
    else:
        entry = json.loads(line)
        assert entry["message"].startswith(fragment), entry
        assert (entry["level"], entry["logger"], entry["exit_code"]) == (
            "CRITICAL",
            "blobgate",
            code,
        )
    assert "Traceback" not in line


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
        assert uploaded.object.version_id  # --dev's bucket is versioned (bucket_versioning)
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
