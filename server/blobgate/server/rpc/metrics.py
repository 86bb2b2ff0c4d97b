"""gRPC server metrics under the names and labels of go-grpc-prometheus and
py-grpc-prometheus, so that their Grafana dashboards work unchanged:
``grpc_server_started_total``, ``grpc_server_handled_total`` (with
``grpc_code``, the status name), ``grpc_server_handling_seconds``,
``grpc_server_msg_received_total`` and ``grpc_server_msg_sent_total``, each
labelled ``grpc_type``, ``grpc_service`` and ``grpc_method``.

``MetricsInterceptor`` counts the status every call ends with: OK, a status
an interceptor or the error interceptor aborted with (RESOURCE_EXHAUSTED
from the limits included), or CANCELLED / DEADLINE_EXCEEDED when the call's
task was cancelled; its place in the chain, and why, is given in
``rpc.chain``. Messages are counted where gRPC (de)serialises them, one call
each per message. Calls that gRPC refuses itself (past ``max_calls``) never
reach an interceptor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from blobgate.server.rpc.interceptors import SERVICE, Behaviour, Handler, MethodInterceptor, rewrap
from blobgate.server.rpc.status_codes import Context
from blobgate.v1 import storage_pb2

_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# Unary calls take milliseconds, transfers up to minutes.
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# grpc.aio's context.code() gives the status as its integer value.
_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def _method_type(client_streaming: bool, server_streaming: bool) -> str:
    if client_streaming:
        return "bidi_stream" if server_streaming else "client_stream"
    return "server_stream" if server_streaming else "unary"


class RpcMetrics:
    """The five families, in ``registry``; every StorageService method's
    series start at zero (handled_total for OK), as go-grpc-prometheus's
    InitializeMetrics does, so rates and dashboards never see gaps."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            _LABELS,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*_LABELS, "grpc_code"),
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            _LABELS,
            buckets=_SECONDS,
            registry=registry,
        )
        self.received = Counter(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            _LABELS,
            registry=registry,
        )
        self.sent = Counter(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            _LABELS,
            registry=registry,
        )
        service = storage_pb2.DESCRIPTOR.services_by_name["StorageService"]
        for method in service.methods:
            labels = (
                _method_type(method.client_streaming, method.server_streaming),
                SERVICE,
                method.name,
            )
            for family in (self.started, self.seconds, self.received, self.sent):
                family.labels(*labels)
            self.handled.labels(*labels, grpc.StatusCode.OK.name)


def _counting(parse: Callable[[Any], Any] | None, counter: Counter) -> Callable[[Any], Any]:
    def counted(message: Any) -> Any:
        counter.inc()
        return message if parse is None else parse(message)

    return counted


def _final_code(context: Context) -> grpc.StatusCode:
    value = context.code()
    if value is None:
        return grpc.StatusCode.OK
    if isinstance(value, grpc.StatusCode):
        return value
    return _BY_VALUE.get(int(value), grpc.StatusCode.UNKNOWN)


def _cancelled_code(context: Context) -> grpc.StatusCode:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


class MetricsInterceptor(MethodInterceptor):
    """Counts and times every StorageService call (health and reflection
    are not counted)."""

    def __init__(self, metrics: RpcMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def wrap(self, handler: Handler, method: str) -> Handler:
        m = self._metrics
        # From the method, not the handler: a call refused before its request
        # was read runs a request-streaming handler (rpc.admission).
        described = storage_pb2.DESCRIPTOR.services_by_name["StorageService"].methods_by_name
        kind = _method_type(described[method].client_streaming, described[method].server_streaming)
        labels = (kind, SERVICE, method)
        started = m.started.labels(*labels)
        seconds = m.seconds.labels(*labels)
        handled: dict[grpc.StatusCode, Counter] = {}

        def finished(code: grpc.StatusCode, elapsed: float) -> None:
            seconds.observe(elapsed)
            counter = handled.get(code)
            if counter is None:
                counter = handled[code] = m.handled.labels(*labels, code.name)
            counter.inc()

        def measured(behaviour: Behaviour) -> Behaviour:
            async def call(request: Any, context: Context) -> Any:
                started.inc()
                begin = time.perf_counter()
                code = grpc.StatusCode.UNKNOWN
                try:
                    result = await behaviour(request, context)
                    code = _final_code(context)
                    return result
                except grpc.aio.AbortError:
                    code = _final_code(context)
                    raise
                except asyncio.CancelledError:
                    code = _cancelled_code(context)
                    raise
                finally:
                    finished(code, time.perf_counter() - begin)

            return call

        return rewrap(
            handler,
            measured,
            request_deserializer=_counting(
                handler.request_deserializer, m.received.labels(*labels)
            ),
            response_serializer=_counting(handler.response_serializer, m.sent.labels(*labels)),
        )
