"""Who is calling: the principal from a client certificate (mTLS: URI SAN,
dns: DNS SAN, cn: CN) or a bearer JWT (RS256, ES256, HS256 keys of a JWKS file,
reloaded when it changes), UNAUTHENTICATED without one, in the access log's
principal field; health reachable without identity; the client's token."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blobgate.client import BlobgateError, Client
from blobgate.client.cli import main as cli
from blobgate.server.app import Gateway, StartupError, start_gateway
from blobgate.server.core import identity
from blobgate.server.core.errors import Unauthenticated
from blobgate.server.core.identity import certificate_principal
from blobgate.server.logs import JsonFormatter
from blobgate.server.settings_loading import SettingsError, load_settings
from blobgate.server.storage.factory import memory_config
from blobgate.server.storage.memory.backend import MemoryBackend
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes.pki import CA, Issued
from tests.support.gateways import gateway_settings

Code = grpc.StatusCode
ISSUER = "https://issuer.example"
AUDIENCE = "blobgate"
SECRET = b"0123456789abcdef0123456789abcdef"
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Keys:
    """Signing keys and the JWKS document of their public halves."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
        return {
            "keys": [
                {**rsa_jwk, "kid": "r1", "alg": "RS256", "use": "sig"},
                {**ec_jwk, "kid": "e1", "alg": "ES256"},
                {"kty": "oct", "kid": "h1", "alg": "HS256", "k": _b64(SECRET)},
            ]
        }


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": "svc-reports",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
    }
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not None}


@pytest.fixture
def ca() -> CA:
    return CA()


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


@asynccontextmanager
async def started(tmp_path: Path, ca: CA, **overrides: Any) -> AsyncIterator[Gateway]:
    cert_file, key_file = ca.server().write(tmp_path, "server")
    settings = gateway_settings(
        "http://127.0.0.1:9",
        "identity-test",
        tls_cert_file=cert_file,
        tls_key_file=key_file,
        **overrides,
    )
    gateway = await start_gateway(settings, backend=MemoryBackend(memory_config(settings)))
    try:
        yield gateway
    finally:
        await gateway.stop(grace=0.5)


@asynccontextmanager
async def jwt_gateway(tmp_path: Path, ca: CA, keys: Keys) -> AsyncIterator[Gateway]:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(keys.jwks()))
    async with started(
        tmp_path, ca, jwt_jwks_file=jwks, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    ) as gateway:
        yield gateway


def channel(port: int, ca: CA, client: Issued | None = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.pem,
        private_key=None if client is None else client.key,
        certificate_chain=None if client is None else client.cert,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=OWN_CONNECTION)


async def stat(
    port: int, ca: CA, *, client: Issued | None = None, token: str | None = None
) -> Code:
    """The status of a Stat of a missing key: NOT_FOUND once the caller is
    known, UNAUTHENTICATED when not."""
    metadata = None if token is None else (("authorization", f"Bearer {token}"),)
    async with channel(port, ca, client) as ch:
        stub = storage_pb2_grpc.StorageServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Stat(storage_pb2.StatRequest(key="missing"), metadata=metadata, timeout=5)
    return caught.value.code()


async def stat_error(port: int, ca: CA, token: str | None) -> grpc.aio.AioRpcError:
    metadata = None if token is None else (("authorization", f"Bearer {token}"),)
    async with channel(port, ca) as ch:
        stub = storage_pb2_grpc.StorageServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Stat(storage_pb2.StatRequest(key="missing"), metadata=metadata, timeout=5)
    return caught.value


async def access_principals(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    """The principal and status of the access lines so far, once ``count`` are in."""
    lines: list[dict[str, Any]] = []
    for _ in range(100):
        lines = [
            json.loads(JsonFormatter().format(record))
            for record in caplog.records
            if record.name == "blobgate.access"
        ]
        if len(lines) >= count:
            break
        await asyncio.sleep(0.02)
    return [f"{line['principal']}|{line['status']}" for line in lines]


# mTLS


async def test_mtls_principal_from_uri_dns_san_or_cn(
    tmp_path: Path, ca: CA, logged: pytest.LogCaptureFixture
) -> None:
    spiffe = "spiffe://example.org/ns/x/sa/y"
    clients = [
        ca.client("cn-a", uris=(spiffe,), dns_names=("a.example",)),
        ca.client("cn-b", dns_names=("b.example", "c.example")),
        ca.client("cn-only"),
    ]
    async with started(tmp_path, ca, tls_client_ca_file=ca.write(tmp_path)) as gateway:
        for client in clients:
            assert await stat(gateway.port, ca, client=client) == Code.NOT_FOUND
        principals = await access_principals(logged, 3)
    # Each kind of name its own spelling: a URI SAN as it is, dns:, cn:.
    assert principals == [
        f"{spiffe}|NOT_FOUND",
        "dns:b.example|NOT_FOUND",
        "cn:cn-only|NOT_FOUND",
    ]


def test_certificate_principal_reads_the_verified_certificate(ca: CA) -> None:
    def pem(issued: Issued) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [issued.cert]}

    # Nothing to read, or a certificate without names: none.
    assert certificate_principal({}) is None
    assert certificate_principal({"x509_common_name": [b"cn"]}) is None  # gRPC's summary: unused
    assert certificate_principal(pem(ca.client("D.Example"))) == "cn:D.Example"
    assert certificate_principal(pem(ca.client("cn", dns_names=("D.Example",)))) == "dns:d.example"
    # An unusable name is refused, never read as the next kind.
    with pytest.raises(Unauthenticated, match="names cannot be read"):
        certificate_principal({"x509_pem_cert": [b"not a certificate"]})
    with pytest.raises(Unauthenticated, match=r"subject CN '\\x01' is not usable"):
        certificate_principal(pem(ca.client("\x01")))


# JWT


async def test_valid_tokens_name_their_subject(
    tmp_path: Path, ca: CA, keys: Keys, logged: pytest.LogCaptureFixture
) -> None:
    tokens = [
        jwt.encode(claims(sub="rsa-user"), keys.rsa, "RS256", headers={"kid": "r1"}),
        jwt.encode(claims(sub="ec-user"), keys.ec, "ES256", headers={"kid": "e1"}),
        jwt.encode(claims(sub="hmac-user"), SECRET, "HS256", headers={"kid": "h1"}),
        jwt.encode(claims(sub="no-kid"), keys.rsa, "RS256"),  # any key of its algorithm
    ]
    async with jwt_gateway(tmp_path, ca, keys) as gateway:
        for token in tokens:
            assert await stat(gateway.port, ca, token=token) == Code.NOT_FOUND
        principals = await access_principals(logged, 4)
    assert principals == [
        "rsa-user|NOT_FOUND",
        "ec-user|NOT_FOUND",
        "hmac-user|NOT_FOUND",
        "no-kid|NOT_FOUND",
    ]
    # The token is never in a log line.
    assert not any(token in record.getMessage() for record in logged.records for token in tokens)


def _bad_tokens(keys: Keys) -> dict[str, Callable[[], str | None]]:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = jwt.algorithms.RSAAlgorithm.to_jwk(keys.rsa.public_key()).encode()
    unsigned = jwt.encode(claims(), None, algorithm="none")
    return {
        "wrongly signed": lambda: jwt.encode(claims(), other, "RS256", headers={"kid": "r1"}),
        "wrong audience": lambda: jwt.encode(claims(aud="other"), keys.rsa, "RS256"),
        "wrong issuer": lambda: jwt.encode(claims(iss="https://evil.example"), keys.rsa, "RS256"),
        "alg none": lambda: unsigned,
        "alg none, RS256 header": lambda: unsigned.replace(
            unsigned.split(".")[0], _b64(b'{"alg":"RS256","typ":"JWT"}')
        ),
        "HS256 with the RSA key as secret": lambda: jwt.encode(
            claims(), SECRET + rsa_pem, "HS256", headers={"kid": "r1"}
        ),
        "no sub": lambda: jwt.encode(claims(sub=None), keys.rsa, "RS256"),
        "no exp": lambda: jwt.encode(claims(exp=None), keys.rsa, "RS256"),
        "malformed": lambda: "not.a.jwt",
        "missing": lambda: None,
    }


async def test_bad_or_missing_tokens_are_unauthenticated(
    tmp_path: Path, ca: CA, keys: Keys, logged: pytest.LogCaptureFixture
) -> None:
    cases = _bad_tokens(keys)
    async with jwt_gateway(tmp_path, ca, keys) as gateway:
        for name, make in cases.items():
            error = await stat_error(gateway.port, ca, make())
            assert error.code() == Code.UNAUTHENTICATED, name
            details = error.details() or ""
            assert "Bearer" in details, (name, details)
            assert "signature" not in details.lower() and "audience" not in details.lower()
        expired = jwt.encode(claims(exp=int(time.time()) - 120), keys.rsa, "RS256")
        error = await stat_error(gateway.port, ca, expired)
        assert error.code() == Code.UNAUTHENTICATED
        assert "expired" in (error.details() or "")
        principals = await access_principals(logged, len(cases) + 1)
        # An oversized token: refused by the gateway's own 8 KiB check, or
        # before it by gRPC's header limit, which refuses at random between
        # its soft (8 KiB) and hard limits. Never served.
        error = await stat_error(gateway.port, ca, "x" * 10_000)
        assert error.code() in {Code.UNAUTHENTICATED, Code.RESOURCE_EXHAUSTED}, error
    # Refused calls have their access line, with no principal.
    assert principals == ["|UNAUTHENTICATED"] * (len(cases) + 1)


async def test_jwks_reload_picks_up_a_new_key(
    tmp_path: Path, ca: CA, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(identity, "RELOAD_CHECK_INTERVAL", 0.0)
    fresh = Keys()
    new_token = jwt.encode(claims(sub="new"), fresh.rsa, "RS256", headers={"kid": "r1"})
    old_token = jwt.encode(claims(sub="old"), keys.rsa, "RS256", headers={"kid": "r1"})
    async with jwt_gateway(tmp_path, ca, keys) as gateway:
        assert await stat(gateway.port, ca, token=new_token) == Code.UNAUTHENTICATED
        replacement = tmp_path / "jwks.new"
        replacement.write_text(json.dumps(fresh.jwks()))
        replacement.replace(tmp_path / "jwks.json")
        assert await stat(gateway.port, ca, token=new_token) == Code.NOT_FOUND
        assert await stat(gateway.port, ca, token=old_token) == Code.UNAUTHENTICATED
        # A broken replacement keeps the keys that work.
        (tmp_path / "jwks.json").write_text("{not json")
        assert await stat(gateway.port, ca, token=new_token) == Code.NOT_FOUND


async def test_health_answers_without_identity(tmp_path: Path, ca: CA, keys: Keys) -> None:
    async with jwt_gateway(tmp_path, ca, keys) as gateway, channel(gateway.port, ca) as ch:
        response = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="blobgate.v1.StorageService"), timeout=5
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


# Settings and start-up


async def test_unusable_jwks_stops_start_up(tmp_path: Path, ca: CA) -> None:
    bad = tmp_path / "jwks.json"
    for content in ("{not json", '{"keys": []}', '{"keys": [{"kty": "oct", "alg": "none"}]}'):
        bad.write_text(content)
        with pytest.raises(StartupError) as caught:
            async with started(
                tmp_path, ca, jwt_jwks_file=bad, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
            ):
                pass
        assert "jwt_jwks_file" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(StartupError, match=r"jwt_jwks_file.*cannot read"):
        async with started(
            tmp_path,
            ca,
            jwt_jwks_file=tmp_path / "missing.json",
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
        ):
            pass


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--jwt-jwks-file", "j.json", "--jwt-issuer", "i", "--jwt-audience", "a"], "needs tls"),
        (["--jwt-issuer", "i"], "need jwt_jwks_file"),
        (
            ["--tls-cert-file", "c", "--tls-key-file", "k", "--jwt-jwks-file", "j.json"],
            "needs jwt_issuer and jwt_audience",
        ),
        (
            [
                *("--tls-cert-file", "c", "--tls-key-file", "k", "--tls-client-ca-file", "ca"),
                *("--jwt-jwks-file", "j", "--jwt-issuer", "i", "--jwt-audience", "a"),
            ],
            "choose one",
        ),
    ],
)
def test_jwt_settings_need_each_other_and_tls(argv: list[str], fragment: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(argv)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


# The Python client


async def test_client_token_option(tmp_path: Path, ca: CA, keys: Keys) -> None:
    token = jwt.encode(claims(sub="py-client"), keys.rsa, "RS256", headers={"kid": "r1"})
    async with jwt_gateway(tmp_path, ca, keys) as gateway:
        target = f"127.0.0.1:{gateway.port}"
        async with Client(target, root_certificates=ca.pem, token=token) as client:
            assert token not in repr(client.options)
            with pytest.raises(BlobgateError) as caught:
                await client.stat("missing")
            assert caught.value.code == Code.NOT_FOUND
        async with Client(target, root_certificates=ca.pem) as client:
            with pytest.raises(BlobgateError) as caught:
                await client.stat("missing")
            assert caught.value.code == Code.UNAUTHENTICATED
    with pytest.raises(ValueError, match="token needs TLS"):
        Client(target, token=token)
    with pytest.raises(ValueError, match="printable"):
        Client(target, tls=True, token="two words")


def test_cli_token_from_environment_needs_tls(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "eyJhbGciOiJSUzI1NiJ9.secret-part.sig"
    monkeypatch.setenv("BLOBGATE_TOKEN", secret)
    assert cli.main(["--server", "127.0.0.1:1", "stat", "k"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "BLOBGATE_TOKEN: token needs TLS" in err
    assert secret not in err
