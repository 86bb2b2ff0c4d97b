"""A server span per StorageService call, named like
``blobgate.v1.StorageService/Upload``, in the trace the caller's
``traceparent`` metadata names (W3C trace context), else in a new one.

The span is current in the call's task while the handler runs, so the spans
the storage layer starts through the OpenTelemetry API (one per S3 request)
are its children. The span records the call's final status and gives the
access log line the trace id; the interceptor's place in the chain, and
why, is given in ``rpc.chain``. With no tracer provider set when the server
is built (``server.tracing``), the server has no such interceptor at all.
"""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, format_trace_id

from blobgate.server.rpc.access_log import call_record, final_status
from blobgate.server.rpc.interceptors import SERVICE, Behaviour, Handler, MethodInterceptor, rewrap
from blobgate.shared.wire import TRACE_CONTEXT

# The statuses that mark a server span as failed (OpenTelemetry's gRPC
# conventions): the server's fault, not the caller's.
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _traced(behaviour: Behaviour, tracer: Tracer, method: str) -> Behaviour:
    name = f"{SERVICE}/{method}"
    attributes = {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method}

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        parent = TRACE_CONTEXT.extract(dict(context.invocation_metadata() or ()))
        with tracer.start_as_current_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,  # a status is not an exception; see below
            set_status_on_exception=False,
        ) as span:
            record = call_record()
            if span.is_recording():
                span.set_attribute("blobgate.request_id", record.request_id)
                record.trace_id = format_trace_id(span.get_span_context().trace_id)
            error: BaseException | None = None
            try:
                return await behaviour(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                code = final_status(context, error)
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code in SERVER_ERRORS:
                    span.set_status(Status(StatusCode.ERROR, code.name))

    return call


class TracingInterceptor(MethodInterceptor):
    """Starts the server span of every StorageService call. The server has
    one only if a tracer provider was set when it was built
    (``server.tracing`` at start-up, or the embedding application's)."""

    def wrap(self, handler: Handler, method: str) -> Handler:
        tracer = trace.get_tracer("blobgate.server")
        return rewrap(handler, lambda behaviour: _traced(behaviour, tracer, method))
