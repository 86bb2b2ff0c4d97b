"""What the availability tests share: gateways in JWT or mTLS mode on the
in-memory store (one identified caller, ``victim``, granted everything),
channels for identified and anonymous callers, the victim's check that its
calls answer promptly, and raw pieces of gRPC frames."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import jwt
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blobgate.server.app import Gateway, start_gateway
from blobgate.server.storage.factory import memory_config
from blobgate.server.storage.memory.backend import MemoryBackend
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes.pki import CA, Issued
from tests.fakes.raw_h2 import grpc_frame
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import upload_aio
from tests.support.mtls import OWN_CONNECTION

Code = grpc.StatusCode
SECRET = b"0123456789abcdef0123456789abcdef"
ISSUER, AUDIENCE = "https://issuer.example", "blobgate"
STAT = "/blobgate.v1.StorageService/Stat"
SERVING = health_pb2.HealthCheckResponse.SERVING
# Small limits keep the floods short.
LIMITS: dict[str, Any] = {"max_calls": 8, "max_anonymous_calls": 6, "max_health_watches": 3}
# How long a victim's call may take during an attack: generous, the machine is shared.
PROMPT = 2.0


def token(subject: str = "victim") -> str:
    now = int(time.time())
    claims = {"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@asynccontextmanager
async def tls_gateway(
    tmp_path: Path, ca: CA, mode: str, **overrides: Any
) -> AsyncIterator[Gateway]:
    """A gateway on the in-memory store, TLS with bearer JWTs (``jwt``) or
    client certificates (``mtls``, the victim granted everything)."""
    cert_file, key_file = ca.server().write(tmp_path, "server")
    values: dict[str, Any] = {"tls_cert_file": cert_file, "tls_key_file": key_file}
    victim = "victim"  # a JWT's sub
    if mode == "jwt":
        jwks = tmp_path / "jwks.json"
        key = base64.urlsafe_b64encode(SECRET).rstrip(b"=").decode()
        jwks.write_text(json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "k": key}]}))
        values |= {"jwt_jwks_file": jwks, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}
    else:
        values["tls_client_ca_file"] = ca.write(tmp_path)
        victim = "cn:victim"  # a certificate whose only name is its CN
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[[grant]]\nprincipals = ["{victim}"]\nbuckets = ["availability"]\nprefixes = [""]\n'
        'actions = ["read", "list", "write", "delete"]\n'
    )
    settings = gateway_settings(
        "http://127.0.0.1:9",
        "availability",
        auth_policy_file=policy,
        **{**values, **overrides},
    )
    gateway = await start_gateway(settings, backend=MemoryBackend(memory_config(settings)))
    try:
        yield gateway
    finally:
        await stop_gateway(gateway, grace=0.5)


def tls_channel(
    port: int, ca: CA, *, client: Issued | None = None, bearer: str | None = None
) -> grpc.aio.Channel:
    """A channel of its own connection; with ``bearer``, every call carries it."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.pem,
        private_key=None if client is None else client.key,
        certificate_chain=None if client is None else client.cert,
    )
    if bearer is not None:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(bearer)
        )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=OWN_CONNECTION)


async def victim_works(channel: grpc.aio.Channel, key: str) -> None:
    """An identified caller's Upload and Stat answer promptly."""
    stub = storage_pb2_grpc.StorageServiceStub(channel)
    started = time.monotonic()
    stored = await asyncio.wait_for(upload_aio(stub, key, b"still here"), PROMPT)
    assert stored.size == 10
    response = await stub.Stat(storage_pb2.StatRequest(key=key), timeout=PROMPT)
    assert response.object.size == 10
    assert time.monotonic() - started < PROMPT


async def check(channel: grpc.aio.Channel) -> int:
    """The overall health status, from Check."""
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=PROMPT)
    return int(response.status)


def client_tls(ca: CA) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.pem.decode())


def partial_message(announced: int, sent: int) -> bytes:
    """The first ``sent`` bytes of a gRPC frame announcing ``announced``."""
    return grpc_frame(b"\0" * announced)[: 5 + sent]
