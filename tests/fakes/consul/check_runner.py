"""What the agent does on its own: run gRPC checks, expire TTLs, and reap
services critical for longer than DeregisterCriticalServiceAfter."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .catalog import Catalog
from .go_formats import SECOND_NS
from .records import CRITICAL, PASSING, Check

DEFAULT_GRPC_TIMEOUT = 10.0


class CheckRunner:
    """One task a check (gRPC or TTL) and the reaper, in the agent's loop.

    ``min_check_interval_ns`` is the floor of a check's Interval,
    ``reap_interval`` how often critical services are reaped."""

    def __init__(
        self,
        catalog: Catalog,
        min_check_interval_ns: int,
        reap_interval: float,
        tls: tuple[bytes | None, bytes | None, bytes | None] = (None, None, None),
    ) -> None:
        self._tls = tls  # CA, key, certificate chain: the agent's TLS files
        self._catalog = catalog
        self._min_check_interval_ns = min_check_interval_ns
        self._reap_interval = reap_interval

    def start(self, check: Check) -> None:
        """Start the task running a gRPC check or timing a TTL (agent loop only)."""
        if check.type == "grpc":
            check.task = asyncio.create_task(self._run_grpc(check))
        elif check.type == "ttl":
            check.task = asyncio.create_task(self._run_ttl(check))

    def resume(self) -> None:
        """At (re)start: gRPC checks restart critical until their first run,
        as the real agent restores checks; TTLs keep their status and deadline.
        The critical-for clock of DeregisterCriticalServiceAfter restarts."""
        now = time.monotonic()
        with self._catalog.mutation():
            for check in self._catalog.checks.values():
                if check.type == "grpc":
                    check.status = CRITICAL
                    check.output = ""
                if check.status == CRITICAL:
                    check.critical_since = now
                self.start(check)

    async def _run_grpc(self, check: Check) -> None:
        interval = max(check.interval_ns, self._min_check_interval_ns) / SECOND_NS
        timeout = (check.timeout_ns / SECOND_NS) or DEFAULT_GRPC_TIMEOUT
        while True:
            credentials = None
            if check.grpc_use_tls:
                ca, key, cert = self._tls
                credentials = grpc.ssl_channel_credentials(ca, key, cert)
            status, output = await probe_grpc(
                check.grpc, timeout, credentials, check.tls_server_name
            )
            self._catalog.set_status(check, status, output)
            await asyncio.sleep(interval)

    async def _run_ttl(self, check: Check) -> None:
        while True:
            deadline = check.ttl_deadline or time.monotonic()
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            if check.ttl_deadline is not None and time.monotonic() >= check.ttl_deadline:
                self._catalog.set_status(
                    check,
                    CRITICAL,
                    f"TTL expired (last output before timeout follows): {check.output}",
                )
                return

    async def reap_forever(self) -> None:
        """Deregister every service with a check critical for longer than its
        DeregisterCriticalServiceAfter, every reap_interval."""
        catalog = self._catalog
        while True:
            await asyncio.sleep(self._reap_interval)
            now = time.monotonic()
            with catalog.mutation():
                doomed = {
                    c.service_id
                    for c in catalog.checks.values()
                    if c.deregister_after > 0
                    and c.status == CRITICAL
                    and c.critical_since is not None
                    and now - c.critical_since > c.deregister_after
                }
                for service_id in doomed:
                    catalog.remove_service(service_id)


async def probe_grpc(
    target: str,
    rpc_timeout: float,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str = "",
) -> tuple[str, str]:
    """One grpc.health.v1.Health/Check on a fresh connection, as the agent
    does; over TLS with ``credentials``, expecting ``server_name``."""
    address, _, service = target.partition("/")
    options: list[tuple[str, str]] = []
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    try:
        if credentials is None:
            channel = grpc.aio.insecure_channel(address, options=options)
        else:
            channel = grpc.aio.secure_channel(address, credentials, options=options)
        async with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=service)
            response = await stub.Check(request, timeout=rpc_timeout)
    except grpc.aio.AioRpcError as exc:
        code = "".join(part.capitalize() for part in exc.code().name.split("_"))
        return CRITICAL, f"rpc error: code = {code} desc = {exc.details()}"
    except Exception as exc:  # a bad target, for instance
        return CRITICAL, f"gRPC check {target}: {exc}"
    if response.status == health_pb2.HealthCheckResponse.SERVING:
        return PASSING, f"gRPC check {target}: success"
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return CRITICAL, f"gRPC {target} serving status: {name}"
