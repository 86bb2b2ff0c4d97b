"""TLS for the gRPC server: the certificate, key and optional client CA
(mTLS) from files, checked at start-up, and reloaded without a restart when
the files change (gRPC's dynamic server credentials ask before each new
handshake; connections already open keep the certificate they started with).

Also the secure default: a server that listens beyond loopback without TLS
refuses to start unless the ``insecure`` setting says plaintext is intended.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from blobgate.server.core.settings import Settings

log = logging.getLogger(__name__)

# A PEM bundle bigger than this is not a certificate file someone meant.
MAX_PEM_BYTES = 1024 * 1024

_Stamp = tuple[int, int, int, int]  # device, inode, size, mtime in ns


class TLSError(Exception):
    """A TLS file is missing, unreadable or not what its setting needs; the
    message names the setting."""


def _label(name: str) -> str:
    flag = "--" + name.replace("_", "-")
    return f"{name} ({flag} / BLOBGATE_{name.upper()})"


def _read_pem(name: str, path: Path, marker: bytes) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise TLSError(f"bad setting {_label(name)}: cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_PEM_BYTES:
        raise TLSError(f"bad setting {_label(name)}: {path} is larger than 1MiB")
    if marker not in data:
        what = marker.decode().strip("- ")
        raise TLSError(f"bad setting {_label(name)}: {path} holds no PEM {what}")
    return data


@dataclass(frozen=True)
class TLSFiles:
    """The PEM bytes of one consistent set of files, and their stamps."""

    cert: bytes
    key: bytes
    client_ca: bytes | None
    stamps: tuple[_Stamp, ...]

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.key, self.cert)], root_certificates=self.client_ca
        )


class ServerTLS:
    """The server's TLS files: loaded and checked once at start-up (errors
    raise TLSError), then watched by gRPC's certificate fetcher."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None) -> None:
        self._cert_file = cert_file
        self._key_file = key_file
        self._client_ca_file = client_ca_file
        self._lock = threading.Lock()
        self.files = self._load()
        self._failed: tuple[_Stamp, ...] | None = None
        self.reloads = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerTLS | None:
        """None when the settings ask for no TLS."""
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            return None
        return cls(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate from the client CA."""
        return self._client_ca_file is not None

    def _paths(self) -> list[tuple[str, Path]]:
        paths = [("tls_cert_file", self._cert_file), ("tls_key_file", self._key_file)]
        if self._client_ca_file is not None:
            paths.append(("tls_client_ca_file", self._client_ca_file))
        return paths

    def _stamps(self) -> tuple[_Stamp, ...]:
        stamps = []
        for name, path in self._paths():
            try:
                info = path.stat()
            except OSError as exc:
                raise TLSError(
                    f"bad setting {_label(name)}: cannot read {path}: {exc.strerror}"
                ) from None
            if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would hang or flood
                raise TLSError(f"bad setting {_label(name)}: {path} is not a regular file")
            stamps.append((info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns))
        return tuple(stamps)

    def _load(self) -> TLSFiles:
        # The ssl check below reads the files by name: if they changed while
        # we read them, what was checked may not be what was read; read again.
        for _ in range(3):
            files = self._load_once()
            if self._stamps() == files.stamps:
                return files
        raise TLSError(f"bad setting {_label('tls_cert_file')}: the files keep changing")

    def _load_once(self) -> TLSFiles:
        stamps = self._stamps()
        cert = _read_pem("tls_cert_file", self._cert_file, b"-----BEGIN CERTIFICATE-----")
        key = _read_pem("tls_key_file", self._key_file, b"PRIVATE KEY-----")
        client_ca = None
        if self._client_ca_file is not None:
            client_ca = _read_pem(
                "tls_client_ca_file", self._client_ca_file, b"-----BEGIN CERTIFICATE-----"
            )
        # The ssl module parses the PEM and checks that the key fits the
        # certificate: gRPC would only fail each handshake, quietly.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self._cert_file, self._key_file)
        except (ssl.SSLError, OSError) as exc:
            raise TLSError(
                f"bad setting {_label('tls_key_file')}: {self._key_file} does not load with "
                f"{self._cert_file} (a key of that certificate, PEM, unencrypted?): {exc}"
            ) from None
        if client_ca is not None:
            try:
                context.load_verify_locations(cadata=client_ca.decode("ascii"))
            except (ssl.SSLError, ValueError) as exc:
                raise TLSError(
                    f"bad setting {_label('tls_client_ca_file')}: {self._client_ca_file}: {exc}"
                ) from None
        return TLSFiles(cert, key, client_ca, stamps)

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that pick up new files at the next handshake."""
        return grpc.dynamic_ssl_server_credentials(
            self.files.configuration(),
            # gRPC's documented contract: the fetcher returns None for "no
            # change"; the type stubs leave that out.
            self.fetch,  # type: ignore[arg-type]
            require_client_authentication=self.mutual,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's fetcher, called before new handshakes: a new configuration
        when the files changed and load cleanly, else None (keep the current
        one). A half-replaced set (new certificate, old key) is retried at
        each handshake and logged once."""
        try:
            with self._lock:
                stamps = self._stamps()
                if stamps == self.files.stamps or stamps == self._failed:
                    return None
                try:
                    files = self._load()
                except TLSError as exc:
                    self._failed = stamps
                    log.warning("TLS files changed but do not load; serving the old ones: %s", exc)
                    return None
                self.files = files
                self._failed = None
                self.reloads += 1
            log.info("TLS certificate reloaded from %s", self._cert_file)
            return files.configuration()
        except Exception:  # never let an error escape into gRPC's handshake
            log.warning("TLS reload failed; serving the old certificate", exc_info=True)
            return None


def is_loopback(host: str) -> bool:
    """Whether a listen host only accepts connections from this machine."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(settings: Settings) -> str | None:
    """Why this server must not start as configured, or None: plaintext on an
    address other hosts can reach needs the ``insecure`` setting."""
    if settings.tls_cert_file is not None or settings.insecure:
        return None
    host = settings.listen.rpartition(":")[0]
    if is_loopback(host):
        return None
    return (
        f"refusing to serve plaintext on {settings.listen}: set tls_cert_file and tls_key_file "
        "(--tls-cert-file/--tls-key-file, BLOBGATE_TLS_*), listen on loopback, or set insecure "
        "(--insecure / BLOBGATE_INSECURE=true) if a trusted network or proxy protects it"
    )


__all__ = ["ServerTLS", "TLSError", "check_listen", "is_loopback"]
