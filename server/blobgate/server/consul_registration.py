"""Registration of this instance with the local Consul agent.

The service is registered with a native gRPC check on the StorageService, so
Consul itself marks the instance critical when S3 is down (the health service
says NOT_SERVING) or the process is gone. A background loop keeps the
registration in place: Consul absent at start-up is retried with backoff, and
an agent that forgot the service (restart, wipe) gets it back within one check
interval. On shutdown the instance deregisters before it stops serving. The
address it registers is ``advertise``'s choice.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import secrets
import socket
from typing import Any

import aiohttp
import consul
import consul.aio
from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from blobgate.server.advertise import Advertised, choose_address
from blobgate.server.core.settings import Settings
from blobgate.server.health import SERVICE_NAME
from blobgate.shared.consul_config import ConsulConfig

log = logging.getLogger(__name__)

API = "blobgate.v1"
# What a Consul call can fail with when the agent is down or refuses us.
CONSUL_ERRORS = (consul.ConsulException, aiohttp.ClientError, OSError, TimeoutError)
REQUEST_TIMEOUT = 5.0


def _duration(seconds: float) -> str:
    """A Go duration string, as Consul's API takes them."""
    return f"{seconds:g}s"


def _version() -> str:
    try:
        return importlib.metadata.version("blobgate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class ConsulRegistration:
    """Keeps this instance registered while it runs; deregisters on stop()."""

    def __init__(
        self,
        settings: Settings,
        port: int,
        metrics_port: int | None = None,
        advertised: Advertised | None = None,
    ) -> None:
        """``advertised`` is the address to register (None: chosen here,
        which may resolve the agent's host name: see ``advertise``)."""
        self._settings = settings
        # Advertised in Meta so Prometheus's consul_sd_configs finds /metrics.
        self.metrics_port = metrics_port
        self.address = (advertised or choose_address(settings)).address
        self.port = settings.advertise_port or port
        self.service_id = (
            f"{settings.service_name}-{socket.gethostname()}-{self.port}-{secrets.token_hex(3)}"
        )
        self._client: consul.aio.Consul | None = None
        self._task: asyncio.Task[None] | None = None
        self.registered = asyncio.Event()
        self.is_registered = False  # now, as last seen (a gauge reads it)

    def payload(self) -> dict[str, Any]:
        """Arguments of agent.service.register for this instance."""
        s = self._settings
        tls = s.tls_cert_file is not None
        host = f"[{self.address}]" if ":" in self.address else self.address  # IPv6
        check = consul.Check.grpc(
            f"{host}:{self.port}/{SERVICE_NAME}",
            _duration(s.check_interval),
            # Over TLS the agent verifies with its own CA (and, for mTLS,
            # presents its own client certificate): docs/security.md.
            use_tls=True if tls else None,
            timeout=_duration(s.check_timeout),
            deregister=_duration(s.deregister_critical_after),
        )
        if tls and s.check_tls_server_name:
            check["tls_server_name"] = s.check_tls_server_name
        return {
            "name": s.service_name,
            "service_id": self.service_id,
            "address": self.address,
            "port": self.port,
            "tags": list(s.service_tags),
            "meta": self._meta(),
            "check": check,
            "replace_existing_checks": True,
        }

    def _meta(self) -> dict[str, str]:
        meta = {"version": _version(), "api": API}
        if self.metrics_port is not None:
            meta["metrics_port"] = str(self.metrics_port)
        return meta

    async def start(self) -> None:
        # The settings already chose between the flag and CONSUL_HTTP_TOKEN.
        agent = ConsulConfig.parse(
            self._settings.consul_http_addr,
            ssl=self._settings.consul_http_ssl,
            token=self._settings.consul_http_token,
        )
        self._client = agent.connect(verify=agent.scheme == "https")
        self._task = asyncio.create_task(self._keep_registered(), name="consul-registration")

    async def _ensure_registered(self) -> None:
        assert self._client is not None
        async with asyncio.timeout(REQUEST_TIMEOUT):
            services = await self._client.agent.services()
        if self.service_id in services:
            self.is_registered = True
            return
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await self._client.agent.service.register(**self.payload())
        log.info(
            "registered with Consul at %s as %s (%s:%d)",
            self._settings.consul_http_addr,
            self.service_id,
            self.address,
            self.port,
        )
        self.is_registered = True
        self.registered.set()

    async def _keep_registered(self) -> None:
        """Check every interval; on failure retry with jittered exponential
        backoff (tenacity), forever, logging each failure."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(CONSUL_ERRORS),
            wait=wait_random_exponential(multiplier=0.5, max=30),
            before_sleep=lambda state: log.warning(
                "Consul at %s: %s; retrying in %.1fs",
                self._settings.consul_http_addr,
                state.outcome.exception() if state.outcome else "?",
                state.next_action.sleep if state.next_action else 0,
            ),
        )
        while True:
            async for attempt in retrying:
                with attempt:
                    try:
                        await self._ensure_registered()
                    except CONSUL_ERRORS:
                        self.is_registered = False
                        raise
            await asyncio.sleep(self._settings.check_interval)

    async def stop(self) -> None:
        """Stop the loop and deregister (best effort, bounded in time)."""
        self.is_registered = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is None:
            return
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await self._client.agent.service.deregister(self.service_id)
            log.info("deregistered %s from Consul", self.service_id)
        except CONSUL_ERRORS as exc:
            log.warning("could not deregister %s from Consul: %s", self.service_id, exc)
        finally:
            await self._client.close()
            self._client = None
