"""Whether a channel can carry calls, told before any call is started on it.

A call is only ever started on a channel in READY: its connection is set up
(TCP, the TLS handshake, and the server's HTTP/2 SETTINGS, which gRPC waits
for before it reports READY). A channel that does not get there never had a
call on it, so nothing can have reached a server: that failure may be retried
on another instance whatever the method (gRPC's own retry design, gRFC A6,
calls this a transparent retry).

gRPC reports a failed connection only as the channel's state,
TRANSIENT_FAILURE; its reason (refused, which TLS check failed...) comes
with a call that fails at once on such a channel, without leaving the
client. ``connect`` makes one, to the health service: should the channel
have connected in between, a health check is what reaches the server.
"""

from __future__ import annotations

import asyncio

import grpc

from blobgate.client.errors import BlobgateError

READY = grpc.ChannelConnectivity.READY
IDLE = grpc.ChannelConnectivity.IDLE
TRANSIENT_FAILURE = grpc.ChannelConnectivity.TRANSIENT_FAILURE
SHUTDOWN = grpc.ChannelConnectivity.SHUTDOWN

# A call that only learns why the channel failed (see the module).
_WHY_METHOD = "/grpc.health.v1.Health/Check"
_WHY_TIMEOUT = 1.0


def is_ready(channel: grpc.aio.Channel) -> bool:
    """Whether ``channel`` has a connection set up now."""
    return channel.get_state(try_to_connect=False) == READY


async def connect(channel: grpc.aio.Channel, address: str, within: float) -> BlobgateError | None:
    """Connect ``channel`` (to ``address``), waiting at most ``within`` seconds: None
    once it is READY, else why not (an UNAVAILABLE ``BlobgateError``,
    ``unsent``; CANCELLED if the channel was closed)."""
    state = channel.get_state(try_to_connect=True)
    try:
        async with asyncio.timeout(within):
            while state != READY:
                if state == TRANSIENT_FAILURE:
                    return await _why_failed(channel)
                if state == SHUTDOWN:
                    return BlobgateError(grpc.StatusCode.CANCELLED, "client is closed")
                if state == IDLE:  # new, or its connection just closed
                    channel.get_state(try_to_connect=True)
                await channel.wait_for_state_change(state)
                state = channel.get_state(try_to_connect=False)
    except TimeoutError:
        return BlobgateError(
            grpc.StatusCode.UNAVAILABLE,
            f"{address}: no connection within {within:g}s "
            "(TCP, TLS and HTTP/2 set-up; the instance accepts connections but does not answer?)",
            unsent=True,
        )
    return None


async def _why_failed(channel: grpc.aio.Channel) -> BlobgateError | None:
    """The error of a call on a channel in TRANSIENT_FAILURE, which gRPC
    fails at once with the connection's error; None if the channel turned
    READY after all."""
    call = channel.unary_unary(_WHY_METHOD, request_serializer=_raw, response_deserializer=_raw)
    failure: grpc.aio.AioRpcError | None = None
    try:
        await call(b"", timeout=_WHY_TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        failure = exc
    if is_ready(channel):
        return None
    if failure is None or failure.code() != grpc.StatusCode.UNAVAILABLE:
        return BlobgateError(
            grpc.StatusCode.UNAVAILABLE, "the connection failed (gRPC gave no reason)", unsent=True
        )
    error = BlobgateError.from_rpc_error(failure)
    error.unsent = True
    error.__cause__ = failure
    return error


def _raw(message: bytes) -> bytes:
    return message
