"""The gateway's Prometheus metrics: a registry of its own (not
prometheus_client's global one, so several gateways in one process never
collide), the process and platform collectors, the gauges that follow health
and Consul, and the HTTP endpoint Prometheus scrapes (``metrics_listen``).

The families themselves live beside what they measure: ``rpc.metrics``,
``storage.metrics`` and ``storage.s3.instrumentation``.
"""

from __future__ import annotations

import asyncio
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from blobgate.server.consul_registration import ConsulRegistration
from blobgate.server.health import S3HealthProbe


class MetricsError(Exception):
    """The metrics endpoint could not start; the message says why."""


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (IPv6 hosts in brackets) as (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class GatewayMetrics:
    """The registry every family of one gateway goes to, and its endpoint."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def watch_health(self, probe: S3HealthProbe) -> None:
        serving = Gauge(
            "blobgate_health_serving",
            "1 while the health service says SERVING (S3 answers), else 0.",
            registry=self.registry,
        )
        serving.set_function(lambda: 1.0 if probe.serving else 0.0)

    def watch_registration(self, registration: ConsulRegistration | None) -> None:
        registered = Gauge(
            "blobgate_consul_registered",
            "1 while this instance is registered with its Consul agent, else 0 "
            "(also 0 when Consul registration is off).",
            registry=self.registry,
        )
        registered.set_function(
            lambda: 1.0 if registration is not None and registration.is_registered else 0.0
        )

    def start(self, listen: str) -> int:
        """Serve /metrics on ``listen``; return the bound port."""
        host, port = split_listen(listen)
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise MetricsError(f"cannot serve metrics on {listen}: {exc.strerror}") from None
        self.port = int(self._server.server_port)
        return self.port

    async def stop(self) -> None:
        """Stop the endpoint (its thread polls for shutdown every 0.5 s)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return

        def shut() -> None:
            server.shutdown()
            server.server_close()
            if thread is not None:
                thread.join(timeout=5)

        await asyncio.to_thread(shut)
