"""The channels a Client spreads its calls over: one per instance.

``connect`` gives each attempt of a call an instance whose channel is
connected (READY), round-robin over the current instances that are not
ejected (``outliers``), preferring those the call has not tried yet. When the
rotation's choice is not connected yet, the first one after it that is takes
the call while it connects; when none is, the call waits for the choice, and
every ``hedge`` seconds also starts connecting to the next, taking the first
to be ready. An instance whose connection fails, or is not set up within
``connect_timeout``, is ejected, and its channel replaced by a new one for
when it is tried again. When every instance is ejected, the one that failed
least recently is tried anyway. No call is started on a channel that did not
connect, so ``connect``'s failures are ``unsent``.

An instance that leaves the set takes no new calls; its channel closes once
its last call ends, or after ``drain_grace`` seconds at the latest.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import grpc

from blobgate.client.connecting import connect, is_ready
from blobgate.client.errors import BlobgateError
from blobgate.client.options import ClientOptions
from blobgate.client.outliers import EjectionPolicy, Outliers
from blobgate.client.wire import ChannelOption, StorageStub

# Each Client gets connections of its own: gRPC would otherwise share one
# subchannel per address across the process, and with it the failed state
# and reconnect backoff of another client's connection.
_OWN_CONNECTIONS: ChannelOption = ("grpc.use_local_subchannel_pool", 1)

ConnectTask = asyncio.Task[BlobgateError | None]


@dataclass(frozen=True)
class Balancing:
    """How the pool connects and ejects: the ``ClientOptions`` of the same
    names (``connect_hedge`` is ``hedge``), which document each."""

    connect_timeout: float
    hedge: float
    preconnect: bool
    ejection: EjectionPolicy

    @classmethod
    def of(cls, options: ClientOptions) -> Balancing:
        """The balancing ``options`` ask for."""
        return cls(
            connect_timeout=options.connect_timeout,
            hedge=options.connect_hedge,
            preconnect=options.preconnect,
            ejection=EjectionPolicy(
                options.eject_after, options.eject_time, options.max_eject_time
            ),
        )


class PooledChannel:
    """One channel to one instance, its stub and the calls using it."""

    def __init__(self, address: str, channel: grpc.aio.Channel) -> None:
        self.address = address
        self.channel = channel
        self.stub = StorageStub(self.channel)  # Download data messages arrive raw
        self.in_flight = 0
        self.retired = False
        self.broken = False  # replaced after its connection failed
        self.closed = False
        self.close_timer: asyncio.TimerHandle | None = None
        self.connecting: ConnectTask | None = None

    def ready(self) -> bool:
        """Whether the channel has a connection set up now."""
        return is_ready(self.channel)


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
        balancing: Balancing | None = None,
        start: int | None = None,
    ) -> None:
        self._options = [*options, _OWN_CONNECTIONS]
        self._credentials = credentials
        self._drain_grace = drain_grace
        self.balancing = balancing or Balancing.of(ClientOptions())
        self.outliers = Outliers(self.balancing.ejection)
        self._active: dict[str, PooledChannel] = {}
        self._retired: set[PooledChannel] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._connects: set[ConnectTask] = set()
        # The rotation starts at ``start``, by default at random: one-shot
        # clients (each CLI run) spread their first calls instead of all
        # taking the first instance.
        self._turn = random.randrange(1 << 16) if start is None else start
        self.closed = False
        self.calls: Counter[str] = Counter()  # calls started per address, ever
        self.update(addresses)

    @property
    def addresses(self) -> tuple[str, ...]:
        """The addresses new calls go to."""
        return tuple(self._active)

    def update(self, addresses: Iterable[str]) -> None:
        """Make ``addresses`` the current set: open channels to new ones
        (and connect them, with ``preconnect``), retire those that left."""
        if self.closed:
            return
        wanted = list(dict.fromkeys(addresses))
        for address in list(self._active):
            if address not in wanted:
                self._retire(self._active.pop(address))
        for address in wanted:
            if address not in self._active:
                self._active[address] = self._revive(address) or PooledChannel(
                    address, self._open_channel(address)
                )
        self.outliers.keep_only(wanted)
        if self.balancing.preconnect and _loop_running():
            for endpoint in self._active.values():
                if not endpoint.ready() and not self.outliers.ejected(endpoint.address):
                    self._connecting(endpoint)

    def acquire(self, exclude: Collection[str] = ()) -> PooledChannel | None:
        """The rotation's next endpoint, connected or not, or None if there
        is none (``connect`` is what calls use)."""
        order = self._order(exclude, (), self._turn)
        self._turn += 1
        return self._take(order[0]) if order else None

    async def connect(
        self, avoid: Collection[str], time_left: float | None
    ) -> PooledChannel | None:
        """A connected endpoint for the next attempt of a call, one whose
        address is not in ``avoid`` if possible, within ``time_left`` seconds
        (None: no deadline); None if the pool has no instance. Raises an
        ``unsent`` ``BlobgateError`` when no instance could be connected."""
        loop = asyncio.get_running_loop()
        deadline = None if time_left is None else loop.time() + time_left
        turn = self._turn
        self._turn += 1
        failed: dict[str, BlobgateError] = {}
        start_next: bool | None = None  # None: the first round
        while True:
            if self.closed:
                raise BlobgateError(grpc.StatusCode.CANCELLED, "client is closed")
            order = self._order(avoid, failed, turn)
            ready = next((e for e in order if e.ready()), None)
            if ready is not None:
                if order[0] is not ready:  # connect the rotation's choice for the next calls
                    self._connecting(order[0])
                return self._take(ready)
            # Every candidate's connection in progress counts, whoever started it.
            connecting = {
                e.connecting: e
                for e in order
                if e.connecting is not None and not e.connecting.done()
            }
            idle = [e for e in order if e not in connecting.values()]
            if start_next is None:  # first, the rotation's choice, unless it is connecting
                start_next = bool(order) and order[0] in idle
            if idle and (start_next or not connecting):
                chosen = idle.pop(0)
                connecting[self._connecting(chosen)] = chosen
            if not connecting:
                if not failed:
                    return None
                last = list(failed.values())[-1]
                raise _again(last) from last.__cause__
            wait = None if deadline is None else deadline - loop.time()
            if idle:  # another instance to try if these are slow
                wait = self.balancing.hedge if wait is None else min(wait, self.balancing.hedge)
            if wait is not None and wait <= 0:
                raise _deadline_passed(connecting.values())
            done, _ = await asyncio.wait(
                connecting, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
            start_next = not done  # the hedge delay passed
            for task in done:
                endpoint = connecting[task]
                if task.cancelled():
                    continue  # the pool is closing
                error = task.result()
                if error is not None:
                    failed[endpoint.address] = error
                    start_next = True
                elif self._active.get(endpoint.address) is endpoint:
                    return self._take(endpoint)

    def release(self, endpoint: PooledChannel) -> None:
        """A call on ``endpoint`` ended."""
        endpoint.in_flight -= 1
        if endpoint.retired and endpoint.in_flight <= 0:
            self._close(endpoint)

    def _order(
        self, avoid: Collection[str], skip: Collection[str], turn: int
    ) -> list[PooledChannel]:
        """The endpoints an attempt may use, best first, from the rotation's
        turn ``turn`` on: those not ejected and not in ``avoid`` (else those
        in ``avoid``); when every one is ejected, the one that failed least
        recently. Never those in ``skip``."""
        endpoints = list(self._active.values())
        if not endpoints:
            return []
        start = turn % len(endpoints)
        rotated = [e for e in endpoints[start:] + endpoints[:start] if e.address not in skip]
        usable = [e for e in rotated if not self.outliers.ejected(e.address)]
        if usable:
            return [e for e in usable if e.address not in avoid] or usable
        if not rotated:
            return []
        fresh = [e for e in rotated if e.address not in avoid] or rotated
        return [min(fresh, key=lambda e: self.outliers.last_failure(e.address))]

    def _take(self, endpoint: PooledChannel) -> PooledChannel:
        self.calls[endpoint.address] += 1
        endpoint.in_flight += 1
        return endpoint

    def _connecting(self, endpoint: PooledChannel) -> ConnectTask:
        """The connection attempt of ``endpoint``, started unless running."""
        task = endpoint.connecting
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._connect(endpoint))
            endpoint.connecting = task
            self._connects.add(task)
            task.add_done_callback(self._connects.discard)
        return task

    async def _connect(self, endpoint: PooledChannel) -> BlobgateError | None:
        timeout = self.balancing.connect_timeout
        error = await connect(endpoint.channel, endpoint.address, timeout)
        if error is not None and self._active.get(endpoint.address) is endpoint:
            self.outliers.connect_failed(endpoint.address, error.details)
            # A new channel for the next try: this one would retry on gRPC's
            # own backoff, and stay failed until then.
            endpoint.broken = True
            self._active[endpoint.address] = PooledChannel(
                endpoint.address, self._open_channel(endpoint.address)
            )
            self._retire(endpoint)
        return error

    def _revive(self, address: str) -> PooledChannel | None:
        """The retired endpoint of ``address`` that left the set with calls
        still running and is back, if any: it keeps its channel."""
        for endpoint in self._retired:
            if endpoint.address == address and not endpoint.broken:
                self._retired.discard(endpoint)
                endpoint.retired = False
                if endpoint.close_timer is not None:
                    endpoint.close_timer.cancel()
                    endpoint.close_timer = None
                return endpoint
        return None

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
        self._retired.add(endpoint)
        loop = asyncio.get_running_loop()
        endpoint.close_timer = loop.call_later(self._drain_grace, self._close, endpoint)

    def _close(self, endpoint: PooledChannel) -> None:
        if endpoint.closed:
            return
        endpoint.closed = True
        self._retired.discard(endpoint)
        if endpoint.close_timer is not None:
            endpoint.close_timer.cancel()
            endpoint.close_timer = None
        connecting = endpoint.connecting
        if connecting is not None and connecting is not asyncio.current_task():
            connecting.cancel()
        task = asyncio.get_running_loop().create_task(endpoint.channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every channel, cancelling the calls still running."""
        self.closed = True
        endpoints = [*self._active.values(), *self._retired]
        self._active.clear()
        self._retired.clear()
        connects = list(self._connects)
        for task in connects:
            task.cancel()
        for endpoint in endpoints:
            endpoint.closed = True
            if endpoint.close_timer is not None:
                endpoint.close_timer.cancel()
        await asyncio.gather(*connects, return_exceptions=True)
        await asyncio.gather(*(e.channel.close() for e in endpoints), *self._closing)


def _loop_running() -> bool:
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop()
        return True
    return False


def _again(error: BlobgateError) -> BlobgateError:
    """A new error like ``error``: a connection's failure can end several
    calls, and one exception object is not raised by several."""
    return BlobgateError(
        error.code,
        error.message,
        status_lost=error.status_lost,
        retryable=error.retryable,
        request_id=error.request_id,
        problem=error.problem,
        details=error.details,
        unsent=error.unsent,
    )


def _deadline_passed(connecting: Iterable[PooledChannel]) -> BlobgateError:
    addresses = ", ".join(e.address for e in connecting)
    return BlobgateError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f"the call's deadline passed before an instance was connected (still connecting: "
        f"{addresses or 'none'})",
        unsent=True,
    )
