"""Service discovery through Consul, for ``consul://NAME[?tag=TAG]`` targets.

``ConsulWatcher`` asks the agent for the passing instances of a service
(``GET /v1/health/service/NAME?passing=true``) and then follows changes with
blocking queries in a background task: each answer's ``X-Consul-Index`` goes
back as ``?index=`` so the agent holds the request until the set changes or
the wait ends. The index is reset when it goes backwards and never sent below
1; queries start at most once per ``min_interval``; while the agent cannot be
reached the loop retries with jittered exponential backoff and the last known
instances stay in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.wait import wait_base

from blobgate.client.retry import equal_jitter
from blobgate.shared.consul_config import ConsulConfig

__all__ = [
    "ConsulConfig",
    "ConsulTarget",
    "ConsulWatcher",
    "Instance",
    "instances_from_health",
]

log = logging.getLogger(__name__)

SCHEME = "consul://"
# Pauses between failed queries: about 0.2, 0.4, ... up to 5 s.
WATCH_WAIT = equal_jitter(0.2, 5.0)


@dataclass(frozen=True)
class ConsulTarget:
    """The service (and optional tag) a ``consul://`` target names."""

    service: str
    tag: str | None = None

    @classmethod
    def parse(cls, target: str) -> ConsulTarget | None:
        """The service of ``consul://NAME[?tag=TAG]``; None for any other
        target. Raises ValueError for a malformed ``consul://`` target."""
        if not target.startswith(SCHEME):
            return None
        parts = urllib.parse.urlsplit(target)
        if not parts.netloc or parts.path not in ("", "/") or parts.fragment:
            raise ValueError(f"expected consul://SERVICE[?tag=TAG], got {target!r}")
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        unknown = set(query) - {"tag"}
        if unknown:
            raise ValueError(f"{target!r}: unknown parameter {sorted(unknown)[0]!r} (only tag)")
        tags = query.get("tag", [])
        if len(tags) > 1 or tags == [""]:
            raise ValueError(f"{target!r}: give one non-empty tag")
        return cls(urllib.parse.unquote(parts.netloc), tags[0] if tags else None)

    def __str__(self) -> str:
        return f"{self.service!r}" + (f" with tag {self.tag!r}" if self.tag else "")


@dataclass(frozen=True, order=True)
class Instance:
    """One passing instance: ``address`` is the ``host:port`` to dial."""

    address: str
    service_id: str


def instances_from_health(entries: Any) -> tuple[Instance, ...]:
    """The instances in a ``/v1/health/service`` answer, sorted, one per
    address. An empty Service.Address means the node's address."""
    found: dict[str, Instance] = {}
    for entry in entries or ():
        service = entry.get("Service") or {}
        node = entry.get("Node") or {}
        host = service.get("Address") or node.get("Address") or ""
        port = service.get("Port")
        if not host or not isinstance(port, int) or not 0 < port < 65536:
            log.warning("ignoring Consul instance without address or port: %r", service)
            continue
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        found.setdefault(address, Instance(address, str(service.get("ID") or "")))
    return tuple(sorted(found.values()))


def _next_index(previous: int, header: Any) -> int:
    """The index to block on next: 0 (a plain query) when the agent's index
    went backwards or is unreadable, else the new index, at least 1."""
    try:
        index = int(header)
    except (TypeError, ValueError):
        return 0
    if index < previous:
        return 0
    return max(index, 1)


class ConsulWatcher:
    """Keeps ``instances`` equal to the passing instances of ``target`` and
    calls ``on_change`` with the new tuple whenever it changes."""

    def __init__(
        self,
        target: ConsulTarget,
        agent: ConsulConfig,
        on_change: Callable[[tuple[Instance, ...]], None],
        *,
        wait: float = 30.0,
        min_interval: float = 0.25,
        retry_wait: wait_base = WATCH_WAIT,
        request_timeout: float = 10.0,
    ) -> None:
        self.target = target
        self.agent = agent
        self.instances: tuple[Instance, ...] = ()
        self.error: str | None = None  # why the last query failed; None after a success
        self._on_change = on_change
        self._wait = wait
        self._min_interval = min_interval
        self._retry_wait = retry_wait
        self._request_timeout = request_timeout
        self._resolved = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def resolved(self) -> bool:
        """Whether the agent has answered at least once."""
        return self._resolved.is_set()

    def start(self) -> None:
        """Start the watch (in the running loop) unless started or closed."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"consul-watch-{self.target.service}"
            )

    async def wait_resolved(self, within: float) -> bool:
        """Wait up to ``within`` seconds for the agent's first answer."""
        if not self._resolved.is_set() and within > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._resolved.wait()
        return self._resolved.is_set()

    async def close(self) -> None:
        """Stop watching."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        client = self.agent.connect()
        # Failed queries are retried for as long as the watch runs.
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=self._retry_wait,
            before_sleep=self._query_failed,
        )
        index = 0
        try:
            while True:
                answer: tuple[float, Any, Any] = await retrying(self._query, client, index)
                started, header, entries = answer
                if self.error is not None:
                    log.info("Consul at %s answers again", self.agent)
                self.error = None
                index = _next_index(index, header)
                self._update(instances_from_health(entries))
                # A blocking query may return at once (a reset index, an
                # agent that does not block): never spin.
                await asyncio.sleep(max(0.0, started + self._min_interval - loop.time()))
        finally:
            await client.close()

    def _query_failed(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        self.error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        # The first failure of a streak is a warning, the retries are not.
        log.log(
            logging.WARNING if state.attempt_number == 1 else logging.DEBUG,
            "Consul at %s, service %s: %s; retrying in %.1fs",
            self.agent,
            self.target,
            self.error,
            state.upcoming_sleep,
        )

    async def _query(self, client: Any, index: int) -> tuple[float, Any, Any]:
        """When the query started, and the agent's index header and entries."""
        started = asyncio.get_running_loop().time()
        # The agent holds a blocking query for up to wait + wait/16.
        limit = self._request_timeout + (self._wait * 17 / 16 if index else 0.0)
        async with asyncio.timeout(limit):
            header, entries = await client.health.service(
                self.target.service,
                index=index or None,
                wait=f"{self._wait:g}s",
                passing=True,
                tag=self.target.tag,
            )
        return started, header, entries

    def _update(self, instances: tuple[Instance, ...]) -> None:
        first = not self._resolved.is_set()
        self._resolved.set()
        if instances == self.instances and not first:
            return
        log.info(
            "Consul at %s: %d passing instance(s) of %s: %s",
            self.agent,
            len(instances),
            self.target,
            ", ".join(i.address for i in instances) or "none",
        )
        self.instances = instances
        self._on_change(instances)
