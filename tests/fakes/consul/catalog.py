"""The agent's state: its services and checks under one lock, and the
X-Consul-Index that grows on every change a blocking query can see."""

from __future__ import annotations

import contextlib
import json
import operator
import threading
import time
from collections.abc import Iterator
from typing import Any

from .agent_loop import AgentLoop
from .blocking import ChangeFeed
from .go_formats import SECOND_NS
from .records import CRITICAL, PASSING, WARNING, Check, CheckSpec, Service
from .shapes import agent_service_json, check_json

# The fields of a service, and of a check, whose change a blocking query sees.
_SERVICE_SEEN = operator.attrgetter(
    "name", "tags", "address", "port", "meta", "weights", "enable_tag_override", "tagged_addresses"
)
_CHECK_SEEN = operator.attrgetter(
    "name", "service_id", "type", "status", "notes", "grpc", "interval_ns", "timeout_ns", "ttl_ns"
)


class Catalog:
    """Services and checks by ID. Change them only inside ``mutation()``,
    which bumps the index of what changed and wakes blocked queries."""

    def __init__(
        self, loop: AgentLoop, feed: ChangeFeed, node_name: str, min_deregister_after: float
    ) -> None:
        self._loop = loop
        self._feed = feed
        self._node_name = node_name
        self._min_deregister_after = min_deregister_after
        self.lock = threading.RLock()  # guards the state below
        self.services: dict[str, Service] = {}
        self.checks: dict[str, Check] = {}
        self._index = 1  # X-Consul-Index: grows on every change, never 0
        self._name_index: dict[str, int] = {}

    # Reading ------------------------------------------------------------------

    def services_json(self) -> dict[str, dict[str, Any]]:
        """What ``GET /v1/agent/services`` returns: service ID -> service."""
        with self.lock:
            return {sid: agent_service_json(s) for sid, s in self.services.items()}

    def checks_json(self) -> dict[str, dict[str, Any]]:
        """What ``GET /v1/agent/checks`` returns: check ID -> check."""
        with self.lock:
            return {cid: check_json(c, self._node_name) for cid, c in self.checks.items()}

    def check_status(self, service_id: str) -> str | None:
        """The aggregated status of a service's checks: critical if any is
        critical (maintenance included), else warning if any warns, else
        passing; None for an unknown service."""
        with self.lock:
            if service_id not in self.services:
                return None
            statuses = {c.status for c in self.checks.values() if c.service_id == service_id}
        for status in (CRITICAL, WARNING):
            if status in statuses:
                return status
        return PASSING

    def name_index(self, name: str) -> int:
        """The index of the last change to the services called ``name``."""
        with self.lock:
            return self._name_index.get(name.lower(), self._index)

    # Changing -----------------------------------------------------------------

    @contextlib.contextmanager
    def mutation(self) -> Iterator[None]:
        """Change state under the lock, then bump the index of what changed."""
        with self.lock:
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
        for sid, svc in self.services.items():
            prints[("s", sid)] = json.dumps(_SERVICE_SEEN(svc), sort_keys=True)
            by_name.setdefault(svc.name.lower(), []).append(sid)
        for cid, chk in self.checks.items():
            prints[("c", cid)] = json.dumps(_CHECK_SEEN(chk), sort_keys=True)
        for name, sids in by_name.items():
            parts = []
            for sid in sorted(sids):
                parts.append(prints[("s", sid)])
                parts.extend(
                    prints[("c", cid)]
                    for cid, chk in sorted(self.checks.items())
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
            elif kind == "s" and key in self.services:
                svc = self.services[key]
                svc.create_index = svc.create_index or self._index
                svc.modify_index = self._index
            elif kind == "c" and key in self.checks:
                chk = self.checks[key]
                chk.create_index = chk.create_index or self._index
                chk.modify_index = self._index
        self._loop.call(self._feed.notify)

    def set_status(self, check: Check, status: str, output: str) -> None:
        """Record a check result, if the check is still registered."""
        with self.mutation():
            if self.checks.get(check.check_id) is not check:
                return
            if status == CRITICAL and check.status != CRITICAL:
                check.critical_since = time.monotonic()
            elif status != CRITICAL:
                check.critical_since = None
            check.status = status
            check.output = output

    def add_check(self, service: Service, cid: str, spec: CheckSpec, now: float) -> Check:
        """Add or replace a check (inside a mutation); an existing check of that
        ID keeps its status and output, as the agent restores them. The caller
        starts its runner."""
        prev = self.checks.get(cid)
        status = spec.status or CRITICAL
        output = ""
        critical_since = now if status == CRITICAL else None
        if prev is not None:
            self.cancel_runner(prev)
            status, output = prev.status, prev.output
            critical_since = prev.critical_since
        deregister_after = 0.0
        if spec.deregister_after_ns > 0:
            deregister_after = max(spec.deregister_after_ns / SECOND_NS, self._min_deregister_after)
        check = Check(
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
            grpc_use_tls=spec.grpc_use_tls,
            tls_server_name=spec.tls_server_name,
            deregister_after=deregister_after,
            critical_since=critical_since,
            ttl_deadline=now + spec.ttl_ns / SECOND_NS if spec.type == "ttl" else None,
        )
        if prev is not None:
            check.create_index = prev.create_index
            check.modify_index = prev.modify_index
        self.checks[cid] = check
        return check

    def remove_service(self, service_id: str) -> None:
        """Drop a service and its checks (inside a mutation)."""
        self.services.pop(service_id, None)
        for cid in [cid for cid, c in self.checks.items() if c.service_id == service_id]:
            self.cancel_runner(self.checks.pop(cid))

    def wipe(self) -> None:
        """Forget every service and check; the index keeps growing."""
        with self.mutation():
            for check in self.checks.values():
                self.cancel_runner(check)
            self.services.clear()
            self.checks.clear()

    def cancel_runner(self, check: Check) -> None:
        """Stop the task running or timing a check, from any thread."""
        task, check.task = check.task, None
        if task is not None:

            def cancel() -> None:
                task.cancel()

            self._loop.call(cancel)
