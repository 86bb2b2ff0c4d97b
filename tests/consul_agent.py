"""A stand-in for the HashiCorp Consul agent's HTTP API, for tests.

No Consul binary can be installed here, so tests start this instead: a real
HTTP server on 127.0.0.1, in its own thread with its own event loop (it keeps
answering while a test's loop is busy, like a separate agent process). It
follows the real agent closely enough that the same client code (py-consul,
``consul.aio.Consul(host=, port=)``) works against both:

- ``PUT /v1/agent/service/register[?replace-existing-checks]`` (PascalCase or
  snake_case keys), ``PUT /v1/agent/service/deregister/<id>``,
  ``GET /v1/agent/services``, ``GET /v1/agent/service/<id>``,
  ``GET /v1/agent/checks``, ``PUT /v1/agent/service/maintenance/<id>``;
- TTL checks: ``PUT /v1/agent/check/pass|warn|fail/<check-id>[?note=]`` and
  ``PUT /v1/agent/check/update/<check-id>``; an expired TTL is critical;
- gRPC checks run by the agent itself (``grpc.health.v1.Health/Check`` every
  Interval, SERVING is passing, anything else critical);
- ``GET /v1/health/service/<name>[?passing][&tag=][&index=&wait=]`` with
  blocking queries and ``X-Consul-Index``;
- DeregisterCriticalServiceAfter, enforced by a reaper.

Check types other than gRPC and TTL (HTTP, TCP, script...) are refused with a
400 rather than silently never run. Durations are Go duration strings.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any, Self

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
STATUSES = (PASSING, WARNING, CRITICAL)

DATACENTER = "dc1"
NODE_ADDRESS = "127.0.0.1"
SERVICE_MAINT_PREFIX = "_service_maintenance:"
DEFAULT_MAINT_REASON = (
    "Maintenance mode is enabled for this service, but no reason was provided. "
    "This is a default message."
)
DEFAULT_GRPC_TIMEOUT = 10.0
DEFAULT_WAIT = 300.0  # blocking queries: 5 minutes unless ?wait= says otherwise
MAX_WAIT = 600.0  # ... and never more than 10 minutes (plus wait/16 jitter)
UNSUPPORTED_CHECK_KEYS = (
    "http",
    "tcp",
    "udp",
    "args",
    "scriptargs",
    "script",
    "dockercontainerid",
    "h2ping",
    "aliasservice",
    "aliasnode",
    "osservice",
)

_SECOND_NS = 1_000_000_000
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC greek mu
    "ms": 1_000_000,
    "s": _SECOND_NS,
    "m": 60 * _SECOND_NS,
    "h": 3600 * _SECOND_NS,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")
# Query parameters the real agent honours and this stand-in does not: refused
# with a 400 rather than silently ignored (which would return unfiltered data).
UNSUPPORTED_QUERY = ("filter", "node-meta", "ns", "partition", "peer", "sg")

log = logging.getLogger(__name__)


class _BadRequest(Exception):
    """A client error the real agent answers with 400 and a plain-text reason."""


def parse_duration_ns(value: object) -> int:
    """Nanoseconds from a Go duration ("10s", "1m30s", "0.3s", "500ms"); a JSON
    number is taken as nanoseconds, as Go's time.Duration decodes it."""
    if isinstance(value, bool):
        raise ValueError(f"time: invalid duration {value!r}")
    if isinstance(value, int | float):
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"time: invalid duration {value!r}")
    text = value.strip()
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    if text == "0":
        return 0
    if not text:
        raise ValueError(f'time: invalid duration "{value}"')
    total = Decimal(0)
    pos = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        try:
            total += Decimal(match.group(1)) * _UNIT_NS[match.group(2)]
        except InvalidOperation as exc:
            raise ValueError(f'time: invalid duration "{value}"') from exc
        pos = match.end()
    if pos != len(text):
        raise ValueError(f'time: invalid duration "{value}"')
    return sign * int(total)


def parse_duration(value: object) -> float:
    """Seconds from a Go duration string (see parse_duration_ns)."""
    return parse_duration_ns(value) / _SECOND_NS


def format_duration(ns: int) -> str:
    """A duration as Go's time.Duration.String() writes it ("1m0s", "300ms")."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)

    def frac(value: int, size: int) -> str:
        whole, rest = divmod(value, size)
        if not rest:
            return str(whole)
        digits = str(rest).rjust(len(str(size)) - 1, "0").rstrip("0")
        return f"{whole}.{digits}"

    if ns < _SECOND_NS:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000)):
            if ns >= size:
                return f"{sign}{frac(ns, size)}{unit}"
        return f"{sign}{ns}ns"
    hours, rest = divmod(ns, 3600 * _SECOND_NS)
    minutes, rest = divmod(rest, 60 * _SECOND_NS)
    seconds = frac(rest, _SECOND_NS) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return f"{sign}{seconds}"


def _parse_bool(raw: str) -> bool:
    """Go's strconv.ParseBool."""
    if raw in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if raw in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError(raw)


def _norm_keys(obj: dict[str, Any]) -> dict[str, Any]:
    """Keys folded the way the agent matches them: case-insensitive (Go's JSON
    decoder) and snake_case accepted ("grpc_use_tls" is GRPCUseTLS)."""
    return {key.replace("_", "").lower(): value for key, value in obj.items()}


@dataclass
class _Service:
    id: str
    name: str
    tags: list[str]
    address: str
    port: int
    meta: dict[str, str]
    weights: dict[str, int]
    enable_tag_override: bool
    tagged_addresses: dict[str, Any]
    create_index: int = 0
    modify_index: int = 0


@dataclass
class _Check:
    check_id: str
    name: str
    service_id: str
    service_name: str
    service_tags: list[str]
    type: str  # "grpc", "ttl" or "" (maintenance)
    status: str
    notes: str = ""
    output: str = ""
    interval_ns: int = 0
    timeout_ns: int = 0
    ttl_ns: int = 0
    grpc: str = ""
    deregister_after: float = 0.0  # effective, minimum applied; 0 = never
    critical_since: float | None = None  # time.monotonic()
    ttl_deadline: float | None = None  # time.monotonic()
    task: asyncio.Task[None] | None = field(default=None, repr=False, compare=False)
    create_index: int = 0
    modify_index: int = 0


@dataclass
class _CheckSpec:
    check_id: str
    name: str
    notes: str
    status: str
    type: str
    interval_ns: int
    timeout_ns: int
    ttl_ns: int
    grpc: str
    deregister_after_ns: int


class ConsulAgent:
    """A Consul agent stand-in serving the HTTP API on 127.0.0.1 from its own
    thread and event loop. ``with ConsulAgent() as agent:`` starts and stops it.

    ``min_deregister_after`` is the floor of DeregisterCriticalServiceAfter (1m
    on the real agent), ``reap_interval`` how often critical services are
    reaped (~30s on the real agent), ``min_check_interval`` the floor of a
    check's Interval (1s on the real agent).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        min_deregister_after: float = 60.0,
        reap_interval: float = 1.0,
        min_check_interval: float = 1.0,
        node_name: str = "consul-stand-in",
    ) -> None:
        self._port = port
        self._min_deregister_after = min_deregister_after
        self._reap_interval = reap_interval
        self._min_check_interval_ns = int(min_check_interval * _SECOND_NS)
        self._node_name = node_name
        self._node_id = str(uuid.uuid4())
        self.requests: list[dict[str, Any]] = []
        """Every request received, oldest first: method, path, query (first value
        of each key), json (the decoded body or None) and token (X-Consul-Token)."""

        self._lock = threading.RLock()  # guards the state below
        self._services: dict[str, _Service] = {}
        self._checks: dict[str, _Check] = {}
        self._index = 1  # X-Consul-Index: grows on every change, never 0
        self._name_index: dict[str, int] = {}

        self._lifecycle = threading.Lock()  # serialises start() and stop()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        self._stopping: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._reaper: asyncio.Task[None] | None = None

    # Public interface -------------------------------------------------------

    @property
    def port(self) -> int:
        """The port (chosen at the first start() when created with port 0)."""
        return self._port

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as CONSUL_HTTP_ADDR takes it."""
        return f"127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        """Whether the agent is serving."""
        return self._thread is not None

    def start(self) -> None:
        """Bind and serve; after stop(), rebind the same port. Idempotent."""
        with self._lifecycle:
            if self._thread is not None:
                return
            ready = threading.Event()
            failure: list[BaseException] = []
            thread = threading.Thread(
                target=self._thread_main,
                args=(ready, failure),
                name=f"consul-agent-{self._port or 'new'}",
                daemon=True,
            )
            thread.start()
            ready.wait()
            if failure:
                thread.join()
                raise failure[0]
            self._thread = thread

    def stop(self) -> None:
        """Stop serving (the agent is down): open connections are dropped,
        check runs stop; registrations stay in memory. Idempotent."""
        with self._lifecycle:
            thread, loop, stopping = self._thread, self._loop, self._stopping
            if thread is None:
                return
            if loop is not None and stopping is not None:
                with contextlib.suppress(RuntimeError):  # loop already closed
                    loop.call_soon_threadsafe(stopping.set)
            thread.join()
            self._thread = None

    def wipe(self) -> None:
        """Forget every service and check, like an agent restarted without its
        data directory. The index keeps growing (blocked queries wake up)."""
        with self._mutation():
            for check in self._checks.values():
                self._cancel_runner(check)
            self._services.clear()
            self._checks.clear()

    def services(self) -> dict[str, dict[str, Any]]:
        """What ``GET /v1/agent/services`` returns: service ID -> service."""
        with self._lock:
            return {sid: self._agent_service_json(s) for sid, s in self._services.items()}

    def checks(self) -> dict[str, dict[str, Any]]:
        """What ``GET /v1/agent/checks`` returns: check ID -> check."""
        with self._lock:
            return {cid: self._check_json(c) for cid, c in self._checks.items()}

    def check_status(self, service_id: str) -> str | None:
        """The aggregated status of a service's checks: critical if any is
        critical (maintenance included), else warning if any warns, else
        passing; None for an unknown service."""
        with self._lock:
            if service_id not in self._services:
                return None
            statuses = {c.status for c in self._checks.values() if c.service_id == service_id}
        for status in (CRITICAL, WARNING):
            if status in statuses:
                return status
        return PASSING

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # The agent's thread ---------------------------------------------------------

    def _thread_main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(ready, failure))
        except BaseException as exc:  # never let an exception escape the thread
            if ready.is_set():
                log.exception("Consul agent stand-in failed")
            else:
                failure.append(exc)
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                self._loop = None
                self._loop_thread_id = None
                loop.close()
                ready.set()

    async def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        app = web.Application(middlewares=[self._record], client_max_size=8 * 1024 * 1024)
        self._add_routes(app)
        # A short shutdown_timeout: stop() drops blocked queries like a dying agent.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.05)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", self._port, reuse_address=True)
            await site.start()
        except OSError as exc:
            failure.append(exc)
            await runner.cleanup()
            ready.set()
            return
        self._port = runner.addresses[0][1]
        self._resume_checks()
        self._reaper = asyncio.create_task(self._reap_forever())
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()  # stop listening, drop open requests
            with self._lock:
                for check in self._checks.values():
                    check.task = None
            self._reaper = None
            current = asyncio.current_task()
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            for task in tasks:  # check runners, the reaper, anything left
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _in_loop(self) -> bool:
        return self._loop_thread_id == threading.get_ident()

    def _call_in_loop(self, fn: Callable[[], None]) -> None:
        """Run fn in the agent's loop now (from the loop) or soon (elsewhere)."""
        if self._in_loop():
            fn()
            return
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(fn)

    # State and index -----------------------------------------------------------

    @contextlib.contextmanager
    def _mutation(self) -> Iterator[None]:
        """Change state under the lock, then bump the index of what changed."""
        with self._lock:
            before = self._snapshot()
            try:
                yield
            finally:
                self._commit(before)

    def _snapshot(self) -> dict[tuple[str, str], str]:
        """Fingerprints of what a blocking query can see (check output excluded:
        the real agent syncs output-only changes lazily)."""
        prints: dict[tuple[str, str], str] = {}
        by_name: dict[str, list[str]] = {}
        for sid, svc in self._services.items():
            prints[("s", sid)] = json.dumps(
                [
                    svc.name,
                    svc.tags,
                    svc.address,
                    svc.port,
                    svc.meta,
                    svc.weights,
                    svc.enable_tag_override,
                    svc.tagged_addresses,
                ],
                sort_keys=True,
            )
            by_name.setdefault(svc.name.lower(), []).append(sid)
        for cid, chk in self._checks.items():
            prints[("c", cid)] = json.dumps(
                [
                    chk.name,
                    chk.service_id,
                    chk.type,
                    chk.status,
                    chk.notes,
                    chk.grpc,
                    chk.interval_ns,
                    chk.timeout_ns,
                    chk.ttl_ns,
                ],
            )
        for name, sids in by_name.items():
            parts = []
            for sid in sorted(sids):
                parts.append(prints[("s", sid)])
                parts.extend(
                    prints[("c", cid)]
                    for cid, chk in sorted(self._checks.items())
                    if chk.service_id == sid
                )
            prints[("n", name)] = "\n".join(parts)
        return prints

    def _commit(self, before: dict[tuple[str, str], str]) -> None:
        after = self._snapshot()
        changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
        if not changed:
            return
        self._index += 1
        for kind, key in changed:
            if kind == "n":
                self._name_index[key] = self._index
            elif kind == "s" and key in self._services:
                svc = self._services[key]
                svc.create_index = svc.create_index or self._index
                svc.modify_index = self._index
            elif kind == "c" and key in self._checks:
                chk = self._checks[key]
                chk.create_index = chk.create_index or self._index
                chk.modify_index = self._index
        self._call_in_loop(self._notify)

    def _notify(self) -> None:
        """Wake every blocked query (they re-check their index)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    def _name_current_index(self, name: str) -> int:
        with self._lock:
            return self._name_index.get(name.lower(), self._index)

    def _set_status(self, check: _Check, status: str, output: str) -> None:
        """Record a check result, if the check is still registered."""
        with self._mutation():
            if self._checks.get(check.check_id) is not check:
                return
            if status == CRITICAL and check.status != CRITICAL:
                check.critical_since = time.monotonic()
            elif status != CRITICAL:
                check.critical_since = None
            check.status = status
            check.output = output

    def _remove_service(self, service_id: str) -> None:
        """Drop a service and its checks (lock held, inside a mutation)."""
        self._services.pop(service_id, None)
        for cid in [cid for cid, c in self._checks.items() if c.service_id == service_id]:
            self._cancel_runner(self._checks.pop(cid))

    # Check runners -------------------------------------------------------------

    def _start_runner(self, check: _Check) -> None:
        """Start the task running a gRPC check or timing a TTL (agent loop only)."""
        if check.type == "grpc":
            check.task = asyncio.create_task(self._run_grpc(check))
        elif check.type == "ttl":
            check.task = asyncio.create_task(self._run_ttl(check))

    def _cancel_runner(self, check: _Check) -> None:
        task, check.task = check.task, None
        if task is not None:

            def cancel() -> None:
                task.cancel()

            self._call_in_loop(cancel)

    def _resume_checks(self) -> None:
        """At (re)start: gRPC checks restart critical until their first run,
        as the real agent restores checks; TTLs keep their status and deadline.
        The critical-for clock of DeregisterCriticalServiceAfter restarts."""
        now = time.monotonic()
        with self._mutation():
            for check in self._checks.values():
                if check.type == "grpc":
                    check.status = CRITICAL
                    check.output = ""
                if check.status == CRITICAL:
                    check.critical_since = now
                self._start_runner(check)

    async def _run_grpc(self, check: _Check) -> None:
        interval = max(check.interval_ns, self._min_check_interval_ns) / _SECOND_NS
        timeout = (check.timeout_ns / _SECOND_NS) or DEFAULT_GRPC_TIMEOUT
        while True:
            status, output = await self._probe_grpc(check.grpc, timeout)
            self._set_status(check, status, output)
            await asyncio.sleep(interval)

    @staticmethod
    async def _probe_grpc(target: str, rpc_timeout: float) -> tuple[str, str]:
        """One grpc.health.v1.Health/Check on a fresh connection, as the agent does."""
        address, _, service = target.partition("/")
        try:
            async with grpc.aio.insecure_channel(address) as channel:
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

    async def _run_ttl(self, check: _Check) -> None:
        while True:
            deadline = check.ttl_deadline or time.monotonic()
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            if check.ttl_deadline is not None and time.monotonic() >= check.ttl_deadline:
                self._set_status(
                    check,
                    CRITICAL,
                    f"TTL expired (last output before timeout follows): {check.output}",
                )
                return

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self._reap_interval)
            now = time.monotonic()
            with self._mutation():
                doomed = {
                    c.service_id
                    for c in self._checks.values()
                    if c.deregister_after > 0
                    and c.status == CRITICAL
                    and c.critical_since is not None
                    and now - c.critical_since > c.deregister_after
                }
                for service_id in doomed:
                    self._remove_service(service_id)

    # HTTP ----------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_put("/v1/agent/service/register", self._handle_register)
        app.router.add_put("/v1/agent/service/deregister/{id:.+}", self._handle_deregister)
        app.router.add_put("/v1/agent/service/maintenance/{id:.+}", self._handle_maintenance)
        app.router.add_get("/v1/agent/service/{id:.+}", self._handle_service)
        app.router.add_get("/v1/agent/services", self._handle_services)
        app.router.add_get("/v1/agent/checks", self._handle_checks)
        for verb, status in (("pass", PASSING), ("warn", WARNING), ("fail", CRITICAL)):
            app.router.add_put(f"/v1/agent/check/{verb}/{{id:.+}}", self._ttl_handler(status))
        app.router.add_put("/v1/agent/check/update/{id:.+}", self._handle_check_update)
        app.router.add_get("/v1/health/service/{name}", self._handle_health_service)
        app.router.add_get("/v1/agent/self", self._handle_self)
        app.router.add_get("/v1/status/leader", self._handle_leader)

    @web.middleware
    async def _record(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Keep every request for payload assertions; map _BadRequest to 400."""
        raw = await request.read()
        body: Any = None
        if raw:
            with contextlib.suppress(ValueError):
                body = json.loads(raw)
        token = request.headers.get("X-Consul-Token")
        if token is None and request.headers.get("Authorization", "").startswith("Bearer "):
            token = request.headers["Authorization"].removeprefix("Bearer ").strip()
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": {key: request.query[key] for key in request.query},
                "json": body,
                "token": token,
            }
        )
        try:
            for name in UNSUPPORTED_QUERY:
                if name in request.query:
                    raise _BadRequest(f"the Consul stand-in does not support ?{name}=")
            if request.query.get("dc", DATACENTER) not in ("", DATACENTER):
                return web.Response(status=500, text="No path to datacenter")
            return await handler(request)
        except _BadRequest as exc:
            return web.Response(status=400, text=str(exc))

    @staticmethod
    async def _json_object(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError as exc:
            reason = "EOF" if not raw else str(exc)
            raise _BadRequest(f"Request decode failed: {reason}") from exc
        if not isinstance(body, dict):
            raise _BadRequest("Request decode failed: body is not a JSON object")
        return body

    async def _handle_register(self, request: web.Request) -> web.Response:
        body = _norm_keys(await self._json_object(request))
        service = self._parse_service(body)
        specs = self._parse_checks(body)
        replace = request.query.get("replace-existing-checks")
        replace_checks = replace is not None and replace in ("", "true")
        now = time.monotonic()
        with self._mutation():
            existing = self._services.get(service.id)
            if existing is not None:
                service.create_index = existing.create_index
                service.modify_index = existing.modify_index
            self._services[service.id] = service
            kept: set[str] = set()
            for n, spec in enumerate(specs, start=1):
                cid = spec.check_id or f"service:{service.id}"
                if not spec.check_id and len(specs) > 1:
                    cid += f":{n}"
                kept.add(cid)
                self._add_check(service, cid, spec, now)
            for cid, chk in list(self._checks.items()):
                if chk.service_id == service.id:
                    chk.service_tags = list(service.tags)
                    if replace_checks and cid not in kept:
                        self._cancel_runner(self._checks.pop(cid))
        return web.Response()

    def _add_check(self, service: _Service, cid: str, spec: _CheckSpec, now: float) -> None:
        """Add or replace a check (lock held); an existing check of that ID keeps
        its status and output, as the agent restores them."""
        prev = self._checks.get(cid)
        status = spec.status or CRITICAL
        output = ""
        critical_since = now if status == CRITICAL else None
        if prev is not None:
            self._cancel_runner(prev)
            status, output = prev.status, prev.output
            critical_since = prev.critical_since
        deregister_after = 0.0
        if spec.deregister_after_ns > 0:
            deregister_after = max(
                spec.deregister_after_ns / _SECOND_NS, self._min_deregister_after
            )
        check = _Check(
            check_id=cid,
            name=spec.name or f"Service '{service.name}' check",
            service_id=service.id,
            service_name=service.name,
            service_tags=list(service.tags),
            type=spec.type,
            status=status,
            notes=spec.notes,
            output=output,
            interval_ns=spec.interval_ns,
            timeout_ns=spec.timeout_ns,
            ttl_ns=spec.ttl_ns,
            grpc=spec.grpc,
            deregister_after=deregister_after,
            critical_since=critical_since,
            ttl_deadline=now + spec.ttl_ns / _SECOND_NS if spec.type == "ttl" else None,
        )
        if prev is not None:
            check.create_index = prev.create_index
            check.modify_index = prev.modify_index
        self._checks[cid] = check
        if self._in_loop():
            self._start_runner(check)

    @staticmethod
    def _parse_service(body: dict[str, Any]) -> _Service:
        name = body.get("name")
        if not isinstance(name, str | None):
            raise _BadRequest("Request decode failed: Name must be a string")
        if not name:
            raise _BadRequest("Missing service name")
        service_id = body.get("id") or name
        address = body.get("address") or ""
        port = body.get("port") or 0
        tags = body.get("tags") or []
        meta = body.get("meta") or {}
        if not isinstance(service_id, str) or not isinstance(address, str):
            raise _BadRequest("Request decode failed: ID and Address must be strings")
        if isinstance(port, bool) or not isinstance(port, int):
            raise _BadRequest(f"Request decode failed: Port must be an integer, not {port!r}")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise _BadRequest("Request decode failed: Tags must be a list of strings")
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise _BadRequest("Request decode failed: Meta must map strings to strings")
        if address in ("0.0.0.0", "::", "[::]"):
            raise _BadRequest("Invalid service address")
        ConsulAgent._validate_meta(meta)
        weights = {"Passing": 1, "Warning": 1}
        raw_weights = body.get("weights")
        if raw_weights:
            if not isinstance(raw_weights, dict):
                raise _BadRequest("Request decode failed: Weights must be an object")
            folded = _norm_keys(raw_weights)
            weights = {"Passing": folded.get("passing", 0), "Warning": folded.get("warning", 0)}
            if weights["Passing"] < 1:
                raise _BadRequest("Invalid Weights: Passing must be greater than 0")
            if weights["Warning"] < 0:
                raise _BadRequest("Invalid Weights: Warning must be greater or equal than 0")
        tagged = body.get("taggedaddresses") or {}
        return _Service(
            id=service_id,
            name=name,
            tags=list(tags),
            address=address,
            port=port,
            meta=dict(meta),
            weights=weights,
            enable_tag_override=bool(body.get("enabletagoverride")),
            tagged_addresses=tagged if isinstance(tagged, dict) else {},
        )

    @staticmethod
    def _validate_meta(meta: dict[str, str]) -> None:
        """The agent's rules for service metadata."""
        if len(meta) > 64:
            raise _BadRequest(
                "Invalid Service Meta: Node metadata cannot contain more than 64 key/value pairs"
            )
        for key, value in meta.items():
            problem = None
            if not key:
                problem = "Key cannot be blank"
            elif not _META_KEY.match(key):
                problem = "Key contains invalid characters"
            elif len(key) > 128:
                problem = "Key is too long (limit: 128 characters)"
            elif key.startswith("consul-"):
                problem = "Key prefix 'consul-' is reserved for internal use"
            elif len(value) > 512:
                problem = "Value is too long (limit: 512 characters)"
            if problem:
                raise _BadRequest(
                    f"Invalid Service Meta: Couldn't load metadata pair "
                    f"('{key}', '{value}'): {problem}"
                )

    @staticmethod
    def _parse_checks(body: dict[str, Any]) -> list[_CheckSpec]:
        """``Check`` then ``Checks``, as the agent orders them; empty ones skipped."""
        raw: list[Any] = []
        if body.get("check"):
            raw.append(body["check"])
        checks = body.get("checks") or []
        if not isinstance(checks, list):
            raise _BadRequest("Request decode failed: Checks must be a list")
        raw.extend(checks)
        specs = []
        for item in raw:
            if not isinstance(item, dict):
                raise _BadRequest("Request decode failed: a check must be an object")
            if any(item.values()):
                specs.append(ConsulAgent._parse_check(_norm_keys(item)))
        return specs

    @staticmethod
    def _parse_check(check: dict[str, Any]) -> _CheckSpec:
        for key in UNSUPPORTED_CHECK_KEYS:
            if check.get(key):
                raise _BadRequest(
                    f"Invalid check: the Consul stand-in runs only GRPC and TTL checks, not {key}"
                )
        if check.get("grpcusetls"):
            raise _BadRequest(
                "Invalid check: the Consul stand-in does not run gRPC checks over TLS"
            )
        durations: dict[str, int] = {}
        for key in ("interval", "timeout", "ttl", "deregistercriticalserviceafter"):
            value = check.get(key)
            try:
                durations[key] = parse_duration_ns(value) if value not in (None, "") else 0
            except ValueError as exc:
                raise _BadRequest(f"Request decode failed: {exc}") from exc
        status = check.get("status") or ""
        if status and status not in STATUSES:
            raise _BadRequest("Status for checks must 'passing', 'warning', 'critical'")
        target = check.get("grpc") or ""
        if not isinstance(target, str):
            raise _BadRequest("Request decode failed: GRPC must be a string")
        if durations["interval"] > 0 and durations["ttl"] > 0:
            raise _BadRequest("Invalid check: Interval and TTL cannot both be specified")
        if target and durations["interval"] <= 0:
            raise _BadRequest(
                "Invalid check: Interval must be > 0 "
                "for Script, HTTP, H2PING, TCP, UDP or GRPC checks"
            )
        if not target and durations["ttl"] <= 0:
            raise _BadRequest("Invalid check: TTL must be > 0 for TTL checks")
        return _CheckSpec(
            check_id=str(check.get("checkid") or check.get("id") or ""),
            name=str(check.get("name") or ""),
            notes=str(check.get("notes") or ""),
            status=status,
            type="grpc" if target else "ttl",
            interval_ns=durations["interval"],
            timeout_ns=durations["timeout"],
            ttl_ns=durations["ttl"],
            grpc=target,
            deregister_after_ns=durations["deregistercriticalserviceafter"],
        )

    async def _handle_deregister(self, request: web.Request) -> web.Response:
        with self._mutation():
            self._remove_service(request.match_info["id"])  # unknown: not an error
        return web.Response()

    async def _handle_maintenance(self, request: web.Request) -> web.Response:
        service_id = request.match_info["id"]
        if "enable" not in request.query:
            raise _BadRequest("Missing value for enable")
        raw = request.query["enable"]
        try:
            enable = _parse_bool(raw)
        except ValueError as exc:
            raise _BadRequest(f'Invalid value for enable: "{raw}"') from exc
        cid = SERVICE_MAINT_PREFIX + service_id
        with self._mutation():
            service = self._services.get(service_id)
            if service is None:
                return web.Response(
                    status=404, text=f'No service registered with ID "{service_id}"'
                )
            if enable and cid not in self._checks:
                self._checks[cid] = _Check(
                    check_id=cid,
                    name="Service Maintenance Mode",
                    service_id=service.id,
                    service_name=service.name,
                    service_tags=list(service.tags),
                    type="",
                    status=CRITICAL,
                    notes=request.query.get("reason") or DEFAULT_MAINT_REASON,
                )
            elif not enable:
                self._checks.pop(cid, None)
        return web.Response()

    async def _handle_services(self, request: web.Request) -> web.Response:
        return web.json_response(self.services())

    async def _handle_checks(self, request: web.Request) -> web.Response:
        return web.json_response(self.checks())

    async def _handle_service(self, request: web.Request) -> web.Response:
        service_id = request.match_info["id"]
        with self._lock:
            service = self._services.get(service_id)
            if service is None:
                return web.Response(status=404, text=f"unknown service ID: {service_id}")
            data = self._agent_service_json(service)
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        data["ContentHash"] = digest
        return web.json_response(data, headers={"X-Consul-ContentHash": digest})

    def _ttl_handler(self, status: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return self._update_ttl(request.match_info["id"], status, request.query.get("note", ""))

        return handle

    async def _handle_check_update(self, request: web.Request) -> web.Response:
        body = _norm_keys(await self._json_object(request))
        status = body.get("status")
        if status not in STATUSES:
            raise _BadRequest(f"Invalid check status: '{status}'")
        return self._update_ttl(
            request.match_info["id"], str(status), str(body.get("output") or "")
        )

    def _update_ttl(self, check_id: str, status: str, output: str) -> web.Response:
        with self._lock:
            check = self._checks.get(check_id)
            if check is None:
                return web.Response(
                    status=404,
                    text=f'Unknown check ID "{check_id}". Ensure that the check ID is passed, '
                    "not the check name.",
                )
            if check.type != "ttl":
                return web.Response(
                    status=500, text=f'CheckID "{check_id}" does not have associated TTL'
                )
            check.ttl_deadline = time.monotonic() + check.ttl_ns / _SECOND_NS
            self._set_status(check, status, output)
            self._cancel_runner(check)
            self._start_runner(check)
        return web.Response()

    async def _handle_health_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        query = request.query
        passing = False
        if "passing" in query:
            try:
                passing = query["passing"] == "" or _parse_bool(query["passing"])
            except ValueError as exc:
                raise _BadRequest("Invalid value for ?passing") from exc
        min_index = 0
        if "index" in query:
            try:
                min_index = int(query["index"])
                if min_index < 0:
                    raise ValueError(min_index)
            except ValueError as exc:
                raise _BadRequest("Invalid index") from exc
        wait = DEFAULT_WAIT
        if "wait" in query:
            try:
                wait = parse_duration(query["wait"])
            except ValueError as exc:
                raise _BadRequest("Invalid wait time") from exc
        if min_index > 0:
            await self._block(name, min_index, wait)
        tags = [tag.lower() for tag in query.getall("tag", [])]
        with self._lock:
            index = self._name_index.get(name.lower(), self._index)
            entries = []
            for svc in sorted(self._services.values(), key=lambda s: s.id):
                if svc.name.lower() != name.lower():
                    continue
                if not all(tag in {t.lower() for t in svc.tags} for tag in tags):
                    continue
                checks = [
                    self._check_json(c) for c in self._checks.values() if c.service_id == svc.id
                ]
                checks.append(self._serf_check_json())
                if passing and any(c["Status"] != PASSING for c in checks):
                    continue
                entries.append(
                    {
                        "Node": self._node_json(),
                        "Service": self._health_service_json(svc),
                        "Checks": checks,
                    }
                )
        headers = {
            "X-Consul-Index": str(index),
            "X-Consul-KnownLeader": "true",
            "X-Consul-LastContact": "0",
        }
        return web.json_response(entries, headers=headers)

    async def _block(self, name: str, min_index: int, wait: float) -> None:
        """Hold a blocking query until the service's index passes min_index or
        the wait (capped at 10 minutes, plus up to wait/16 jitter) ends."""
        if wait <= 0:
            wait = DEFAULT_WAIT
        wait = min(wait, MAX_WAIT)
        wait += random.uniform(0, wait / 16)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while self._name_current_index(name) <= min_index:
            remaining = deadline - loop.time()
            changed = self._changed
            if remaining <= 0 or changed is None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    async def _handle_self(self, request: web.Request) -> web.Response:
        config = {"Datacenter": DATACENTER, "NodeName": self._node_name, "NodeID": self._node_id}
        member = {"Name": self._node_name, "Addr": NODE_ADDRESS, "Port": 8301, "Status": 1}
        return web.json_response({"Config": config, "Member": member})

    async def _handle_leader(self, request: web.Request) -> web.Response:
        return web.json_response(f"{NODE_ADDRESS}:8300")

    # JSON shapes ---------------------------------------------------------------

    @staticmethod
    def _agent_service_json(svc: _Service) -> dict[str, Any]:
        """A service as /v1/agent/services shows it (Tags [] and Meta {} when unset)."""
        data: dict[str, Any] = {
            "ID": svc.id,
            "Service": svc.name,
            "Tags": list(svc.tags),
            "Meta": dict(svc.meta),
            "Port": svc.port,
            "Address": svc.address,
            "Weights": dict(svc.weights),
            "EnableTagOverride": svc.enable_tag_override,
            "Datacenter": DATACENTER,
        }
        if svc.tagged_addresses:
            data["TaggedAddresses"] = dict(svc.tagged_addresses)
        return data

    @staticmethod
    def _health_service_json(svc: _Service) -> dict[str, Any]:
        """A service as /v1/health/service shows it (Meta null when unset)."""
        data: dict[str, Any] = {
            "ID": svc.id,
            "Service": svc.name,
            "Tags": list(svc.tags),
            "Address": svc.address,
            "Meta": dict(svc.meta) if svc.meta else None,
            "Port": svc.port,
            "Weights": dict(svc.weights),
            "EnableTagOverride": svc.enable_tag_override,
            "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
            "Connect": {},
            "PeerName": "",
            "CreateIndex": svc.create_index,
            "ModifyIndex": svc.modify_index,
        }
        if svc.tagged_addresses:
            data["TaggedAddresses"] = dict(svc.tagged_addresses)
        return data

    def _check_json(self, chk: _Check) -> dict[str, Any]:
        return {
            "Node": self._node_name,
            "CheckID": chk.check_id,
            "Name": chk.name,
            "Status": chk.status,
            "Notes": chk.notes,
            "Output": chk.output,
            "ServiceID": chk.service_id,
            "ServiceName": chk.service_name,
            "ServiceTags": list(chk.service_tags),
            "Type": chk.type,
            "Interval": format_duration(chk.interval_ns) if chk.interval_ns else "",
            "Timeout": format_duration(chk.timeout_ns) if chk.timeout_ns else "",
            "ExposedPort": 0,
            "Definition": {},
            "CreateIndex": chk.create_index,
            "ModifyIndex": chk.modify_index,
        }

    def _serf_check_json(self) -> dict[str, Any]:
        return {
            "Node": self._node_name,
            "CheckID": "serfHealth",
            "Name": "Serf Health Status",
            "Status": PASSING,
            "Notes": "",
            "Output": "Agent alive and reachable",
            "ServiceID": "",
            "ServiceName": "",
            "ServiceTags": [],
            "Type": "",
            "Interval": "",
            "Timeout": "",
            "ExposedPort": 0,
            "Definition": {},
            "CreateIndex": 1,
            "ModifyIndex": 1,
        }

    def _node_json(self) -> dict[str, Any]:
        return {
            "ID": self._node_id,
            "Node": self._node_name,
            "Address": NODE_ADDRESS,
            "Datacenter": DATACENTER,
            "TaggedAddresses": {
                "lan": NODE_ADDRESS,
                "lan_ipv4": NODE_ADDRESS,
                "wan": NODE_ADDRESS,
                "wan_ipv4": NODE_ADDRESS,
            },
            "Meta": {"consul-network-segment": ""},
            "CreateIndex": 1,
            "ModifyIndex": 1,
        }
