"""S3 requests measured from botocore's own events, so every request counts
whoever makes it (the stores, the sessions, the janitor, the health probe):
``blobgate_s3_request_duration_seconds`` by operation and outcome, and
``blobgate_s3_retries_total`` by operation. Each request is also an
OpenTelemetry client span named like ``S3.PutObject`` with the bucket as an
attribute (never the key, an upload id or a URL); through the API only, so it
costs nothing until a tracer provider is configured, and none inside
``tracing.untraced()`` (the health probe's).

The events, per API call (aiobotocore's ``_make_api_call``):
``before-parameter-build`` (the call's parameters: the bucket), then
``before-call`` (the start), ``needs-retry`` after each attempt (its
``attempts`` number), then ``after-call`` with the HTTP response (any status)
or ``after-call-error`` when no response came (connection failures, timeouts,
after botocore's retries). A request whose task is cancelled gets neither:
it is not measured and its span is not ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Histogram

from blobgate.server.core.tracing import suppressed

# Where the call's state rides along: botocore's per-call request context.
_BUCKET = "blobgate_bucket"
_CALL = "blobgate_call"
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
OUTCOMES = ("ok", "client_error", "server_error", "transport_error")


@dataclass
class _Call:
    operation: str
    started: float
    span: Span
    attempts: int = 1


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    return "client_error" if status < 500 else "server_error"


class S3Instrumentation:
    """Attach to each aioboto3 client with ``attach``; the families live in
    ``registry``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.duration = Histogram(
            "blobgate_s3_request_duration_seconds",
            "S3 API calls, retries included, by operation and outcome (ok, client_error: 4xx, "
            "server_error: 5xx, transport_error: no response).",
            ["operation", "outcome"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.retries = Counter(
            "blobgate_s3_retries_total",
            "S3 request attempts after the first (botocore's standard retries), by operation.",
            ["operation"],
            registry=registry,
        )
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)

    def attach(self, client: Any) -> None:
        """Register the handlers on ``client``'s events (once per emitter)."""
        events = client.meta.events
        for event, handler in (
            ("before-parameter-build.s3", self._parameters),
            ("before-call.s3", self._before_call),
            ("needs-retry.s3", self._needs_retry),
            ("after-call.s3", self._after_call),
            ("after-call-error.s3", self._after_call_error),
        ):
            events.register(event, handler, unique_id=f"blobgate-metrics-{event}")

    # Handlers take **kwargs (botocore passes event_name besides the
    # documented arguments) and return None: a value would answer the event.

    def _parameters(self, params: Any, context: dict[str, Any], **_: Any) -> None:
        bucket = params.get("Bucket") if isinstance(params, dict) else None
        if isinstance(bucket, str):
            context[_BUCKET] = bucket

    def _before_call(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        operation = str(model.name)
        attributes = {"rpc.system": "aws-api", "rpc.service": "S3", "rpc.method": operation}
        bucket = context.get(_BUCKET)
        if bucket is not None:
            attributes["aws.s3.bucket"] = bucket
        span = (
            INVALID_SPAN  # inside tracing.untraced(): measured, not traced
            if suppressed()
            else self._tracer.start_span(
                f"S3.{operation}", kind=SpanKind.CLIENT, attributes=attributes
            )
        )
        context[_CALL] = _Call(operation, time.perf_counter(), span)

    def _needs_retry(self, attempts: int, request_dict: Any, **_: Any) -> None:
        context = request_dict.get("context") if isinstance(request_dict, dict) else None
        call = context.get(_CALL) if isinstance(context, dict) else None
        if isinstance(call, _Call):
            call.attempts = max(call.attempts, int(attempts))

    def _finish(self, context: dict[str, Any], outcome: str) -> _Call | None:
        call = context.pop(_CALL, None)
        if not isinstance(call, _Call):
            return None
        self.duration.labels(call.operation, outcome).observe(time.perf_counter() - call.started)
        if call.attempts > 1:
            self.retries.labels(call.operation).inc(call.attempts - 1)
            call.span.set_attribute("aws.retries", call.attempts - 1)
        return call

    def _after_call(self, http_response: Any, context: dict[str, Any], **_: Any) -> None:
        status = int(getattr(http_response, "status_code", 0) or 0)
        call = self._finish(context, _outcome(status))
        if call is None:
            return
        call.span.set_attribute("http.response.status_code", status)
        if status >= 400:  # OpenTelemetry's HTTP conventions for client spans
            call.span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
        call.span.end()

    def _after_call_error(
        self, exception: BaseException, context: dict[str, Any], **_: Any
    ) -> None:
        call = self._finish(context, "transport_error")
        if call is None:
            return
        call.span.set_attribute("error.type", type(exception).__name__)
        call.span.set_status(Status(StatusCode.ERROR, type(exception).__name__))
        call.span.end()
