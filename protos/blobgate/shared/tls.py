"""TLS settings of a Client: the credentials and channel options that every
channel it opens (the target, or each discovered instance) is built with,
and the checks of its PEM material, made before gRPC sees it (gRPC only logs
a bad key and fails each connection with a vague error)."""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from blobgate.shared.wire import ChannelOption

_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_PRIVATE_KEY = re.compile(
    rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.S
)
_PUBLIC_KEY_INFO = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class TLSConfig:
    """How to verify the server, and optionally who the client is.

    ``root_certificates`` are the PEM CA certificates to trust (None: the
    system's roots, as gRPC finds them). ``private_key`` and
    ``certificate_chain`` (PEM, both or neither) are the client's own, for
    servers that require client certificates. ``server_name_override`` is the
    name to expect in the server's certificate instead of the target's host
    (and to send as SNI): for instances reached by IP address, or in tests.
    The server's certificate must carry that name (or the host dialled) as a
    DNS or IP subject alternative name: gRPC's check never looks at URI SANs
    such as SPIFFE IDs.

    Raises ValueError, naming the field, when the PEM material is unusable
    (see ``check_pem``).
    """

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None
    server_name_override: str | None = None

    def __post_init__(self) -> None:
        check_pem(self.root_certificates, self.certificate_chain, self.private_key)

    def credentials(self, token: str | None = None) -> grpc.ChannelCredentials:
        """gRPC channel credentials built from these PEM bytes; with
        ``token``, every call also sends ``authorization: Bearer <token>``
        (gRPC sends such call credentials on secure channels only)."""
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )
        if token is None:
            return credentials
        return grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token)
        )

    def channel_options(self) -> list[ChannelOption]:
        """Channel options that go with the credentials."""
        if not self.server_name_override:
            return []
        return [("grpc.ssl_target_name_override", self.server_name_override)]


def check_pem(
    root_certificates: bytes | None,
    certificate_chain: bytes | None,
    private_key: bytes | None,
    *,
    names: Mapping[str, str] | None = None,
) -> None:
    """Raise ValueError, naming what is wrong, unless the CA certificates
    and the client's chain parse, the key parses and is unencrypted, the key
    belongs to the chain's first certificate, and that certificate is valid
    now. ``names`` says how to call each of the three in the message (a
    command line gives its option and file; default: the argument's name)."""
    names = names or {}
    roots_name = names.get("root_certificates", "root_certificates")
    chain_name = names.get("certificate_chain", "certificate_chain")
    key_name = names.get("private_key", "private_key")
    if (private_key is None) != (certificate_chain is None):
        raise ValueError(f"{key_name} and {chain_name} go together: give both or neither")
    if root_certificates is not None:
        _certificates(root_certificates, roots_name)
    if certificate_chain is None or private_key is None:
        return
    leaf = _certificates(certificate_chain, chain_name)[0]
    key = _private_key(private_key, key_name)
    if key.public_key().public_bytes(*_PUBLIC_KEY_INFO) != leaf.public_key().public_bytes(
        *_PUBLIC_KEY_INFO
    ):
        raise ValueError(f"{key_name} is not the key of the first certificate in {chain_name}")
    now = datetime.datetime.now(datetime.UTC)
    if now > leaf.not_valid_after_utc:
        raise ValueError(f"{chain_name}: the certificate expired on {leaf.not_valid_after_utc}")
    if now < leaf.not_valid_before_utc:
        raise ValueError(
            f"{chain_name}: the certificate is not valid before {leaf.not_valid_before_utc}"
        )


def _certificates(pem: bytes, name: str) -> list[x509.Certificate]:
    blocks = _CERTIFICATE.findall(pem)
    if not blocks:
        raise ValueError(f"{name} is not PEM: no '-----BEGIN CERTIFICATE-----' block")
    certificates = []
    for number, block in enumerate(blocks, 1):
        try:
            certificates.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            raise ValueError(f"{name}: certificate {number} does not parse") from None
    return certificates


def _private_key(pem: bytes, name: str) -> PrivateKeyTypes:
    block = _PRIVATE_KEY.search(pem)
    if block is None:
        raise ValueError(f"{name} is not PEM: no '-----BEGIN ... PRIVATE KEY-----' block")
    try:
        return serialization.load_pem_private_key(block.group(0), password=None)
    except TypeError:  # cryptography's word for "needs a password"
        raise ValueError(f"{name} is encrypted: give the key unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"{name}: the private key does not parse") from None
