"""What every StorageService interceptor builds on: ``MethodInterceptor``,
the public base that applies an interceptor to the service's methods only,
and ``rewrap``, the one way to put a behaviour around a method's handler.

Each interceptor lives in the module of its concern (``access_log``,
``audit``, ``authentication``, ``metrics``, ``tracing``, ``status_codes``,
``unary_limits``); ``rpc.chain.server_interceptors`` puts them in order and
says why each stands where it does.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from blobgate.v1 import storage_pb2

SERVICE = storage_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name
_PREFIX = f"/{SERVICE}/"  # of the service's method paths
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_KEPT = 4  # wrapped handlers kept per method

# Every StorageService handler is a grpc.aio coroutine (Download writes its
# stream with context.write); grpc's stubs type RpcMethodHandler's behaviours
# as the synchronous API's, hence Any.
Behaviour = Callable[[Any, Any], Any]
"""A handler's coroutine function, (request or request iterator, context)."""


def rewrap(
    handler: Handler,
    around: Callable[[Behaviour], Behaviour],
    *,
    request_deserializer: Callable[[Any], Any] | None = None,
    response_serializer: Callable[[Any], Any] | None = None,
) -> Handler:
    """``handler`` with its behaviour replaced by ``around(behaviour)``; its
    (de)serializers are kept unless replacements are given."""
    serializers: dict[str, Any] = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": response_serializer or handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(around(handler.unary_unary), **serializers)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(around(handler.stream_unary), **serializers)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(around(handler.unary_stream), **serializers)
    raise TypeError("StorageService has no bidirectional methods")


class MethodInterceptor(grpc.aio.ServerInterceptor):
    """Base of the StorageService's interceptors: wraps the handlers of the
    service's methods that ``applies`` accepts, with ``wrap``; other services
    (health, reflection) pass untouched. A method's wrapped handler is built
    once and reused while the handler beneath it stays the same."""

    def __init__(self) -> None:
        # Per method, the handlers met beneath and their wrapped ones: the
        # method's own, and a refusal or two (rpc.authentication).
        self._wrapped: dict[str, list[tuple[Handler, Handler]]] = {}

    def applies(self, handler: Handler) -> bool:
        """Whether this interceptor wraps ``handler`` (by default, all)."""
        return True

    @abc.abstractmethod
    def wrap(self, handler: Handler, method: str) -> Handler:
        """The handler that does this interceptor's part around ``handler``
        of ``method`` (its short name, like ``Upload``)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or not method.startswith(_PREFIX) or not self.applies(handler):
            return handler
        cached = self._wrapped.get(method)
        if cached is None:
            cached = self._wrapped[method] = []
        for beneath, wrapped in cached:
            if beneath is handler:
                return wrapped
        wrapped = self.wrap(handler, method.rpartition("/")[2])
        cached.append((handler, wrapped))
        del cached[:-_KEPT]
        return wrapped


__all__ = ["SERVICE", "Behaviour", "Handler", "MethodInterceptor", "rewrap"]
