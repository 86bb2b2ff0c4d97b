"""A small TLS server answering Stat, for clients' TLS options: the
certificates it is given (a CA and leaves named by DNS) and its servicer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from blobgate.v1 import storage_pb2, storage_pb2_grpc

TLS_NAME = "blobgate.test"


@dataclass(frozen=True)
class Pems:
    """A certificate and its key, PEM-encoded."""

    cert: bytes
    key: bytes


def issue(name: str, issuer: Pems | None = None) -> Pems:
    """A CA certificate for ``name`` (no issuer), or a leaf for DNS ``name``
    signed by ``issuer``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
    )
    if issuer is None:
        builder = builder.issuer_name(subject).add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
        signing_key: Any = key
    else:
        ca = x509.load_pem_x509_certificate(issuer.cert)
        builder = builder.issuer_name(ca.subject).add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
        )
        signing_key = serialization.load_pem_private_key(issuer.key, None)
    cert = builder.sign(signing_key, hashes.SHA256())
    return Pems(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


class StatOnly(storage_pb2_grpc.StorageServiceServicer):  # type: ignore[misc]
    async def Stat(self, request: Any, context: Any) -> Any:
        return storage_pb2.StatResponse(
            object=storage_pb2.Object(bucket="b", key=request.key, size=7, etag="e")
        )
