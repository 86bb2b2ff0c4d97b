"""Throwaway identities for a soak in JWT mode (``--identity jwt``): a CA
and a server certificate for 127.0.0.1 made with ``cryptography``, an ES256
signing key published in a JWKS file (PyJWT), and a bearer token for each
principal (its ``sub``). The gateway gets ``--tls-cert-file --tls-key-file
--jwt-jwks-file --jwt-issuer --jwt-audience`` (docs/security.md); workers,
victims and attackers get the CA (to trust the gateway) and, when they act as
a principal, a token."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ISSUER = "https://bench.blobgate.invalid"
AUDIENCE = "blobgate-soak"
KEY_ID = "soak-1"
TOKEN_LIFETIME = 6 * 3600  # seconds: longer than any soak


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
    signer: ec.EllipticCurvePrivateKey, *, ca: bool,
) -> x509.Certificate:  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    else:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        ).add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


class JwtIdentity:
    """The files a gateway in JWT mode is started with, and tokens for its callers."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("blobgate soak CA", ca_key, "blobgate soak CA", ca_key, ca=True)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = _certificate("blobgate", server_key, "blobgate soak CA", ca_key, ca=False)
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM)
        self.cert_file = directory / "server.crt"
        self.key_file = directory / "server.key"
        self.jwks_file = directory / "jwks.json"
        self.cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(
            server_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self._signing_key = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self._signing_key.public_key()))
        jwk |= {"kid": KEY_ID, "alg": "ES256", "use": "sig"}
        self.jwks_file.write_text(json.dumps({"keys": [jwk]}))

    def gateway_settings(self) -> list[str]:
        """The gateway's flags for TLS and JWT mode."""
        return [
            "--tls-cert-file", str(self.cert_file), "--tls-key-file", str(self.key_file),
            "--jwt-jwks-file", str(self.jwks_file), "--jwt-issuer", ISSUER,
            "--jwt-audience", AUDIENCE,
        ]  # fmt: skip

    def token(self, principal: str) -> str:
        """A bearer token whose ``sub`` is ``principal``."""
        now = int(time.time())
        claims = {"sub": principal, "iss": ISSUER, "aud": AUDIENCE, "iat": now,
                  "exp": now + TOKEN_LIFETIME}  # fmt: skip
        return jwt.encode(claims, self._signing_key, "ES256", headers={"kid": KEY_ID})

    def client_keywords(self, principal: str | None) -> dict[str, Any]:
        """``Client(...)`` keywords: trust the CA, and act as ``principal``
        (None: no token)."""
        keywords: dict[str, Any] = {"root_certificates": self.ca_pem}
        if principal is not None:
            keywords["token"] = self.token(principal)
        return keywords

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca_pem)

    def metadata(self, principal: str | None) -> tuple[tuple[str, str], ...]:
        """A raw stub's call metadata: the bearer token, or none."""
        if principal is None:
            return ()
        return (("authorization", f"Bearer {self.token(principal)}"),)


def make_identity(kind: str, log_dir: Path | None) -> JwtIdentity | None:
    """A run's throwaway CA, certificate and JWKS for ``--identity jwt``
    (files in LOG_DIR/identity, or a new temporary directory); None for none."""
    if kind != "jwt":
        return None
    if log_dir is not None:
        return JwtIdentity(log_dir / "identity")
    return JwtIdentity(Path(tempfile.mkdtemp(prefix="blobgate-soak-identity-")))


class Access:
    """How the soak's callers reach the gateway at ``address``: plaintext
    (``identity`` None: no principal exists), or TLS under ``identity``'s CA,
    with a bearer token for a principal or none."""

    def __init__(self, address: str, identity: JwtIdentity | None) -> None:
        self.address = address
        self.identity = identity
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)

    @property
    def mode(self) -> str:
        return "plaintext" if self.identity is None else "TLS + JWT"

    def channel(self, *, own_connection: bool = True) -> grpc.aio.Channel:
        """A raw channel (no token of its own: see ``metadata``); with
        ``own_connection`` it shares no connection with other channels."""
        options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else []
        if self.identity is None:
            return grpc.aio.insecure_channel(self.address, options=options)
        credentials = self.identity.channel_credentials()
        return grpc.aio.secure_channel(self.address, credentials, options=options)

    def metadata(self, principal: str | None) -> tuple[tuple[str, str], ...]:
        return () if self.identity is None else self.identity.metadata(principal)

    def client_keywords(self, principal: str | None) -> dict[str, Any]:
        """``Client(...)`` keywords for ``principal`` (plaintext: none)."""
        return {} if self.identity is None else self.identity.client_keywords(principal)

    def ssl_context(self) -> ssl.SSLContext | None:
        """For a raw HTTP/2 connection (ALPN h2), or None in plaintext."""
        if self.identity is None:
            return None
        context = ssl.create_default_context(cadata=self.identity.ca_pem.decode())
        context.set_alpn_protocols(["h2"])
        return context
