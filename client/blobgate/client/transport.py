"""Where a client's calls go: the ``Transport`` protocol, and its
implementation for one fixed ``host:port`` (``consul_transport`` has the
Consul one).

A client asks its transport for an endpoint before each attempt of a call,
avoiding the addresses that already failed that call, and hands the endpoint
back when the attempt ends, with the error if it failed. A test may give a
``Client`` a transport of its own.

The pool's transports hand out connected endpoints only, and eject the
instances that cannot serve (``pool``, ``outliers``): a failure to connect
is ``unsent``, and retried by every call, whatever its method.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol

import grpc

from blobgate.client.errors import BlobgateError
from blobgate.client.pool import Balancing, Pool, PooledChannel
from blobgate.client.wire import ChannelOption


class Endpoint(Protocol):
    """One server to call: its address and a ``StorageServiceStub`` on it."""

    @property
    def address(self) -> str: ...

    @property
    def stub(self) -> Any: ...


class Transport(Protocol):
    """Gives a client an endpoint for each attempt of a call."""

    @property
    def target(self) -> str:
        """What the transport reaches, for messages (``host:port``, ``consul://...``)."""
        ...

    @property
    def addresses(self) -> tuple[str, ...]:
        """The addresses new calls go to."""
        ...

    def call_counts(self) -> dict[str, int]:
        """Calls started per address since the transport was created (an
        attempt that could not connect started none)."""
        ...

    def start(self) -> None:
        """Start any background work, in the running event loop."""
        ...

    async def acquire(self, avoid: Collection[str], time_left: float | None) -> Endpoint:
        """The endpoint for the next attempt, one whose address is not in
        ``avoid`` if possible, waiting at most ``time_left`` seconds (None:
        no deadline) for one to be known. Raises ``BlobgateError`` when
        there is none (UNAVAILABLE) or the transport is closed (CANCELLED);
        an error marked ``unsent`` (nothing reached a server) is retried by
        every call, idempotent or not."""
        ...

    def release(self, endpoint: Endpoint, failure: BlobgateError | None = None) -> None:
        """The attempt on ``endpoint`` ended, with ``failure`` if it failed."""
        ...

    async def close(self) -> None:
        """Close every channel, cancelling the calls still running."""
        ...


# Call endings that say nothing of the instance: the caller's deadline or cancellation.
_NEITHER = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def closed_error() -> BlobgateError:
    """What a call on a closed client raises."""
    return BlobgateError(grpc.StatusCode.CANCELLED, "client is closed")


class PoolTransport:
    """A transport over a ``Pool`` of channels; subclasses decide which
    addresses the pool holds. ``balancing`` sets how it connects and ejects
    (None: the defaults of ``ClientOptions``)."""

    def __init__(
        self,
        target: str,
        addresses: Sequence[str],
        options: Sequence[ChannelOption],
        credentials: grpc.ChannelCredentials | None,
        balancing: Balancing | None = None,
    ) -> None:
        self._target = target
        self.pool = Pool(addresses, options, credentials=credentials, balancing=balancing)

    @property
    def target(self) -> str:
        """What the transport reaches, for messages."""
        return self._target

    @property
    def addresses(self) -> tuple[str, ...]:
        """The addresses new calls go to."""
        return self.pool.addresses

    def call_counts(self) -> dict[str, int]:
        """Calls started per address since the transport was created (an
        attempt that could not connect started none)."""
        return dict(self.pool.calls)

    def ejections(self) -> dict[str, str]:
        """The addresses ejected now, and why."""
        return self.pool.outliers.ejections()

    def start(self) -> None:
        """Nothing runs in the background of a fixed set of addresses."""

    async def acquire(self, avoid: Collection[str], time_left: float | None) -> Endpoint:
        """The pool's next connected channel (see ``Transport.acquire``); a
        failure to connect is ``unsent``."""
        if self.pool.closed:
            raise closed_error()
        endpoint = await self.pool.connect(avoid, time_left)
        if endpoint is None:
            raise self._none_available()
        return endpoint

    def _none_available(self) -> BlobgateError:
        return closed_error()  # a fixed address is always in the pool until it closes

    def release(self, endpoint: Endpoint, failure: BlobgateError | None = None) -> None:
        """Count the attempt on ``endpoint`` as ended, and what it says of
        the instance: it served (it answered, even with an error status), or
        it failed as an instance that cannot serve fails (``retryable``).
        The client's own deadline or cancellation says neither."""
        assert isinstance(endpoint, PooledChannel)
        self.pool.release(endpoint)
        outliers = self.pool.outliers
        if failure is None:
            outliers.call_served(endpoint.address)
        elif failure.retryable:
            outliers.call_failed(endpoint.address, str(failure))
        elif failure.code not in _NEITHER:
            outliers.call_served(endpoint.address)

    async def close(self) -> None:
        """Close every channel, cancelling the calls still running."""
        await self.pool.close()


class StaticTransport(PoolTransport):
    """One server at a fixed ``host:port``, over one channel."""

    def __init__(
        self,
        address: str,
        options: Sequence[ChannelOption],
        credentials: grpc.ChannelCredentials | None = None,
        balancing: Balancing | None = None,
    ) -> None:
        super().__init__(address, [address], options, credentials, balancing)
