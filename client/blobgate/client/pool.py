"""The channels a Client spreads its calls over: one per instance.

``acquire`` picks round-robin among the current instances, preferring those
the caller has not tried yet and whose channel is not failing to connect, and
counts the call as in flight until ``release``. An instance that leaves the
set takes no new calls; its channel closes once its last call ends, or after
``drain_grace`` seconds at the latest.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Collection, Iterable, Sequence

import grpc

from blobgate.client.wire import ChannelOption, StorageStub


class PooledChannel:
    """One instance: its channel, stub and the calls using it."""

    def __init__(self, address: str, channel: grpc.aio.Channel) -> None:
        self.address = address
        self.channel = channel
        self.stub = StorageStub(self.channel)  # Download data messages arrive raw
        self.in_flight = 0
        self.retired = False
        self.closed = False
        self.close_timer: asyncio.TimerHandle | None = None

    def failing(self) -> bool:
        """Whether the channel is in TRANSIENT_FAILURE (the last connect failed)."""
        state = self.channel.get_state(try_to_connect=False)
        return state == grpc.ChannelConnectivity.TRANSIENT_FAILURE


class Pool:
    """The current endpoints, plus retired ones that still have calls. Every
    channel gets ``options``, and is secure when ``credentials`` are given."""

    def __init__(
        self,
        addresses: Iterable[str],
        options: Sequence[ChannelOption],
        *,
        credentials: grpc.ChannelCredentials | None = None,
        drain_grace: float = 30.0,
    ) -> None:
        self._options = list(options)
        self._credentials = credentials
        self._drain_grace = drain_grace
        self._active: dict[str, PooledChannel] = {}
        self._retired: dict[str, PooledChannel] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._turn = 0
        self.closed = False
        self.calls: Counter[str] = Counter()  # calls started per address, ever
        self.update(addresses)

    @property
    def addresses(self) -> tuple[str, ...]:
        """The addresses new calls go to."""
        return tuple(self._active)

    def update(self, addresses: Iterable[str]) -> None:
        """Make ``addresses`` the current set: open channels to new ones,
        retire those that left."""
        if self.closed:
            return
        wanted = list(dict.fromkeys(addresses))
        for address in list(self._active):
            if address not in wanted:
                self._retire(self._active.pop(address))
        for address in wanted:
            if address in self._active:
                continue
            endpoint = self._retired.pop(address, None)
            if endpoint is not None:  # back before its channel closed
                endpoint.retired = False
                if endpoint.close_timer is not None:
                    endpoint.close_timer.cancel()
                    endpoint.close_timer = None
            else:
                endpoint = PooledChannel(address, self._open_channel(address))
            self._active[address] = endpoint

    def acquire(self, exclude: Collection[str] = ()) -> PooledChannel | None:
        """The endpoint for the next call, or None if there is none."""
        candidates = list(self._active.values())
        if not candidates:
            return None
        candidates = [e for e in candidates if e.address not in exclude] or candidates
        candidates = [e for e in candidates if not e.failing()] or candidates
        endpoint = candidates[self._turn % len(candidates)]
        self._turn += 1
        self.calls[endpoint.address] += 1
        self.hold(endpoint)
        return endpoint

    def hold(self, endpoint: PooledChannel) -> None:
        """Count one more call on ``endpoint`` (undo with ``release``)."""
        endpoint.in_flight += 1

    def release(self, endpoint: PooledChannel) -> None:
        """A call on ``endpoint`` ended."""
        endpoint.in_flight -= 1
        if endpoint.retired and endpoint.in_flight <= 0:
            self._close(endpoint)

    def _open_channel(self, address: str) -> grpc.aio.Channel:
        """A channel to ``address`` with the pool's options, secure with its credentials."""
        if self._credentials is None:
            return grpc.aio.insecure_channel(address, options=self._options)
        return grpc.aio.secure_channel(address, self._credentials, options=self._options)

    def _retire(self, endpoint: PooledChannel) -> None:
        endpoint.retired = True
        if endpoint.in_flight <= 0:
            self._close(endpoint)
            return
        self._retired[endpoint.address] = endpoint
        loop = asyncio.get_running_loop()
        endpoint.close_timer = loop.call_later(self._drain_grace, self._close, endpoint)

    def _close(self, endpoint: PooledChannel) -> None:
        if endpoint.closed:
            return
        endpoint.closed = True
        if self._retired.get(endpoint.address) is endpoint:
            del self._retired[endpoint.address]
        if endpoint.close_timer is not None:
            endpoint.close_timer.cancel()
            endpoint.close_timer = None
        task = asyncio.get_running_loop().create_task(endpoint.channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every channel, cancelling the calls still running."""
        self.closed = True
        endpoints = [*self._active.values(), *self._retired.values()]
        self._active.clear()
        self._retired.clear()
        for endpoint in endpoints:
            endpoint.closed = True
            if endpoint.close_timer is not None:
                endpoint.close_timer.cancel()
        await asyncio.gather(*(e.channel.close() for e in endpoints), *self._closing)
