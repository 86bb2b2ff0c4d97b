"""Where the Consul agent is and which ACL token to send, read once for the
client's discovery and the server's registration alike."""

from __future__ import annotations

import os
import urllib.parse
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import consul
import consul.aio

DEFAULT_CONSUL_ADDR = "127.0.0.1:8500"
_TRUE = {"1", "t", "true"}  # what Go's strconv.ParseBool takes as true (case aside)


@dataclass(frozen=True)
class ConsulConfig:
    """Where the Consul agent's HTTP API is, and the ACL token to send."""

    host: str
    port: int
    scheme: str = "http"
    token: str | None = None

    @classmethod
    def parse(cls, raw: str, *, ssl: bool = False, token: str | None = None) -> ConsulConfig:
        """The agent at ``raw``, in one of ``CONSUL_HTTP_ADDR``'s forms
        (host:port or http(s)://host:port); HTTPS if the URL says so, else if
        ``ssl``. The port defaults to 8500, or 8501 for HTTPS. Raises
        ValueError for anything else."""
        parts = urllib.parse.urlsplit(raw if "//" in raw else f"//{raw}")
        scheme = parts.scheme or ("https" if ssl else "http")
        try:
            port = parts.port
        except ValueError:
            port = -1
        if scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise ValueError(
                f"Consul address must be host:port or http(s)://host:port, not {raw!r}"
            )
        return cls(parts.hostname, port or (8501 if scheme == "https" else 8500), scheme, token)

    @classmethod
    def from_environment(
        cls,
        addr: str | None = None,
        token: str | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> ConsulConfig:
        """The agent at ``addr`` (host:port or URL), else ``$CONSUL_HTTP_ADDR``,
        else 127.0.0.1:8500; HTTPS if the URL says so or ``$CONSUL_HTTP_SSL``
        is true; the token is ``token``, else ``$CONSUL_HTTP_TOKEN``."""
        return cls.parse(
            addr or environ.get("CONSUL_HTTP_ADDR") or DEFAULT_CONSUL_ADDR,
            ssl=environ.get("CONSUL_HTTP_SSL", "").strip().lower() in _TRUE,
            token=token if token is not None else environ.get("CONSUL_HTTP_TOKEN") or None,
        )

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def connect(self, *, verify: bool | None = None) -> Any:
        """A ``consul.aio.Consul`` for this agent that sends exactly
        ``token``; call it in a running event loop and ``await`` its
        ``close()``. ``verify`` None leaves py-consul's choice
        (``$CONSUL_HTTP_SSL_VERIFY``, else verify)."""
        with warnings.catch_warnings():
            # py-consul passes aiohttp arguments that aiohttp has deprecated.
            warnings.filterwarnings("ignore", "verify_ssl is deprecated", DeprecationWarning)
            warnings.filterwarnings("ignore", "ssl_context is deprecated", DeprecationWarning)
            agent = consul.aio.Consul(
                host=self.host, port=self.port, scheme=self.scheme, token=self.token, verify=verify
            )
        # py-consul lets $CONSUL_HTTP_TOKEN override its token argument; the
        # caller already chose between its own token and that variable.
        agent.token = self.token
        return agent
