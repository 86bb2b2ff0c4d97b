"""The transport of a ``consul://NAME[?tag=TAG]`` target: one channel per
passing instance of the service, the set followed by a ``ConsulWatcher``."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence

import grpc

from blobgate.client.discovery import ConsulTarget, ConsulWatcher, Instance
from blobgate.client.errors import BlobgateError
from blobgate.client.pool import Balancing
from blobgate.client.transport import Endpoint, PoolTransport, closed_error
from blobgate.client.wire import ChannelOption
from blobgate.shared.consul_config import ConsulConfig

# How long a call waits for Consul's first answer (at most its own deadline).
RESOLVE_WAIT = 10.0


class ConsulTransport(PoolTransport):
    """Spreads calls round-robin over the passing instances of ``service``
    that the agent ``agent`` reports. The watch starts at once when an event
    loop runs, else with ``start`` or the first call."""

    def __init__(
        self,
        target: str,
        service: ConsulTarget,
        agent: ConsulConfig,
        options: Sequence[ChannelOption],
        credentials: grpc.ChannelCredentials | None = None,
        balancing: Balancing | None = None,
    ) -> None:
        super().__init__(target, [], options, credentials, balancing)
        self.watcher = ConsulWatcher(service, agent, self._on_instances)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # the first call starts the watch
        self.watcher.start()

    def _on_instances(self, instances: tuple[Instance, ...]) -> None:
        self.pool.update(instance.address for instance in instances)

    def start(self) -> None:
        """Start watching Consul unless started already."""
        self.watcher.start()

    async def acquire(self, avoid: Collection[str], time_left: float | None) -> Endpoint:
        """An instance for the next attempt; waits for Consul's first answer,
        within ``time_left``."""
        if self.pool.closed:
            raise closed_error()
        watcher = self.watcher
        if not watcher.resolved:
            watcher.start()
            await watcher.wait_resolved(
                RESOLVE_WAIT if time_left is None else min(time_left, RESOLVE_WAIT)
            )
        return await super().acquire(avoid, time_left)

    def _none_available(self) -> BlobgateError:
        watcher = self.watcher
        if self.pool.closed:
            return closed_error()
        if not watcher.resolved:
            why = watcher.error or "no answer yet"
            message = f"Consul at {watcher.agent} did not list service {watcher.target}: {why}"
        else:
            message = f"Consul at {watcher.agent} lists no passing instance of {watcher.target}"
        return BlobgateError(grpc.StatusCode.UNAVAILABLE, message, unsent=True)

    async def close(self) -> None:
        """Stop watching Consul and close the channels."""
        await self.watcher.close()
        await super().close()
