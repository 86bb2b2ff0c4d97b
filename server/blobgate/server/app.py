"""The lifecycle, in one place: build the store, start the gRPC server (TLS
when configured; its interceptors from ``rpc.chain``) with health and, if
asked, reflection, probe S3, register with Consul; on SIGTERM or SIGINT go
NOT_SERVING, deregister, wait the drain delay so callers stop picking this
instance, stop accepting calls, let in-flight calls finish within the grace
period, and close the S3 client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from grpc_health.v1._async import HealthServicer

from blobgate.server.advertise import Advertised, AdvertiseError, choose_address
from blobgate.server.bucket_lifecycle import LifecycleOnce
from blobgate.server.consul_registration import ConsulRegistration
from blobgate.server.core.access_policy import PolicyError
from blobgate.server.core.errors import ServiceError
from blobgate.server.core.identity import IdentityError, JwtVerifier
from blobgate.server.core.settings import Settings
from blobgate.server.core.tracing import tracing_on
from blobgate.server.health import S3HealthProbe
from blobgate.server.listeners import Servers, build_servers, health_only_server
from blobgate.server.metrics_endpoint import GatewayMetrics, MetricsError
from blobgate.server.rpc import stream_end
from blobgate.server.rpc.authentication import authentication_for
from blobgate.server.rpc.chain import interceptor_chain
from blobgate.server.rpc.handlers import StorageServicer
from blobgate.server.rpc.page_token_key import PageTokenKey
from blobgate.server.storage.factory import Storage, build_storage
from blobgate.server.storage.limits import ByteBudget
from blobgate.server.storage.protocols import Backend, ObjectStore, SessionStore
from blobgate.server.tls import ServerTLS, TLSError, check_listen

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The gateway could not start; the message says why."""


@dataclass
class Gateway:
    """A running gateway: its server, the port it listens on, its health
    service and its storage stack."""

    settings: Settings
    server: grpc.aio.Server
    port: int
    health: HealthServicer
    probe: S3HealthProbe
    storage: Storage
    registration: ConsulRegistration | None
    metrics: GatewayMetrics | None = None
    tls: ServerTLS | None = None
    # The plaintext health-only listener (health_listen); None when it is off.
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    # The side tasks: the S3 probe's loop, the janitor, the policy watcher.
    _tasks: tuple[asyncio.Task[None], ...] = ()

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on; None when metrics are off."""
        return None if self.metrics is None else self.metrics.port

    async def stop(self, grace: float | None = None) -> None:
        """Go NOT_SERVING and deregister, wait the drain delay, refuse new
        calls, give in-flight calls ``grace`` seconds (default: the
        shutdown_grace setting), then close S3."""
        grace = self.settings.shutdown_grace if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self.registration is not None:
            await self.registration.stop()
        if self.settings.drain_delay:
            log.info("draining: %gs before refusing new calls", self.settings.drain_delay)
            await asyncio.sleep(self.settings.drain_delay)
        self.probe.stop()  # ends the loop even if the cancellation below is lost
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.server.stop(grace)
        finally:
            # Last, so probes see NOT_SERVING (not a refused connection)
            # until the calls in flight are done.
            if self.health_server is not None:
                await self.health_server.stop(0)
        await self.storage.backend.close()
        if self.metrics is not None:
            await self.metrics.stop()

    @property
    def store(self) -> ObjectStore:
        """The object store the handlers call (decorators included)."""
        return self.storage.objects

    @property
    def sessions(self) -> SessionStore:
        return self.storage.sessions

    @property
    def budget(self) -> ByteBudget:
        """The memory budget shared by every upload."""
        return self.storage.budget


async def start_gateway(
    settings: Settings,
    *,
    credentials: Mapping[str, str] | None = None,
    backend: Backend | None = None,
) -> Gateway:
    """Start a gateway; ``credentials`` (aioboto3 Session arguments) override
    botocore's chain, for the embedded S3 only; ``backend`` replaces S3
    (tests use the in-memory one). The steps, in order: refuse what can be
    refused before anything is built, build the storage stack, build the
    servers and open their listeners, probe S3 and start serving, register
    with Consul, start the side tasks. A step that fails undoes the ones
    before it."""
    tls, verifier, advertised = await _preflight(settings)
    stream_end.install()
    # Metrics are off (no interceptor, no decorators) when metrics_listen is empty.
    metrics = GatewayMetrics() if settings.metrics_listen else None
    registry = None if metrics is None else metrics.registry
    try:
        storage = build_storage(
            settings, credentials=credentials, backend=backend, registry=registry
        )
    except PolicyError as exc:
        raise StartupError(str(exc)) from None
    await storage.backend.start()
    servers: Servers | None = None
    try:
        buckets = sorted(settings.buckets)

        lifecycle = LifecycleOnce(storage.backend, settings, buckets)

        async def probe() -> None:
            if settings.create_buckets:
                await storage.backend.ensure_buckets(buckets)
            await lifecycle.reconcile()
            await storage.backend.check()

        interceptors = interceptor_chain(
            settings,
            registry=registry,
            authentication=authentication_for(tls is not None and tls.mutual, verifier),
            traced=tracing_on(),
        )
        # Page tokens are signed with a key shared through the backend's records.
        token_key = PageTokenKey(storage.backend.records, settings.default_bucket)
        servicer = StorageServicer(storage.objects, storage.sessions, settings, token_key)
        servers = build_servers(settings, servicer, interceptors)
        _listen(settings, servers, tls)
        health_probe = S3HealthProbe(servers.health, probe, settings.health_interval)
        await _start_serving(settings, servers, health_probe, metrics)
        registration = await _register(settings, servers.port, metrics, advertised)
    except BaseException:
        await _undo_start(servers, storage, metrics)
        raise
    return Gateway(
        settings,
        servers.server,
        servers.port,
        servers.health,
        health_probe,
        storage,
        registration,
        metrics=metrics,
        tls=tls,
        health_server=servers.health_server,
        health_port=servers.health_port,
        _tasks=_start_side_tasks(settings, storage, health_probe),
    )


async def _preflight(
    settings: Settings,
) -> tuple[ServerTLS | None, JwtVerifier | None, Advertised | None]:
    """What can refuse start-up before anything is built: the listen
    address, the TLS files, the JWT keys, and the address Consul would be
    given (one the agent could never reach stops start-up)."""
    refusal = check_listen(settings)
    if refusal is not None:
        raise StartupError(refusal)
    try:
        tls = ServerTLS.from_settings(settings)
        verifier = JwtVerifier.from_settings(settings)
        advertised = await asyncio.to_thread(choose_address, settings) if settings.consul else None
    except (TLSError, IdentityError, AdvertiseError) as exc:
        raise StartupError(str(exc)) from None
    return tls, verifier, advertised


def _listen(settings: Settings, servers: Servers, tls: ServerTLS | None) -> None:
    """Bind the server's port (TLS when configured) and, with
    ``health_listen``, the plaintext health-only server's."""
    try:
        if tls is None:
            servers.port = servers.server.add_insecure_port(settings.listen)
        else:
            servers.port = servers.server.add_secure_port(settings.listen, tls.credentials())
    except RuntimeError as exc:
        raise StartupError(f"cannot listen on {settings.listen}: {exc}") from None
    if settings.health_listen:
        servers.health_server = health_only_server(settings, servers.health)
        try:
            servers.health_port = servers.health_server.add_insecure_port(settings.health_listen)
        except RuntimeError as exc:
            raise StartupError(
                "bad setting health_listen (--health-listen / BLOBGATE_HEALTH_LISTEN): "
                f"cannot listen on {settings.health_listen}: {exc}"
            ) from None


async def _start_serving(
    settings: Settings,
    servers: Servers,
    health_probe: S3HealthProbe,
    metrics: GatewayMetrics | None,
) -> None:
    """Probe S3 once (health starts from its answer), serve /metrics, then
    start the servers."""
    if not await health_probe.check_once():
        log.warning(
            "S3 at %s is not answering yet; serving NOT_SERVING until it does",
            settings.s3_endpoint or "AWS",
        )
    if metrics is not None:
        metrics.watch_health(health_probe)
        try:
            metrics_port = metrics.start(settings.metrics_listen)
        except MetricsError as exc:
            raise StartupError(str(exc)) from None
        log.info(
            "metrics on http://%s:%d/metrics",
            settings.metrics_listen.rpartition(":")[0],
            metrics_port,
        )
    await servers.server.start()
    if servers.health_server is not None:
        await servers.health_server.start()
        log.info(
            "health (grpc.health.v1 only, plaintext) on %s:%d",
            settings.health_listen.rpartition(":")[0],
            servers.health_port,
        )


async def _register(
    settings: Settings,
    port: int,
    metrics: GatewayMetrics | None,
    advertised: Advertised | None,
) -> ConsulRegistration | None:
    """Register with Consul when it is configured (None when not)."""
    registration = None
    if settings.consul:
        registration = ConsulRegistration(
            settings, port, None if metrics is None else metrics.port, advertised
        )
        await registration.start()
    if metrics is not None:
        metrics.watch_registration(registration)
    return registration


async def _undo_start(
    servers: Servers | None, storage: Storage, metrics: GatewayMetrics | None
) -> None:
    """Undo a start-up that failed part-way: stop the servers, close the
    store and /metrics."""
    if servers is not None:
        await servers.server.stop(None)
        if servers.health_server is not None:
            await servers.health_server.stop(None)
    await storage.backend.close()
    if metrics is not None:
        await metrics.stop()


def _start_side_tasks(
    settings: Settings, storage: Storage, health_probe: S3HealthProbe
) -> tuple[asyncio.Task[None], ...]:
    """The S3 probe's loop, the janitor (with ``janitor_interval``) and the
    access policy's watcher (when a policy is enforced)."""
    tasks = [asyncio.create_task(health_probe.run(), name="s3-health-probe")]
    if settings.janitor_interval:
        buckets = sorted(settings.buckets)
        tasks.append(
            asyncio.create_task(
                _sweep_forever(storage.sessions, buckets, settings.janitor_interval),
                name="janitor",
            )
        )
    if storage.policy.enforced:  # a broken replacement is reported when it is written
        tasks.append(asyncio.create_task(storage.policy.watch(), name="policy-watch"))
    return tuple(tasks)


async def _sweep_forever(sessions: SessionStore, buckets: list[str], interval: float) -> None:
    """The janitor: abort expired sessions and orphaned multipart uploads
    every ``interval`` seconds."""
    while True:
        await asyncio.sleep(interval)
        try:
            aborted = await sessions.sweep(buckets)
        except Exception:
            log.warning("janitor: sweep failed; next one in %gs", interval, exc_info=True)
        else:
            if aborted:
                log.info("janitor: aborted %d expired or orphaned multipart uploads", aborted)


async def serve(
    settings: Settings, *, credentials: Mapping[str, str] | None = None, loop_name: str = ""
) -> int:
    """Run until SIGTERM or SIGINT, then shut down gracefully; SIGHUP reloads
    the access policy. ``loop_name`` describes the event loop for the
    start-up line. Returns the exit code."""
    gateway = await start_gateway(settings, credentials=credentials)
    host = settings.listen.rpartition(":")[0]
    log.info(
        "blobgate listening on %s:%d (%s; S3: %s, default bucket %s; event loop: %s)",
        host,
        gateway.port,
        "plaintext"
        if gateway.tls is None
        else "mTLS"
        if gateway.tls.mutual
        else "TLS, bearer JWTs"
        if settings.jwt_jwks_file is not None
        else "TLS",
        settings.s3_endpoint or "AWS",
        settings.default_bucket,
        loop_name or type(asyncio.get_running_loop()).__module__,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway.storage.policy.reload)
    await stop.wait()
    log.info(
        "shutting down: NOT_SERVING, refusing new calls, %gs for in-flight calls",
        settings.shutdown_grace,
    )
    await gateway.stop()
    log.info("stopped")
    return 0


__all__ = ["Gateway", "ServiceError", "StartupError", "serve", "start_gateway"]
