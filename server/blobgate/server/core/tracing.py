"""Traces: the OpenTelemetry SDK's TracerProvider, set up at start-up from
the standard ``OTEL_*`` variables, and shut down (its spans flushed) on stop.

Off unless asked for: ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``,
``console``; ``none`` exports nothing) or an OTLP endpoint is set
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``:
then ``otlp``); ``OTEL_SDK_DISABLED=true`` turns it off whatever else is set.
The SDK itself reads the rest: ``OTEL_SERVICE_NAME`` (default here:
``blobgate``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and its
argument, the OTLP exporter's endpoint, headers and protocol options, the
batch processor's sizes and delays.

The server's spans (``rpc.tracing``) and the S3 requests' are made through
the OpenTelemetry API, so they also go wherever an application embedding the
gateway set its own provider; without one, the API's no-op tracer costs
nothing worth measuring (docs/operations.md, Traces). What runs inside
``untraced()`` (the S3 health probe, every few seconds) makes no spans.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping

from opentelemetry import context, trace

# OpenTelemetry's own flag for "no spans here": its SDK's exporters set it,
# and its instrumentations (botocore's, aiohttp's, ...) honour it.
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "blobgate"
EXPORTERS = ("otlp", "console", "none")

_provider: TracerProvider | None = None


class TracingError(Exception):
    """The OTEL_* variables ask for something this server cannot do."""


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    return [name for name in names if name]


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the variables ask for traces."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = _exporter_names(env)
    if names:
        return any(name != "none" for name in names)
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter(out=sys.stdout)  # the current one, not the one at import
    if name == "otlp":
        # Imported only when used: it brings in a gRPC client of its own.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise TracingError(
        f"OTEL_TRACES_EXPORTER={name!r} is not supported: use {', '.join(EXPORTERS)}"
    )


def _resource() -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, service.name defaulting to blobgate."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def start_tracing() -> bool:
    """Install the SDK's TracerProvider as the process's, exporting where
    the variables say, if they ask for traces; True if this process now
    exports spans. Idempotent. Raises TracingError for an unknown exporter."""
    global _provider
    if _provider is not None:
        return True
    if not wanted():
        return False
    names = _exporter_names(os.environ) or ["otlp"]  # an endpoint alone means OTLP
    exporters = [_exporter(name) for name in names if name != "none"]
    provider = TracerProvider(resource=_resource())  # reads OTEL_TRACES_SAMPLER itself
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process: a second one is ignored
    if trace.get_tracer_provider() is not provider:
        provider.shutdown()
        log.warning("tracing: a tracer provider was already set; the OTEL_* variables are unused")
        return False
    _provider = provider
    log.info("tracing: exporting spans to %s", ", ".join(names))
    return True


def stop_tracing() -> None:
    """Export the spans still buffered and stop the exporters (on stop)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def tracing_on() -> bool:
    """Whether spans are recorded: a real tracer provider is set (ours, or
    one an embedding application or a test set), not the API's default."""
    return not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """No spans for what runs in this block (in this task): for the
    periodic work that would make a root span every few seconds."""
    token = context.attach(context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        yield
    finally:
        context.detach(token)


def suppressed() -> bool:
    """Whether the code running now is inside ``untraced()``."""
    return bool(context.get_value(_SUPPRESS_INSTRUMENTATION_KEY))
