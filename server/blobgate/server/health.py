"""Health that follows S3: a periodic cheap probe sets the standard health
service's overall status and the StorageService's status together; and
the health service each listener serves, whose Watch streams are bounded
(``BoundedHealth``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from blobgate.server.core.errors import ServiceError
from blobgate.server.core.tracing import untraced
from blobgate.v1 import storage_pb2

log = logging.getLogger(__name__)

SERVICE_NAME = storage_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class BoundedHealth(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """The standard health service of one listener, answering from the
    shared ``health`` (which the probe sets), with its Watch streams
    bounded: health needs no identity, and without a bound anyone could
    keep Watch streams open until they fill the server's calls. At most
    ``max_watches`` are open at once; each ends with OK after ``lifetime``
    seconds, and gRPC's client-side health checking, like any Watch client,
    opens a new one (kubelet, Consul and blobgate-probe use Check, which is
    never refused here). A Watch past the limit is refused with
    UNIMPLEMENTED: gRPC's client-side health checking (gRFC A17) then stops
    watching on that connection and treats the server as healthy, where
    any other status would mark the server unhealthy in that client."""

    def __init__(self, health: HealthServicer, max_watches: int, lifetime: float) -> None:
        self._health = health
        self._max_watches = max_watches
        self._lifetime = lifetime
        self.watches = 0

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        return await self._health.Check(request, context)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        if self.watches >= self._max_watches:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                "this server has as many health Watch streams open as it allows: use Check",
            )
        self.watches += 1
        try:
            # A client's cancellation still ends it with CancelledError (a
            # handler that swallows one leaks); only the lifetime is quiet.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._lifetime):
                    await self._health.Watch(request, context)
        finally:
            self.watches -= 1


class S3HealthProbe:
    """Runs ``probe`` every ``interval`` seconds and publishes the result."""

    def __init__(
        self, health: HealthServicer, probe: Callable[[], Awaitable[None]], interval: float
    ) -> None:
        self._health = health
        self._probe = probe
        self._interval = interval
        self._timeout = max(2.0, interval)
        self.serving: bool | None = None
        self._stopped = asyncio.Event()

    async def publish(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self._health.set(service, status)
        if serving != self.serving:
            log.log(
                logging.INFO if serving else logging.WARNING,
                "S3 is %s: health is %s",
                "reachable" if serving else "unreachable",
                "SERVING" if serving else "NOT_SERVING",
            )
        self.serving = serving

    async def check_once(self) -> bool:
        try:
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation
            # that arrives as the probe finishes, and stop() would wait forever.
            # Untraced: a root span every interval would bury the real traces.
            async with asyncio.timeout(self._timeout):
                with untraced():
                    await self._probe()
        except (ServiceError, TimeoutError) as exc:
            log.debug("S3 probe failed: %s", exc)
            serving = False
        except Exception:
            # An unexpected failure must not stop the probe loop or pass as healthy.
            log.exception("S3 probe failed unexpectedly")
            serving = False
        else:
            serving = True
        await self.publish(serving)
        return serving

    async def run(self) -> None:
        """Probe every interval until stop()."""
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stopped.wait()
            if not self._stopped.is_set():
                await self.check_once()

    def stop(self) -> None:
        self._stopped.set()
