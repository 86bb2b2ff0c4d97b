"""health_listen: a second, plaintext listener with only grpc.health.v1,
sharing the gateway's health service, for probes that cannot present a
client certificate (the Docker health check, kubelet). In mTLS mode it
answers a plaintext check while the main port refuses plaintext and
certificate-less callers; it follows the gateway to NOT_SERVING (S3 down,
draining) and goes with it; blobgate-probe, as the Docker image runs it,
reads it; addresses it cannot use stop start-up."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blobgate.server.app import Gateway, StartupError, start_gateway
from blobgate.server.settings_loading import SettingsError, load_settings
from blobgate.server.storage.factory import memory_config
from blobgate.server.storage.memory.backend import MemoryBackend
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes.pki import CA
from tests.support import ROOT
from tests.support.gateways import gateway_settings
from tests.support.helpers import free_port

Code = grpc.StatusCode
SERVICE = "blobgate.v1.StorageService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PROBE = Path(sys.executable).parent / "blobgate-probe"
# Each check on a connection of its own, so a refused one is not hidden by
# a shared subchannel.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@asynccontextmanager
async def mtls_gateway(tmp_path: Path, ca: CA, **overrides: Any) -> AsyncIterator[Gateway]:
    cert_file, key_file = ca.server().write(tmp_path, "server")
    settings = gateway_settings(
        "http://127.0.0.1:9",
        "health-listen",
        tls_cert_file=cert_file,
        tls_key_file=key_file,
        tls_client_ca_file=ca.write(tmp_path),
        health_listen="127.0.0.1:0",
        **overrides,
    )
    gateway = await start_gateway(settings, backend=MemoryBackend(memory_config(settings)))
    try:
        yield gateway
    finally:
        await gateway.stop(grace=0.5)


async def check(channel: grpc.aio.Channel, service: str = SERVICE) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(response.status)


def plaintext(port: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION)


async def test_plaintext_health_beside_an_mtls_port(tmp_path: Path) -> None:
    ca = CA()
    async with mtls_gateway(tmp_path, ca) as gateway:
        assert gateway.health_port is not None and gateway.health_port != gateway.port
        async with plaintext(gateway.health_port) as channel:
            assert await check(channel) == SERVING
            assert await check(channel, "") == SERVING
            # Only health: not the StorageService, not reflection.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await storage_pb2_grpc.StorageServiceStub(channel).Stat(
                    storage_pb2.StatRequest(key="k"), timeout=5
                )
            assert caught.value.code() == Code.UNIMPLEMENTED

        # The main port: plaintext refused, TLS without a client certificate refused.
        async with plaintext(gateway.port) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await check(channel)
            assert caught.value.code() == Code.UNAVAILABLE
        no_cert = grpc.ssl_channel_credentials(root_certificates=ca.pem)
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{gateway.port}", no_cert, options=OWN_CONNECTION
        ) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await storage_pb2_grpc.StorageServiceStub(channel).Stat(
                    storage_pb2.StatRequest(key="k"), timeout=5
                )
            assert caught.value.code() == Code.UNAVAILABLE
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await check(channel)
            assert caught.value.code() == Code.UNAVAILABLE
        # With one, the main port says the same as the listener.
        client = ca.client("prober")
        with_cert = grpc.ssl_channel_credentials(ca.pem, client.key, client.cert)
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{gateway.port}", with_cert, options=OWN_CONNECTION
        ) as channel:
            assert await check(channel) == SERVING


async def test_the_listener_follows_the_gateway_to_not_serving_and_stops_with_it(
    tmp_path: Path,
) -> None:
    ca = CA()
    async with mtls_gateway(tmp_path, ca, drain_delay=1.0) as gateway:
        assert gateway.health_port is not None
        port = gateway.health_port
        async with plaintext(port) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=SERVICE)
            )
            assert (await watch.read()).status == SERVING
            stopping = asyncio.create_task(gateway.stop(grace=0.5))
            # Draining: the listener says NOT_SERVING, to a watcher and a check.
            assert (await asyncio.wait_for(watch.read(), 5)).status == NOT_SERVING
            async with plaintext(port) as other:
                assert await check(other) == NOT_SERVING
                assert await check(other, "") == NOT_SERVING
            assert not stopping.done()  # still within drain_delay
            await asyncio.wait_for(stopping, 20)
        # Stopped with the gateway: nothing listens there any more.
        async with plaintext(port) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await check(channel)
            assert caught.value.code() == Code.UNAVAILABLE


async def test_the_listener_says_not_serving_while_s3_is_down() -> None:
    settings = gateway_settings(
        f"http://127.0.0.1:{free_port()}",  # nothing answers there
        "health-listen",
        create_buckets=False,
        s3_connect_timeout=0.5,
        s3_max_attempts=1,
        health_listen="127.0.0.1:0",
    )
    gateway = await start_gateway(settings)
    try:
        assert gateway.health_port is not None
        async with plaintext(gateway.health_port) as channel:
            assert await check(channel) == NOT_SERVING
            assert await check(channel, "") == NOT_SERVING
    finally:
        await gateway.stop(grace=0)


# blobgate-probe, as the Docker image's HEALTHCHECK runs it.


def _dockerfile_healthcheck() -> tuple[str, list[str]]:
    """The Dockerfile's BLOBGATE_HEALTH_LISTEN and its HEALTHCHECK command."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    listen = re.search(r"BLOBGATE_HEALTH_LISTEN=(\S+)", text)
    command = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.MULTILINE)
    assert listen is not None and command is not None
    return listen.group(1), json.loads(command.group(1))


async def _run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.slow
async def test_the_docker_healthcheck_probes_the_listener_in_mtls_mode(tmp_path: Path) -> None:
    listen, command = _dockerfile_healthcheck()
    assert listen.startswith("127.0.0.1:")  # loopback: the check runs in the container
    assert command[0] == "blobgate-probe"
    assert command[command.index("--address") + 1] == listen
    ca = CA()
    async with mtls_gateway(tmp_path, ca) as gateway:
        # The container's environment: the server's own TLS variables, which
        # the probe would otherwise take as its own (and speak TLS).
        server_cert, server_key = ca.server().write(tmp_path, "env-server")
        env = {
            **os.environ,
            "BLOBGATE_HEALTH_LISTEN": listen,
            "BLOBGATE_TLS_CERT_FILE": str(server_cert),
            "BLOBGATE_TLS_KEY_FILE": str(server_key),
            "BLOBGATE_TLS_CLIENT_CA_FILE": str(ca.write(tmp_path)),
            "BLOBGATE_TLS_CA_FILE": str(ca.write(tmp_path)),
        }
        argv = [str(PROBE), *command[1:]]
        argv[argv.index("--address") + 1] = f"127.0.0.1:{gateway.health_port}"
        code, out = await _run(argv, env)
        assert code == 0, out
        assert out.strip() == f"127.0.0.1:{gateway.health_port} {SERVICE}: SERVING"

        # Without --plaintext it would take the server's variables as its own
        # and speak TLS to the plaintext listener.
        bare = [arg for arg in argv if arg != "--plaintext"]
        assert len(bare) == len(argv) - 1
        code, out = await _run(bare, env)
        assert code == 1, out

        # The same probe at the main port fails: no certificate of its own.
        argv[argv.index("--address") + 1] = f"127.0.0.1:{gateway.port}"
        code, out = await _run(argv, env)
        assert code == 1, out
        assert "UNAVAILABLE" in out

        await gateway.health.enter_graceful_shutdown()
        argv[argv.index("--address") + 1] = f"127.0.0.1:{gateway.health_port}"
        code, out = await _run(argv, env)
        assert code == 1, out
        assert "NOT_SERVING" in out


# Bad addresses


@pytest.mark.parametrize("value", ["50052", "127.0.0.1", "127.0.0.1:http", ":50052", "h:70000"])
def test_malformed_addresses_are_refused(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(["--health-listen", value])
    message = str(caught.value)
    assert "health_listen" in message and "host:port" in message and "\n" not in message


def test_empty_is_off() -> None:
    settings, _ = load_settings(["--health-listen", ""])
    assert settings.health_listen == ""
    assert load_settings([])[0].health_listen == ""


async def test_an_address_it_cannot_listen_on_stops_start_up() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for address in (f"127.0.0.1:{port}", "no-such-host.invalid:50052"):
            settings = gateway_settings(
                "http://127.0.0.1:9", "health-listen", health_listen=address
            )
            with pytest.raises(StartupError) as caught:
                await start_gateway(settings, backend=MemoryBackend(memory_config(settings)))
            message = str(caught.value)
            assert message.startswith("bad setting health_listen (--health-listen")
            assert f"cannot listen on {address}" in message and "\n" not in message


async def test_off_by_default(gateway: Gateway) -> None:
    assert gateway.health_server is None and gateway.health_port is None
