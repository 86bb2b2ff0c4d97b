"""TLS on the server: plaintext refused, TLS and mTLS with the Python client,
certificates reloaded from disk without a restart, bad files and plaintext
beyond loopback refused at start-up, the probe and the Consul check over TLS."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from blobgate.client.client import Client
from blobgate.client.errors import BlobgateError
from blobgate.server.app import Gateway, StartupError, start_gateway
from blobgate.server.consul_registration import ConsulRegistration
from blobgate.server.core.settings import Settings
from blobgate.server.tls import ServerTLS, is_loopback
from blobgate.shared.tls import TLSConfig
from tests.fakes.consul import ConsulAgent
from tests.fakes.pki import CA, Issued, serial_of
from tests.support.gateways import gateway_settings
from tests.support.helpers import eventually
from tests.support.server_process import ServerProcess

PROBE = [sys.executable, "-m", "blobgate.server.probe"]
SERVICE = "blobgate.v1.StorageService"
# Each test channel its own connection: gRPC would otherwise share one
# between channels of the same process, and a test of a new handshake would
# see an old connection.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@dataclass
class Pki:
    """A CA, the server's files, a good client, a foreign CA's client."""

    ca: CA
    ca_file: Path
    cert_file: Path
    key_file: Path
    client: Issued
    foreign_client: Issued
    dir: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = CA()
    cert_file, key_file = ca.server().write(tmp_path, "server")
    return Pki(
        ca,
        ca.write(tmp_path),
        cert_file,
        key_file,
        ca.client("good-client"),
        CA("foreign CA").client("foreign-client"),
        tmp_path,
    )


def tls_settings(moto_endpoint: str, bucket: str, pki: Pki, **overrides: Any) -> Settings:
    return gateway_settings(
        moto_endpoint,
        bucket,
        tls_cert_file=pki.cert_file,
        tls_key_file=pki.key_file,
        **overrides,
    )


@asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[Gateway]:
    gateway = await start_gateway(settings)
    try:
        yield gateway
    finally:
        await gateway.stop(grace=0.5)


async def health_over(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    return int(response.status)


def secure(port: int, ca: bytes, client: Issued | None = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=None if client is None else client.key,
        certificate_chain=None if client is None else client.cert,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=OWN_CONNECTION)


async def refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_over(channel)
    return caught.value.code()


def served_serial(port: int, ca_file: Path) -> int:
    """The serial of the certificate a fresh TLS handshake is answered with."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return serial_of(ssl.DER_cert_to_PEM_cert(der).encode())


# --- TLS -------------------------------------------------------------------------------


async def test_tls_server_refuses_plaintext(moto_endpoint: str, bucket: str, pki: Pki) -> None:
    async with started(tls_settings(moto_endpoint, bucket, pki)) as gw:
        plain = grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}", options=OWN_CONNECTION)
        assert await refused(plain) == grpc.StatusCode.UNAVAILABLE
        # The same server answers over TLS.
        async with secure(gw.port, pki.ca.pem) as channel:
            assert await health_over(channel) == health_pb2.HealthCheckResponse.SERVING


async def test_python_client_over_tls(moto_endpoint: str, bucket: str, pki: Pki) -> None:
    async with started(tls_settings(moto_endpoint, bucket, pki)) as gw:
        async with Client(
            f"127.0.0.1:{gw.port}", root_certificates=pki.ca.pem, server_name_override="localhost"
        ) as client:
            assert client.tls == TLSConfig(pki.ca.pem, server_name_override="localhost")
            await client.upload("tls/object", b"over TLS" * 1000)
            received = b"".join([chunk async for chunk in client.download("tls/object")])
        assert received == b"over TLS" * 1000
        # A client that does not trust the server's CA is refused at the handshake.
        async with Client(
            f"127.0.0.1:{gw.port}", root_certificates=CA("other").pem, max_attempts=1
        ) as stranger:
            with pytest.raises(BlobgateError, match=r"UNAVAILABLE.*CERTIFICATE_VERIFY_FAILED"):
                await stranger.stat("tls/object")


# --- mTLS ------------------------------------------------------------------------------


async def test_mtls_refuses_clients_without_a_good_certificate(
    moto_endpoint: str, bucket: str, pki: Pki
) -> None:
    settings = tls_settings(moto_endpoint, bucket, pki, tls_client_ca_file=pki.ca_file)
    async with started(settings) as gw:
        assert gw.tls is not None and gw.tls.mutual
        assert await refused(secure(gw.port, pki.ca.pem)) == grpc.StatusCode.UNAVAILABLE
        foreign = secure(gw.port, pki.ca.pem, pki.foreign_client)
        assert await refused(foreign) == grpc.StatusCode.UNAVAILABLE
        async with secure(gw.port, pki.ca.pem, pki.client) as channel:
            assert await health_over(channel) == health_pb2.HealthCheckResponse.SERVING
        async with Client(
            f"127.0.0.1:{gw.port}",
            root_certificates=pki.ca.pem,
            private_key=pki.client.key,
            certificate_chain=pki.client.cert,
        ) as client:
            await client.upload("mtls/object", b"mutual")
            assert (await client.stat("mtls/object")).size == len(b"mutual")


# --- rotation --------------------------------------------------------------------------


def _replace(issued: Issued, pki: Pki) -> None:
    """Swap the server's files the way deployment tools do: write beside, rename."""
    new_cert, new_key = issued.write(pki.dir, "incoming")
    os.replace(new_key, pki.key_file)
    os.replace(new_cert, pki.cert_file)


async def test_new_certificate_is_served_without_a_restart(
    moto_endpoint: str, bucket: str, pki: Pki
) -> None:
    new_ca = CA("next CA")
    new_ca_file = new_ca.write(pki.dir, "next-ca")
    async with started(tls_settings(moto_endpoint, bucket, pki)) as gw:
        first = await asyncio.to_thread(served_serial, gw.port, pki.ca_file)
        assert first == serial_of(pki.cert_file.read_bytes())
        # A connection opened before the rotation, and a client of the new CA
        # refused while the old certificate is served.
        old = secure(gw.port, pki.ca.pem)
        assert await health_over(old) == health_pb2.HealthCheckResponse.SERVING
        assert await refused(secure(gw.port, new_ca.pem)) == grpc.StatusCode.UNAVAILABLE

        rotated = new_ca.server()
        _replace(rotated, pki)
        second = await asyncio.to_thread(served_serial, gw.port, new_ca_file)
        assert second == rotated.serial != first
        async with secure(gw.port, new_ca.pem) as channel:
            assert await health_over(channel) == health_pb2.HealthCheckResponse.SERVING
        # The connection made before keeps working.
        assert await health_over(old) == health_pb2.HealthCheckResponse.SERVING
        await old.close()
        assert gw.tls is not None and gw.tls.reloads == 1


async def test_half_replaced_files_keep_the_old_certificate(pki: Pki) -> None:
    tls = ServerTLS(pki.cert_file, pki.key_file, None)
    assert tls.fetch() is None  # nothing changed
    other = CA("next CA").server()
    new_cert, _ = other.write(pki.dir, "incoming")
    os.replace(new_cert, pki.cert_file)  # the certificate, not yet its key
    assert tls.fetch() is None
    assert serial_of(tls.files.cert) != other.serial
    new_key = pki.dir / "incoming.key"
    os.replace(new_key, pki.key_file)  # now the pair is whole again
    assert tls.fetch() is not None
    assert serial_of(tls.files.cert) == other.serial


# --- start-up --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "damage"),
    [
        ("tls_cert_file", lambda p: p.cert_file.unlink()),
        ("tls_cert_file", lambda p: p.cert_file.write_text("not a certificate")),
        ("tls_key_file", lambda p: p.key_file.write_bytes(CA().server().key)),
        ("tls_key_file", lambda p: (p.key_file.unlink(), os.mkfifo(p.key_file))),
        ("tls_client_ca_file", lambda p: p.ca_file.write_text("junk")),
        (
            "tls_client_ca_file",
            lambda p: p.ca_file.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n"),
        ),
    ],
    ids=["cert-missing", "cert-not-pem", "key-of-another", "key-a-fifo", "ca-not-pem", "ca-broken"],
)
async def test_bad_tls_files_stop_startup_naming_the_setting(
    moto_endpoint: str, bucket: str, pki: Pki, setting: str, damage: Any
) -> None:
    damage(pki)
    settings = tls_settings(moto_endpoint, bucket, pki, tls_client_ca_file=pki.ca_file)
    with pytest.raises(StartupError) as caught:
        await start_gateway(settings)
    message = str(caught.value)
    assert message.startswith(f"bad setting {setting} ") and "\n" not in message


def test_cert_and_key_go_together(pki: Pki) -> None:
    with pytest.raises(ValueError, match="tls_cert_file and tls_key_file go together"):
        Settings(listen="127.0.0.1:0", tls_cert_file=pki.cert_file)
    with pytest.raises(ValueError, match="tls_cert_file and tls_key_file go together"):
        Settings(listen="127.0.0.1:0", tls_key_file=pki.key_file)
    with pytest.raises(ValueError, match="tls_client_ca_file"):
        Settings(listen="127.0.0.1:0", tls_client_ca_file=pki.ca_file)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("[::]", False),
        ("10.1.2.3", False),
        ("example.internal", False),
        ("[::ffff:127.0.0.1]", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_plaintext_beyond_loopback_needs_insecure(moto_endpoint: str, bucket: str) -> None:
    with pytest.raises(
        StartupError, match=r"refusing to serve plaintext on 0\.0\.0\.0:0"
    ) as caught:
        await start_gateway(gateway_settings(moto_endpoint, bucket, listen="0.0.0.0:0"))
    assert "BLOBGATE_INSECURE" in str(caught.value) and "\n" not in str(caught.value)
    settings = gateway_settings(moto_endpoint, bucket, listen="0.0.0.0:0", insecure=True)
    async with (
        started(settings) as gw,
        grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel,
    ):
        assert await health_over(channel) == health_pb2.HealthCheckResponse.SERVING


async def test_tls_beyond_loopback_needs_no_insecure(
    moto_endpoint: str, bucket: str, pki: Pki
) -> None:
    settings = tls_settings(moto_endpoint, bucket, pki, listen="0.0.0.0:0")
    async with started(settings) as gw, secure(gw.port, pki.ca.pem) as channel:
        assert await health_over(channel) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.slow
async def test_server_process_refuses_plaintext_on_all_interfaces(
    moto_endpoint: str, bucket: str
) -> None:
    server = await ServerProcess.start(
        "--listen", "0.0.0.0:0", "--s3-endpoint", moto_endpoint, "--default-bucket", bucket
    )
    assert server.proc.stderr is not None
    err = await asyncio.wait_for(server.proc.stderr.read(), 30)
    assert await server.proc.wait() == 1
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "refusing to serve plaintext" in lines[0], lines


# --- reflection ------------------------------------------------------------------------


async def test_reflection_is_off_by_default(moto_endpoint: str, bucket: str) -> None:
    async with (
        started(gateway_settings(moto_endpoint, bucket)) as gw,
        grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel,
    ):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


# --- the probe and Consul --------------------------------------------------------------


async def _probe(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *PROBE,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.slow
async def test_probe_over_tls_and_mtls(moto_endpoint: str, bucket: str, pki: Pki) -> None:
    client_cert, client_key = pki.client.write(pki.dir, "probe")
    settings = tls_settings(moto_endpoint, bucket, pki, tls_client_ca_file=pki.ca_file)
    async with started(settings) as gw:
        address = f"127.0.0.1:{gw.port}"
        code, out = await _probe("--address", address, "--tls-ca-file", str(pki.ca_file))
        assert code == 1 and "UNAVAILABLE" in out, out  # no client certificate
        code, out = await _probe(
            "--address", address,
            "--tls-ca-file", str(pki.ca_file),
            "--tls-cert-file", str(client_cert),
            "--tls-key-file", str(client_key),
            "--tls-server-name", "localhost",
        )  # fmt: skip
        assert code == 0 and "SERVING" in out, out
        # The same from the BLOBGATE_TLS_* variables, as a container HEALTHCHECK runs it.
        code, out = await _probe(
            "--address",
            address,
            env={
                "BLOBGATE_TLS_CA_FILE": str(pki.ca_file),
                "BLOBGATE_TLS_CERT_FILE": str(client_cert),
                "BLOBGATE_TLS_KEY_FILE": str(client_key),
            },
        )
        assert code == 0 and "SERVING" in out, out
        plain_code, out = await _probe("--address", address, "--timeout", "1")
        assert plain_code == 1 and out.count("\n") == 1, out


@pytest.mark.slow
async def test_probe_refuses_a_certificate_without_its_key(pki: Pki) -> None:
    code, out = await _probe("--tls-cert-file", str(pki.cert_file))
    assert code == 2 and "--tls-key-file" in out and out.count("\n") == 1, out


def test_consul_check_uses_tls_when_the_server_does(pki: Pki) -> None:
    plain = ConsulRegistration(Settings(listen="127.0.0.1:50051"), 50051).payload()["check"]
    assert "grpc_use_tls" not in plain and "tls_server_name" not in plain
    settings = Settings(
        listen="127.0.0.1:50051",
        tls_cert_file=pki.cert_file,
        tls_key_file=pki.key_file,
        check_tls_server_name="blobgate.internal",
    )
    check = ConsulRegistration(settings, 50051).payload()["check"]
    assert check["grpc_use_tls"] is True
    assert check["tls_server_name"] == "blobgate.internal"


async def test_consul_checks_an_mtls_server_over_tls(
    moto_endpoint: str, bucket: str, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    agent_identity = pki.ca.client("consul-agent")
    with ConsulAgent(
        min_check_interval=0.1,
        tls_ca=pki.ca.pem,
        tls_cert=agent_identity.cert,
        tls_key=agent_identity.key,
    ) as agent:
        settings = tls_settings(
            moto_endpoint,
            bucket,
            pki,
            tls_client_ca_file=pki.ca_file,
            consul=True,
            consul_http_addr=agent.address,
            check_interval=0.2,
            check_tls_server_name="localhost",
        )
        async with started(settings) as gw:
            assert gw.registration is not None
            service_id = gw.registration.service_id

            async def passing() -> None:
                assert agent.check_status(service_id) == "passing"

            await eventually(passing, within=15)
            [check] = [c for c in agent.checks().values() if c["ServiceID"] == service_id]
            assert check["Type"] == "grpc"
