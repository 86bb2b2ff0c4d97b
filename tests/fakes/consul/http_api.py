"""The agent's HTTP API: routes, request recording and the handlers."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .agent_loop import AgentLoop
from .blocking import DEFAULT_WAIT, ChangeFeed
from .catalog import Catalog
from .check_runner import CheckRunner
from .go_formats import SECOND_NS, parse_bool, parse_duration
from .records import (
    CRITICAL,
    DATACENTER,
    NODE_ADDRESS,
    PASSING,
    STATUSES,
    WARNING,
    BadRequest,
    Check,
    norm_keys,
)
from .registration import parse_checks, parse_service
from .shapes import agent_service_json, check_json, health_service_json, node_json, serf_check_json

SERVICE_MAINT_PREFIX = "_service_maintenance:"
DEFAULT_MAINT_REASON = (
    "Maintenance mode is enabled for this service, but no reason was provided. "
    "This is a default message."
)
# Query parameters the real agent honours and this stand-in does not: refused
# with a 400 rather than silently ignored (which would return unfiltered data).
UNSUPPORTED_QUERY = ("filter", "node-meta", "ns", "partition", "peer", "sg")


class AgentApi:
    """The handlers of the agent's HTTP API, over its catalog and checks.
    Every request is appended to ``requests`` (see ConsulAgent.requests)."""

    def __init__(
        self,
        catalog: Catalog,
        runner: CheckRunner,
        loop: AgentLoop,
        feed: ChangeFeed,
        requests: list[dict[str, Any]],
        node_name: str,
        node_id: str,
    ) -> None:
        self._catalog = catalog
        self._runner = runner
        self._loop = loop
        self._feed = feed
        self._requests = requests
        self._node_name = node_name
        self._node_id = node_id

    def add_routes(self, app: web.Application) -> None:
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
    async def record(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Keep every request for payload assertions; map BadRequest to 400."""
        raw = await request.read()
        body: Any = None
        if raw:
            with contextlib.suppress(ValueError):
                body = json.loads(raw)
        token = request.headers.get("X-Consul-Token")
        if token is None and request.headers.get("Authorization", "").startswith("Bearer "):
            token = request.headers["Authorization"].removeprefix("Bearer ").strip()
        self._requests.append(
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
                    raise BadRequest(f"the Consul stand-in does not support ?{name}=")
            if request.query.get("dc", DATACENTER) not in ("", DATACENTER):
                return web.Response(status=500, text="No path to datacenter")
            return await handler(request)
        except BadRequest as exc:
            return web.Response(status=400, text=str(exc))

    @staticmethod
    async def _json_object(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError as exc:
            reason = "EOF" if not raw else str(exc)
            raise BadRequest(f"Request decode failed: {reason}") from exc
        if not isinstance(body, dict):
            raise BadRequest("Request decode failed: body is not a JSON object")
        return body

    # Services and checks --------------------------------------------------------

    async def _handle_register(self, request: web.Request) -> web.Response:
        body = norm_keys(await self._json_object(request))
        service = parse_service(body)
        specs = parse_checks(body)
        replace = request.query.get("replace-existing-checks")
        replace_checks = replace is not None and replace in ("", "true")
        now = time.monotonic()
        catalog = self._catalog
        with catalog.mutation():
            existing = catalog.services.get(service.id)
            if existing is not None:
                service.create_index = existing.create_index
                service.modify_index = existing.modify_index
            catalog.services[service.id] = service
            kept: set[str] = set()
            for n, spec in enumerate(specs, start=1):
                cid = spec.check_id or f"service:{service.id}"
                if not spec.check_id and len(specs) > 1:
                    cid += f":{n}"
                kept.add(cid)
                check = catalog.add_check(service, cid, spec, now)
                if self._loop.inside():
                    self._runner.start(check)
            for cid, chk in list(catalog.checks.items()):
                if chk.service_id == service.id:
                    chk.service_tags = list(service.tags)
                    if replace_checks and cid not in kept:
                        catalog.cancel_runner(catalog.checks.pop(cid))
        return web.Response()

    async def _handle_deregister(self, request: web.Request) -> web.Response:
        with self._catalog.mutation():
            self._catalog.remove_service(request.match_info["id"])  # unknown: not an error
        return web.Response()

    async def _handle_maintenance(self, request: web.Request) -> web.Response:
        service_id = request.match_info["id"]
        if "enable" not in request.query:
            raise BadRequest("Missing value for enable")
        raw = request.query["enable"]
        try:
            enable = parse_bool(raw)
        except ValueError as exc:
            raise BadRequest(f'Invalid value for enable: "{raw}"') from exc
        cid = SERVICE_MAINT_PREFIX + service_id
        catalog = self._catalog
        with catalog.mutation():
            service = catalog.services.get(service_id)
            if service is None:
                return web.Response(
                    status=404, text=f'No service registered with ID "{service_id}"'
                )
            if enable and cid not in catalog.checks:
                catalog.checks[cid] = Check(
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
                catalog.checks.pop(cid, None)
        return web.Response()

    async def _handle_services(self, request: web.Request) -> web.Response:
        return web.json_response(self._catalog.services_json())

    async def _handle_checks(self, request: web.Request) -> web.Response:
        return web.json_response(self._catalog.checks_json())

    async def _handle_service(self, request: web.Request) -> web.Response:
        service_id = request.match_info["id"]
        with self._catalog.lock:
            service = self._catalog.services.get(service_id)
            if service is None:
                return web.Response(status=404, text=f"unknown service ID: {service_id}")
            data = agent_service_json(service)
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        data["ContentHash"] = digest
        return web.json_response(data, headers={"X-Consul-ContentHash": digest})

    # TTL checks -----------------------------------------------------------------

    def _ttl_handler(self, status: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return self._update_ttl(request.match_info["id"], status, request.query.get("note", ""))

        return handle

    async def _handle_check_update(self, request: web.Request) -> web.Response:
        body = norm_keys(await self._json_object(request))
        status = body.get("status")
        if status not in STATUSES:
            raise BadRequest(f"Invalid check status: '{status}'")
        return self._update_ttl(
            request.match_info["id"], str(status), str(body.get("output") or "")
        )

    def _update_ttl(self, check_id: str, status: str, output: str) -> web.Response:
        catalog = self._catalog
        with catalog.lock:
            check = catalog.checks.get(check_id)
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
            check.ttl_deadline = time.monotonic() + check.ttl_ns / SECOND_NS
            catalog.set_status(check, status, output)
            catalog.cancel_runner(check)
            self._runner.start(check)
        return web.Response()

    # Discovery ------------------------------------------------------------------

    async def _handle_health_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        query = request.query
        passing = False
        if "passing" in query:
            try:
                passing = query["passing"] == "" or parse_bool(query["passing"])
            except ValueError as exc:
                raise BadRequest("Invalid value for ?passing") from exc
        min_index = 0
        if "index" in query:
            try:
                min_index = int(query["index"])
                if min_index < 0:
                    raise ValueError(min_index)
            except ValueError as exc:
                raise BadRequest("Invalid index") from exc
        wait = DEFAULT_WAIT
        if "wait" in query:
            try:
                wait = parse_duration(query["wait"])
            except ValueError as exc:
                raise BadRequest("Invalid wait time") from exc
        catalog = self._catalog
        if min_index > 0:
            await self._feed.block(lambda: catalog.name_index(name), min_index, wait)
        tags = [tag.lower() for tag in query.getall("tag", [])]
        with catalog.lock:
            index = catalog.name_index(name)
            entries = []
            for svc in sorted(catalog.services.values(), key=lambda s: s.id):
                if svc.name.lower() != name.lower():
                    continue
                if not all(tag in {t.lower() for t in svc.tags} for tag in tags):
                    continue
                checks = [
                    check_json(c, self._node_name)
                    for c in catalog.checks.values()
                    if c.service_id == svc.id
                ]
                checks.append(serf_check_json(self._node_name))
                if passing and any(c["Status"] != PASSING for c in checks):
                    continue
                entries.append(
                    {
                        "Node": node_json(self._node_name, self._node_id),
                        "Service": health_service_json(svc),
                        "Checks": checks,
                    }
                )
        headers = {
            "X-Consul-Index": str(index),
            "X-Consul-KnownLeader": "true",
            "X-Consul-LastContact": "0",
        }
        return web.json_response(entries, headers=headers)

    # The agent itself -------------------------------------------------------------

    async def _handle_self(self, request: web.Request) -> web.Response:
        config = {"Datacenter": DATACENTER, "NodeName": self._node_name, "NodeID": self._node_id}
        member = {"Name": self._node_name, "Addr": NODE_ADDRESS, "Port": 8301, "Status": 1}
        return web.json_response({"Config": config, "Member": member})

    async def _handle_leader(self, request: web.Request) -> web.Response:
        return web.json_response(f"{NODE_ADDRESS}:8300")
