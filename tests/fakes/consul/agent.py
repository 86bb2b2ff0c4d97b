"""ConsulAgent: the stand-in's public face, serving from its own thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from typing import Any, Self

from aiohttp import web

from .agent_loop import AgentLoop
from .blocking import ChangeFeed
from .catalog import Catalog
from .check_runner import CheckRunner
from .go_formats import SECOND_NS
from .http_api import AgentApi

log = logging.getLogger(__name__)


class ConsulAgent:
    """A Consul agent stand-in serving the HTTP API on ``host`` (127.0.0.1
    unless told) from its own thread and event loop. ``with ConsulAgent() as
    agent:`` starts and stops it.

    ``min_deregister_after`` is the floor of DeregisterCriticalServiceAfter (1m
    on the real agent), ``reap_interval`` how often critical services are
    reaped (~30s on the real agent), ``min_check_interval`` the floor of a
    check's Interval (1s on the real agent). ``tls_ca`` (PEM; None: the
    system's roots) and ``tls_cert``/``tls_key`` (the agent's own client
    certificate) are what its gRPC checks with GRPCUseTLS use, as the agent's
    ca_file, cert_file and key_file.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        min_deregister_after: float = 60.0,
        reap_interval: float = 1.0,
        min_check_interval: float = 1.0,
        node_name: str = "consul-stand-in",
        tls_ca: bytes | None = None,
        tls_cert: bytes | None = None,
        tls_key: bytes | None = None,
    ) -> None:
        self._port = port
        self.host = host
        self.requests: list[dict[str, Any]] = []
        """Every request received, oldest first: method, path, query (first value
        of each key), json (the decoded body or None) and token (X-Consul-Token)."""

        self._loop = AgentLoop()
        self._feed = ChangeFeed()
        self._catalog = Catalog(self._loop, self._feed, node_name, min_deregister_after)
        self._runner = CheckRunner(
            self._catalog,
            int(min_check_interval * SECOND_NS),
            reap_interval,
            tls=(tls_ca, tls_key, tls_cert),
        )
        self._api = AgentApi(
            self._catalog,
            self._runner,
            self._loop,
            self._feed,
            self.requests,
            node_name,
            str(uuid.uuid4()),
        )

        self._lifecycle = threading.Lock()  # serialises start() and stop()
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._reaper: asyncio.Task[None] | None = None

    # Public interface -------------------------------------------------------

    @property
    def port(self) -> int:
        """The port (chosen at the first start() when created with port 0)."""
        return self._port

    @property
    def address(self) -> str:
        """``HOST:PORT``, as CONSUL_HTTP_ADDR takes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self._port}"

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
            thread, loop, stopping = self._thread, self._loop.loop, self._stopping
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
        self._catalog.wipe()

    def services(self) -> dict[str, dict[str, Any]]:
        """What ``GET /v1/agent/services`` returns: service ID -> service."""
        return self._catalog.services_json()

    def checks(self) -> dict[str, dict[str, Any]]:
        """What ``GET /v1/agent/checks`` returns: check ID -> check."""
        return self._catalog.checks_json()

    def check_status(self, service_id: str) -> str | None:
        """The aggregated status of a service's checks: critical if any is
        critical (maintenance included), else warning if any warns, else
        passing; None for an unknown service."""
        return self._catalog.check_status(service_id)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
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
                self._loop.leave()
                loop.close()
                ready.set()

    async def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        self._loop.enter()
        self._stopping = asyncio.Event()
        self._feed.open()
        app = web.Application(middlewares=[self._api.record], client_max_size=8 * 1024 * 1024)
        self._api.add_routes(app)
        # A short shutdown_timeout: stop() drops blocked queries like a dying agent.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.05)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._port, reuse_address=True)
            await site.start()
        except OSError as exc:
            failure.append(exc)
            await runner.cleanup()
            ready.set()
            return
        self._port = runner.addresses[0][1]
        self._runner.resume()
        self._reaper = asyncio.create_task(self._runner.reap_forever())
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()  # stop listening, drop open requests
            with self._catalog.lock:
                for check in self._catalog.checks.values():
                    check.task = None
            self._reaper = None
            current = asyncio.current_task()
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            for task in tasks:  # check runners, the reaper, anything left
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
