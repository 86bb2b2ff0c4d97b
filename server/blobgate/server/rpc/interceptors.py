"""Server interceptors: cross-cutting behaviour that needs only the method
and the call, applied to every StorageService method in one place.

``ErrorInterceptor`` turns what a handler raises into its documented status
(``status_codes``); ``UnaryLimitInterceptor`` bounds concurrent unary calls.
The error interceptor comes first, so it also maps what later ones raise.
Access logs, authentication, RPC metrics and tracing join the chain as
further interceptors.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeAlias

import grpc

from blobgate.server.core.errors import ResourceExhausted, ServiceError
from blobgate.server.rpc.status_codes import Context, abort
from blobgate.v1 import storage_pb2

SERVICE = storage_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


# Every StorageService handler is a grpc.aio coroutine (Download writes its
# stream with context.write); grpc's stubs type RpcMethodHandler's behaviours
# as the synchronous API's, hence Any.


def _mapped(behaviour: Any, name: str) -> Callable[[Any, Context], Awaitable[Any]]:
    """``behaviour`` with what it raises turned into its status."""

    async def call(request: Any, context: Context) -> Any:
        try:
            if isinstance(request, ServiceError):  # undecodable: see codecs._parser
                raise request
            return await behaviour(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc, name)

    return call


def _with_error_mapping(handler: Handler, name: str) -> Handler:
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _mapped(handler.unary_unary, name), **serializers
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _mapped(handler.stream_unary, name), **serializers
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _mapped(handler.unary_stream, name), **serializers
        )
    raise TypeError(f"{name}: StorageService has no bidirectional methods")


class _MethodInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the handlers of StorageService methods it applies to; a
    method's wrapped handler is built once and reused while the handler
    beneath it stays the same. Other services (health, reflection) pass."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def applies(self, handler: Handler) -> bool:
        return True

    @abc.abstractmethod
    def wrap(self, handler: Handler, method: str) -> Handler:
        """The handler that does this interceptor's part around ``handler``."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or not method.startswith(f"/{SERVICE}/") or not self.applies(handler):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(handler, method.rpartition("/")[2])
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class ErrorInterceptor(_MethodInterceptor):
    """Maps service errors to statuses for every StorageService method."""

    def wrap(self, handler: Handler, method: str) -> Handler:
        return _with_error_mapping(handler, method)


class _CallLimit:
    """At most ``limit`` calls at once; the rest wait in arrival order for up
    to ``queue_timeout`` seconds, then are refused with RESOURCE_EXHAUSTED."""

    def __init__(self, what: str, limit: int, queue_timeout: float) -> None:
        self._what = what
        self._slots = asyncio.Semaphore(limit)
        self._queue_timeout = queue_timeout

    async def run(self, call: Coroutine[Any, Any, Any]) -> Any:
        try:
            async with asyncio.timeout(self._queue_timeout):
                await self._slots.acquire()
        except TimeoutError:
            call.close()  # never started
            raise ResourceExhausted(
                f"the server is busy with {self._what}: retry later, with backoff"
            ) from None
        try:
            return await call
        finally:
            self._slots.release()


class UnaryLimitInterceptor(_MethodInterceptor):
    """Bounds the StorageService's unary calls, List apart from the rest: a
    flood of large listings queues behind its own limit and cannot make
    another caller's Stat wait for it. Streams are bounded by the stream
    cap (storage.limits); health is never limited."""

    def __init__(self, max_lists: int, max_others: int, queue_timeout: float) -> None:
        super().__init__()
        self._lists = _CallLimit("listings", max_lists, queue_timeout)
        self._others = _CallLimit("calls", max_others, queue_timeout)

    def applies(self, handler: Handler) -> bool:
        return handler.unary_unary is not None

    def wrap(self, handler: Handler, method: str) -> Handler:
        limit = self._lists if method == "List" else self._others
        behaviour: Any = handler.unary_unary  # a coroutine function: see above

        async def limited(request: Any, context: Context) -> Any:
            return await limit.run(behaviour(request, context))

        return grpc.unary_unary_rpc_method_handler(
            limited,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
