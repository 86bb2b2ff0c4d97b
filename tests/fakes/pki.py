"""A small certificate authority for TLS tests, made with ``cryptography``:
a CA, server certificates for 127.0.0.1 and localhost, client certificates
(a CN, URI SANs such as SPIFFE IDs, DNS SANs), X.509 SVIDs as SPIRE issues
them, and the files a server is given."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, PEM."""

    cert: bytes
    key: bytes
    serial: int

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``stem.crt`` and ``stem.key``; their paths."""
        cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert.write_bytes(self.cert)
        key.write_bytes(self.key)
        return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CA:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, name: str = "blobgate test CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.pem = self._cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, stem: str = "ca") -> Path:
        path = directory / f"{stem}.crt"
        path.write_bytes(self.pem)
        return path

    def _issue(
        self,
        common_name: str | None,
        usage: x509.ObjectIdentifier | list[x509.ObjectIdentifier],
        names: list[x509.GeneralName],
        *,
        subject: list[x509.NameAttribute] | None = None,
        expired: bool = False,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        if expired:
            now -= datetime.timedelta(days=2)
        serial = x509.random_serial_number()
        subject = list(subject or [])
        if common_name is not None:
            subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = usage if isinstance(usage, list) else [usage]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), serial)

    def server(
        self, common_name: str = "blobgate", *, dns_names: tuple[str, ...] = ("localhost",)
    ) -> Issued:
        """A server certificate for 127.0.0.1, ::1 and ``dns_names``
        (localhost unless given)."""
        return self._issue(
            common_name,
            ExtendedKeyUsageOID.SERVER_AUTH,
            [
                *(x509.DNSName(name) for name in dns_names),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
            ],
        )

    def client(
        self,
        common_name: str = "client",
        *,
        uris: tuple[str, ...] = (),
        dns_names: tuple[str, ...] = (),
        expired: bool = False,
    ) -> Issued:
        """A client certificate, with URI SANs (a SPIFFE ID, say) and DNS
        SANs when given; ``expired`` a day ago."""
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri) for uri in uris]
        names += [x509.DNSName(name) for name in dns_names]
        return self._issue(common_name, ExtendedKeyUsageOID.CLIENT_AUTH, names, expired=expired)

    def svid(self, spiffe_id: str, *, dns_names: tuple[str, ...] = ()) -> Issued:
        """An X.509 SVID as SPIRE issues it: the SPIFFE ID as the only URI
        SAN, subject O=SPIRE, C=US, for servers and clients alike; with the
        DNS names of a registration entry's ``-dns`` as DNS SANs, the first
        also the subject's CN."""
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
        names += [x509.DNSName(name) for name in dns_names]
        return self._issue(
            dns_names[0] if dns_names else None,
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            names,
            subject=[
                x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE"),
            ],
        )


def serial_of(pem: bytes) -> int:
    """The serial number of a PEM certificate."""
    return x509.load_pem_x509_certificate(pem).serial_number
