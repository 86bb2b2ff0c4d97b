"""Admission: the first thing every call meets, before any message of it
is read. Calls that carry an identity and calls that carry none are counted
apart, so that callers nobody identified cannot take the room of those who
are.

gRPC's own limit (``maximum_concurrent_rpcs``) counts every call from its
headers, of every service, before any interceptor runs, and refuses the
rest with RESOURCE_EXHAUSTED: on its own, health Watch streams or
unauthenticated calls could fill it. The server therefore sets gRPC's limit
to ``max_calls + max_anonymous_calls``, and this interceptor admits at most
``max_calls`` identified calls and at most ``max_anonymous_calls`` others;
whatever happens among the anonymous ones, identified callers keep
``max_calls``. Anonymous are the calls of services that need no identity
(health, reflection) and, with bearer JWTs, StorageService calls without a
valid token (``AuthenticationInterceptor.identified`` says which). A slot is
held until the call's task ends, however it ends (even when the caller goes
away before its message arrived and no handler ever runs).

A call past its share is refused with RESOURCE_EXHAUSTED at once, without
reading its message; like gRPC's own refusals, it reaches no other
interceptor (no access log line, no per-call metrics: a flood of them
must not cost a log line each). Refusals are summed instead: one warning
on ``blobgate.admission`` at the first refusal and then at most one every
``REFUSAL_LOG_INTERVAL`` seconds, with the count per share since the last;
with a metrics registry, the calls open and refused per share are
``blobgate_admitted_calls`` and ``blobgate_refused_calls_total``.

An anonymous call of another service whose request is one message (health
Check and Watch) must deliver it within ``request_timeout`` seconds, or is
ended with DEADLINE_EXCEEDED: a call that announces a message and never
finishes it would otherwise hold its slot, and the memory gRPC buffers for
it, for as long as its connection lives. (StorageService calls without a
token are refused before their message is read: ``rpc.authentication``.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge

from blobgate.server.rpc.interceptors import SERVICE, Handler

log = logging.getLogger("blobgate.admission")

REFUSAL_LOG_INTERVAL = 60.0  # seconds between two summaries of refused calls

Identified = Callable[[grpc.HandlerCallDetails], bool]
"""Whether a call carries an identity, from its method and metadata."""


def storage_call(details: grpc.HandlerCallDetails) -> bool:
    """Whether the call is a StorageService call: with no identity source,
    or in mTLS (where the TLS handshake verified every caller's certificate),
    those are the identified calls; health and reflection never are."""
    method: str = details.method
    return method.startswith(f"/{SERVICE}/")


def refusing_handler(code: grpc.StatusCode, details: str) -> Handler:
    """A handler that ends its call with ``code`` at once. It is a
    request-streaming handler whatever the method, so gRPC starts it
    without receiving a message, and it never reads one: what the caller
    sends is dropped with the stream. The caller cannot tell: on the wire a
    unary and a streaming request look alike."""

    async def refuse(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, details)

    return grpc.stream_unary_rpc_method_handler(refuse)


def read_within(handler: Handler, timeout: float) -> Handler:
    """``handler`` (of a method whose request is one message) as a
    request-streaming handler that reads that message itself, within
    ``timeout`` seconds, and ends the call with DEADLINE_EXCEEDED if it
    does not arrive; gRPC's own handler would wait for it forever."""

    async def first_request(context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            async with asyncio.timeout(timeout):
                request = await context.read()
        except TimeoutError:
            request = None
        if request is None or request is grpc.aio.EOF:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the request did not arrive within {timeout:g}s of the call's start",
            )
        return request

    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary  # a grpc.aio coroutine function

        async def answer(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return await unary(await first_request(context), context)

        return grpc.stream_unary_rpc_method_handler(
            answer,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        streaming: Any = handler.unary_stream

        async def stream(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await streaming(await first_request(context), context)

        return grpc.stream_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


class RefusalLog:
    """Sums refused calls per share into one warning at most every
    ``interval`` seconds (the first refusal is logged at once): a flood
    shows in the log without costing a line per call."""

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL) -> None:
        self._interval = interval
        self._pending: dict[str, int] = {}
        self._last: float | None = None

    def refused(self, share: str) -> None:
        self._pending[share] = self._pending.get(share, 0) + 1
        now = time.monotonic()
        if self._last is not None and now - self._last < self._interval:
            return
        counts = ", ".join(f"{name}: {count}" for name, count in sorted(self._pending.items()))
        since = "" if self._last is None else f" in the last {now - self._last:.0f}s"
        log.warning(
            "refused calls%s because their share was full (%s): see "
            "blobgate_refused_calls_total, max_calls and max_anonymous_calls",
            since,
            counts,
        )
        self._pending.clear()
        self._last = now


class _Share:
    """At most ``limit`` calls at once, each released when its task ends;
    refusals go to ``refusals`` under ``name``."""

    def __init__(self, name: str, limit: int, refusals: RefusalLog) -> None:
        self.name = name
        self.limit = limit
        self.active = 0
        self.refused = 0
        self.counted: Counter | None = None  # the refusals' metric, when there is one
        self._refusals = refusals

    def take(self) -> bool:
        if self.active >= self.limit:
            self.refused += 1
            if self.counted is not None:
                self.counted.inc()
            self._refusals.refused(self.name)
            return False
        self.active += 1
        task = asyncio.current_task()
        if task is None:  # not in a call's task: nothing to release it by
            self.active -= 1
            return True
        task.add_done_callback(self._release)
        return True

    def open_calls(self) -> float:
        return self.active

    def _release(self, _task: object) -> None:
        self.active -= 1


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Admits at most ``max_identified`` calls that ``identified`` accepts
    and ``max_anonymous`` others at once; refuses the rest before their
    message is read. Outermost in the chain (``rpc.chain``)."""

    def __init__(
        self,
        max_identified: int,
        max_anonymous: int,
        identified: Identified,
        request_timeout: float,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._request_timeout = request_timeout
        self._timed: dict[str, tuple[Handler, Handler]] = {}
        refusals = RefusalLog()
        self.identified = _Share("identified", max_identified, refusals)
        self.anonymous = _Share("anonymous", max_anonymous, refusals)
        if registry is not None:
            self._measure(registry)
        self._is_identified = identified
        self._busy = refusing_handler(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "the server has as many calls open as it allows: retry later, with backoff",
        )
        self._anonymous_busy = refusing_handler(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "the server has as many calls without an identity open as it allows: retry "
            "later, with backoff",
        )

    def _measure(self, registry: CollectorRegistry) -> None:
        admitted = Gauge(
            "blobgate_admitted_calls",
            "Calls open, by share: identified (max_calls) or anonymous (max_anonymous_calls).",
            ["share"],
            registry=registry,
        )
        refused = Counter(
            "blobgate_refused_calls_total",
            "Calls refused because their share was full, before their request was read.",
            ["share"],
            registry=registry,
        )
        for share in (self.identified, self.anonymous):
            admitted.labels(share.name).set_function(share.open_calls)
            share.counted = refused.labels(share.name)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        if self._is_identified(handler_call_details):
            if not self.identified.take():
                return self._busy
            return await continuation(handler_call_details)
        if not self.anonymous.take():
            return self._anonymous_busy
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or storage_call(handler_call_details):
            return handler
        method: str = handler_call_details.method
        cached = self._timed.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._timed[method] = (handler, read_within(handler, self._request_timeout))
        return cached[1]


def grpc_call_limit(max_calls: int, max_anonymous_calls: int) -> int:
    """gRPC's own limit on open calls (``maximum_concurrent_rpcs``): room
    for both shares, so that only admission decides which call is refused."""
    return max_calls + max_anonymous_calls


__all__ = [
    "AdmissionInterceptor",
    "Identified",
    "RefusalLog",
    "grpc_call_limit",
    "read_within",
    "refusing_handler",
    "storage_call",
]
