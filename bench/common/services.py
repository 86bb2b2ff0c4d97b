"""moto's S3 server and the gateway as subprocesses on loopback: what they
run, starting them, waiting until they answer, stopping them."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aioboto3
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import ROOT
from bench.common.errors import BenchError
from bench.common.run_header import code_version, machine

HOST = "127.0.0.1"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
AWS_ENV["AWS_DEFAULT_REGION"] = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the benchmark dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


@contextlib.contextmanager
def spawned(
    name: str, cmd: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run cmd in its own session (Ctrl-C reaches only us); stop it on the way out."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    print(f"{name} ignored SIGTERM for 10 s; killing it", file=sys.stderr)
                    proc.kill()
                    proc.wait(timeout=5)


async def wait_until(
    proc: subprocess.Popen[bytes], what: str, log: Path, within: float,
    ready: Callable[[], Awaitable[bool]],
) -> None:  # fmt: skip
    """Poll ready() until it says yes; fail early if the process exits."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with code {proc.returncode}; see {log}")
        with contextlib.suppress(OSError, grpc.aio.AioRpcError):
            if await ready():
                return
        await asyncio.sleep(0.25)
    raise BenchError(f"{what} not ready within {within:.0f} s; see {log}")


async def moto_listening(port: int) -> bool:
    _, writer = await asyncio.open_connection(HOST, port)
    writer.close()
    return True


async def gateway_serving(channel: grpc.aio.Channel) -> bool:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def s3_session() -> Any:
    """An aioboto3 session with the credentials moto is started with."""
    return aioboto3.Session(
        AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1"
    )


@dataclass(frozen=True)
class ServicePlan:
    """The commands, environments, addresses and log files of one moto and one gateway."""

    moto_cmd: list[str]
    gateway_cmd: list[str]
    moto_env: dict[str, str]
    gateway_env: dict[str, str]
    moto_port: int
    moto_url: str
    gateway_addr: str
    logs: dict[str, Path]
    header: list[str]  # machine, code, commands, logs: for the report
    metrics_url: str | None = None  # the gateway's /metrics, when asked for
    root_certificates: bytes | None = None  # the gateway serves TLS under this CA


def gateway_channel(plan: ServicePlan) -> grpc.aio.Channel:
    """A channel to ``plan``'s gateway: TLS when it serves TLS."""
    if plan.root_certificates is None:
        return grpc.aio.insecure_channel(plan.gateway_addr)
    credentials = grpc.ssl_channel_credentials(root_certificates=plan.root_certificates)
    return grpc.aio.secure_channel(plan.gateway_addr, credentials)


def plan_services(
    *, bucket: str, settings: Sequence[str], gateway_cmd: Sequence[str] = (),
    gateway_env: Mapping[str, str] | None = None, log_dir: Path | None, log_prefix: str,
    metrics: bool = False, root_certificates: bytes | None = None,
) -> ServicePlan:  # fmt: skip
    """Pick the ports and the log directory (``log_dir``, or a new temporary
    one named ``log_prefix``...) and write the commands. The gateway serves
    ``bucket`` from moto, with ``settings`` (its further flags) appended;
    ``gateway_cmd`` () means blobgate-server beside this Python; ``metrics``
    serves its /metrics on a free loopback port (``metrics_url``);
    ``root_certificates``: the CA of the gateway's certificate, when
    ``settings`` make it serve TLS (its readiness is checked over TLS)."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix=log_prefix))
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = {"moto": log_dir / "moto.log", "gateway": log_dir / "gateway.log"}
    ports = {"moto": free_port(), "gateway": free_port()}
    moto_url, gateway_addr = f"http://{HOST}:{ports['moto']}", f"{HOST}:{ports['gateway']}"
    gateway = list(gateway_cmd) or [str(Path(sys.executable).with_name("blobgate-server"))]
    gateway += [
        "--listen", gateway_addr, "--s3-endpoint", moto_url, "--s3-region", "us-east-1",
        "--default-bucket", bucket, "--create-buckets", *settings,
    ]  # fmt: skip
    metrics_url = None
    if metrics:
        metrics_addr = f"{HOST}:{free_port()}"
        gateway += ["--metrics-listen", metrics_addr]
        metrics_url = f"http://{metrics_addr}/metrics"
    moto = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(ports["moto"])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOBGATE_")} | AWS_ENV
    extra_env = dict(gateway_env or {})
    header = [
        machine(),
        code_version(),
        "gateway: " + shlex.join([f"{k}={v}" for k, v in extra_env.items()] + gateway),
        "moto:    " + shlex.join(moto),
        f"logs:    {log_dir}",
    ]
    return ServicePlan(
        moto, gateway, env, env | extra_env, ports["moto"], moto_url, gateway_addr, logs, header,
        metrics_url, root_certificates,
    )  # fmt: skip


def second_gateway(plan: ServicePlan, label: str, settings: Sequence[str]) -> ServicePlan:
    """``plan`` with another gateway beside the first, on the same moto: its
    own ports and log (gateway-LABEL.log), ``settings`` appended to the
    first's command (later flags win). Start it with ``gateway_beside``."""
    addr = f"{HOST}:{free_port()}"
    cmd = [*plan.gateway_cmd, "--listen", addr, *settings]
    metrics_url = None
    if plan.metrics_url is not None:
        metrics_addr = f"{HOST}:{free_port()}"
        cmd += ["--metrics-listen", metrics_addr]
        metrics_url = f"http://{metrics_addr}/metrics"
    log = plan.logs["gateway"].with_name(f"gateway-{label}.log")
    logs = {**plan.logs, "gateway": log}
    return dataclasses.replace(plan, gateway_cmd=cmd, gateway_addr=addr, logs=logs,
                               metrics_url=metrics_url)  # fmt: skip


@contextlib.asynccontextmanager
async def gateway_beside(plan: ServicePlan) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Start ``plan``'s gateway alone (its moto already runs: see
    ``second_gateway``), wait until it serves; stop it on the way out."""
    log = plan.logs["gateway"]
    with spawned(log.stem, plan.gateway_cmd, plan.gateway_env, log) as gateway:
        async with gateway_channel(plan) as channel:
            serving = partial(gateway_serving, channel)
            await wait_until(gateway, log.stem, log, 90, serving)
        yield gateway


@dataclass
class Services:
    """moto and the gateway, running on loopback."""

    moto: subprocess.Popen[bytes]
    gateway: subprocess.Popen[bytes]
    moto_url: str
    gateway_addr: str
    logs: dict[str, Path]
    header: list[str]  # machine, code, commands


@contextlib.asynccontextmanager
async def services(plan: ServicePlan) -> AsyncIterator[Services]:
    """Start moto and the gateway as ``plan`` says, wait until both answer;
    stop both on the way out."""
    logs = plan.logs
    with (
        spawned("moto", plan.moto_cmd, plan.moto_env, logs["moto"]) as moto,
        spawned("gateway", plan.gateway_cmd, plan.gateway_env, logs["gateway"]) as gateway,
    ):
        listening = partial(moto_listening, plan.moto_port)
        await wait_until(moto, "moto", logs["moto"], 60, listening)
        async with gateway_channel(plan) as channel:
            serving = partial(gateway_serving, channel)
            await wait_until(gateway, "gateway", logs["gateway"], 90, serving)
        yield Services(moto, gateway, plan.moto_url, plan.gateway_addr, logs, plan.header)
