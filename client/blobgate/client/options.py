"""The settings of a ``Client`` (and ``SyncClient``), in one frozen object."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, TypedDict

from blobgate.client.sources import CHUNK_SIZE
from blobgate.client.wire import MAX_CHUNK_SIZE
from blobgate.shared.tls import TLSConfig

_TLS_KEYWORDS = ("root_certificates", "private_key", "certificate_chain", "server_name_override")


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """How a client calls blobgate.

    ``timeout`` is the deadline in seconds of each unary call (stat, list,
    presign, delete), retries included; ``stream_timeout`` that of each
    upload and download, None by default since big objects take as long as
    they take. ``max_attempts`` bounds the tries of an idempotent call (1:
    no retries). The Consul agent is ``consul_addr`` (host:port or URL),
    else ``$CONSUL_HTTP_ADDR``, else 127.0.0.1:8500; its ACL token
    ``consul_token``, else ``$CONSUL_HTTP_TOKEN``. ``tls`` makes every
    channel TLS (None: plaintext). ``bucket`` is the bucket of calls that
    name none (empty: the server's default bucket). ``chunk_size`` is the
    size of the data messages of an upload (at most 4 MiB). ``token`` is a
    bearer token (a JWT) sent as ``authorization: Bearer ...`` on every
    call, for servers that identify callers by JWT; it needs ``tls`` and is
    never shown in a repr. ``direct_downloads`` asks servers that offer it
    to let downloads read the bytes straight from S3 (falling back to the
    gateway when S3 cannot be reached); ``direct_uploads`` asks them to let
    resumable uploads PUT their parts straight to S3 (falling back to a
    session through the gateway when S3 cannot be reached); ``verify_sha256`` checks a whole
    downloaded object by its sha256 even when it has a CRC32C (the cheaper
    check used otherwise).

    Calls are only started on connected instances (docs/operations.md,
    "How clients pick an instance"). ``connect_timeout`` bounds the set-up
    of a connection (TCP, TLS, HTTP/2) before its instance is ejected;
    ``connect_hedge`` is how long a call waits on one instance's connection
    before also connecting to the next. An instance is ejected when it
    cannot be connected to, or after ``eject_after`` calls in a row that it
    failed with UNAVAILABLE; for ``eject_time`` seconds, doubling with each
    ejection in a row up to ``max_eject_time``. ``preconnect`` connects to
    every instance as soon as it is known, not when the rotation reaches it.

    Raises ValueError for ``max_attempts`` below 1, a ``chunk_size`` out
    of range, a ``token`` that is malformed or without TLS, or connection
    and ejection settings out of range.
    """

    timeout: float | None = 60.0
    stream_timeout: float | None = None
    max_attempts: int = 4
    consul_addr: str | None = None
    consul_token: str | None = None
    tls: TLSConfig | None = None
    bucket: str = ""
    chunk_size: int = CHUNK_SIZE
    token: str | None = field(default=None, repr=False)
    connect_timeout: float = 5.0
    connect_hedge: float = 0.25
    eject_after: int = 3
    eject_time: float = 1.0
    max_eject_time: float = 60.0
    preconnect: bool = False
    direct_downloads: bool = True
    direct_uploads: bool = True
    verify_sha256: bool = False

    def __post_init__(self) -> None:
        if self.token is not None:
            if not self.token or not all(" " < char <= "~" for char in self.token):
                raise ValueError("token must be non-empty printable ASCII without spaces")
            if self.tls is None:
                raise ValueError(
                    "token needs TLS: a bearer token must not cross a plaintext connection"
                )
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if not 0 < self.chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(
                f"chunk_size must be between 1 and {MAX_CHUNK_SIZE} bytes, not {self.chunk_size}"
            )
        if not self.connect_timeout > 0:
            raise ValueError(f"connect_timeout must be above 0, not {self.connect_timeout}")
        if not self.connect_hedge >= 0:
            raise ValueError(f"connect_hedge must be 0 or more, not {self.connect_hedge}")
        if self.eject_after < 1:
            raise ValueError(f"eject_after must be at least 1, not {self.eject_after}")
        if not 0 < self.eject_time <= self.max_eject_time:
            raise ValueError(
                f"eject_time must be above 0 and at most max_eject_time ({self.max_eject_time}), "
                f"not {self.eject_time}"
            )

    @classmethod
    def build(cls, options: ClientOptions | None, keywords: OptionKeywords) -> ClientOptions:
        """``options`` (None: the defaults) with ``keywords`` applied over
        them. Any TLS keyword sets ``tls`` to the ``TLSConfig`` they make."""
        if not keywords:
            return options or cls()
        settings: dict[str, Any] = dict(keywords)
        wants_tls = settings.pop("tls", False)
        tls_settings = {name: settings.pop(name) for name in _TLS_KEYWORDS if name in settings}
        if isinstance(wants_tls, TLSConfig):
            if any(value is not None for value in tls_settings.values()):
                raise ValueError("give tls=TLSConfig(...) or the TLS keywords, not both")
            settings["tls"] = wants_tls
        elif wants_tls or any(value is not None for value in tls_settings.values()):
            settings["tls"] = TLSConfig(**tls_settings)
        return replace(options or cls(), **settings)


class OptionKeywords(TypedDict, total=False):
    """``ClientOptions`` as keyword arguments of ``Client(...)`` and
    ``SyncClient(...)``. ``tls`` is a ``TLSConfig``, or ``True``; ``tls=True``
    and the four PEM/name keywords of ``TLSConfig`` stand for
    ``tls=TLSConfig(...)``; giving any of them implies TLS."""

    timeout: float | None
    stream_timeout: float | None
    max_attempts: int
    consul_addr: str | None
    consul_token: str | None
    bucket: str
    chunk_size: int
    token: str | None
    connect_timeout: float
    connect_hedge: float
    eject_after: int
    eject_time: float
    max_eject_time: float
    preconnect: bool
    direct_downloads: bool
    direct_uploads: bool
    verify_sha256: bool
    tls: bool | TLSConfig
    root_certificates: bytes | None
    private_key: bytes | None
    certificate_chain: bytes | None
    server_name_override: str | None
