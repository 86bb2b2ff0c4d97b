"""Traces: one trace from the Python client's span through the gateway's
server span to its S3 requests; any gRPC caller that sends ``traceparent``
joins the trace; the OTEL_* variables decide whether the server exports.

The API lets a process set its tracer provider once; each test here swaps
it for one that keeps spans in memory, and puts the API's default back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

from blobgate.client import BlobgateError, Client
from blobgate.server.app import Gateway, start_gateway
from blobgate.server.core import tracing
from blobgate.server.storage.factory import memory_config
from blobgate.server.storage.memory.backend import MemoryBackend
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import eventually

SERVICE = "blobgate.v1.StorageService"


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[TracerProvider]:
    """The process's tracer provider for this test: spans kept in memory."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    yield provider
    provider.shutdown()


def finished(provider: TracerProvider) -> list[ReadableSpan]:
    processor = provider._active_span_processor._span_processors[0]
    assert isinstance(processor, SimpleSpanProcessor)
    exporter = processor.span_exporter
    assert isinstance(exporter, InMemorySpanExporter)
    return list(exporter.get_finished_spans())


@pytest.fixture
async def traced_gateway(
    provider: TracerProvider, moto_endpoint: str, bucket: str
) -> AsyncIterator[Gateway]:
    """A gateway on moto, started once the tracer provider is set. Its S3
    requests make spans only while their instrumentation is attached, which
    storage.factory does when metrics are on: hence a metrics endpoint."""
    gw = await start_gateway(gateway_settings(moto_endpoint, bucket, metrics_listen="127.0.0.1:0"))
    yield gw
    await stop_gateway(gw)


async def test_one_trace_from_the_client_through_the_server_to_s3(
    provider: TracerProvider, traced_gateway: Gateway, bucket: str
) -> None:
    tracer = provider.get_tracer("test")
    async with Client(f"127.0.0.1:{traced_gateway.port}") as client:
        with tracer.start_as_current_span("caller") as caller:
            await client.upload("traced.txt", b"hello")
            with pytest.raises(BlobgateError) as caught:
                await client.stat("missing.txt")
    trace_id = caller.get_span_context().trace_id
    spans = [span for span in finished(provider) if span.context.trace_id == trace_id]
    # Outside the trace: only start-up's and the health probe's S3 requests,
    # roots of their own.
    others = [span for span in finished(provider) if span.context.trace_id != trace_id]
    assert {span.name for span in others} <= {"S3.CreateBucket", "S3.HeadBucket"}
    assert all(span.parent is None for span in others)

    servers = {span.name: span for span in spans if span.kind == SpanKind.SERVER}
    assert set(servers) == {f"{SERVICE}/Upload", f"{SERVICE}/Stat"}
    for server in servers.values():
        assert server.parent is not None
        assert server.parent.span_id == caller.get_span_context().span_id
        assert server.parent.is_remote  # it came in the call's traceparent
        assert server.attributes is not None
        assert server.attributes["rpc.system"] == "grpc"
    stat = servers[f"{SERVICE}/Stat"]
    assert stat.attributes is not None
    assert stat.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert stat.attributes["blobgate.request_id"] == caught.value.request_id
    assert stat.status.status_code == StatusCode.UNSET  # the caller's fault, not the server's

    # The S3 requests are children of the server span of the call that made them.
    children = [span for span in spans if span.kind == SpanKind.CLIENT]
    by_parent = {
        name: [c.name for c in children if c.parent and c.parent.span_id == s.context.span_id]
        for name, s in servers.items()
    }
    assert "S3.PutObject" in by_parent[f"{SERVICE}/Upload"], by_parent
    assert by_parent[f"{SERVICE}/Stat"] == ["S3.HeadObject"], by_parent


async def test_any_grpc_caller_joins_the_trace_with_traceparent(
    provider: TracerProvider, moto_endpoint: str, bucket: str
) -> None:
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    settings = gateway_settings(moto_endpoint, bucket)
    gw = await start_gateway(settings, backend=MemoryBackend(memory_config(settings)))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            await stub.List(
                storage_pb2.ListRequest(),
                metadata=[("traceparent", f"00-{trace_id}-{parent_id}-01")],
            )
            await stub.List(storage_pb2.ListRequest())  # no traceparent: a trace of its own
    finally:
        await stop_gateway(gw)
    joined, alone = finished(provider)
    assert joined.name == alone.name == f"{SERVICE}/List"
    assert joined.context.trace_id == int(trace_id, 16)
    assert joined.parent is not None and joined.parent.span_id == int(parent_id, 16)
    assert alone.parent is None and alone.context.trace_id != int(trace_id, 16)


async def test_health_checks_and_the_s3_probe_make_no_spans(
    provider: TracerProvider, moto_endpoint: str, bucket: str
) -> None:
    """Health is asked every few seconds by Consul, kubelet or Docker, and
    the S3 probe runs as often: as root spans they would outnumber the real
    traces of an idle instance many times over."""
    settings = gateway_settings(
        moto_endpoint, bucket, metrics_listen="127.0.0.1:0", health_interval=0.05
    )
    gw = await start_gateway(settings)
    try:
        assert gw.metrics is not None
        registry = gw.metrics.registry

        def probes() -> float:
            labels = {"operation": "HeadBucket", "outcome": "ok"}
            count = registry.get_sample_value("blobgate_s3_request_duration_seconds_count", labels)
            return count or 0.0

        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", SERVICE):
                await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
            await eventually(lambda: _at_least(probes, 5), within=10)  # measured, not traced
            assert finished(provider) == []
            # Tracing is on all the same: a StorageService call is traced.
            await storage_pb2_grpc.StorageServiceStub(channel).List(
                storage_pb2.ListRequest(), timeout=5
            )
    finally:
        await stop_gateway(gw)
    assert [s.name for s in finished(provider) if s.kind == SpanKind.SERVER] == [f"{SERVICE}/List"]
    assert all(s.name != "S3.HeadBucket" for s in finished(provider))


async def _at_least(value: Callable[[], float], minimum: float) -> None:
    assert value() >= minimum


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_the_otel_variables_decide_whether_to_trace(environ: dict[str, str], wanted: bool) -> None:
    assert tracing.wanted(environ) is wanted


def test_an_unknown_exporter_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(tracing.TracingError, match="zipkin"):
        tracing.start_tracing()
    assert not tracing.tracing_on()


def test_without_variables_nothing_is_set_up(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.start_tracing() is False
    assert not tracing.tracing_on()


@pytest.fixture
def fresh_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API as in a new process: no provider set, and one may be set."""
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())


@pytest.mark.usefixtures("fresh_api")
@pytest.mark.parametrize(("service_name", "expected"), [(None, "blobgate"), ("gw-7", "gw-7")])
def test_start_tracing_installs_the_sdk_once_and_stop_flushes(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    service_name: str | None,
    expected: str,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    if service_name is not None:
        monkeypatch.setenv("OTEL_SERVICE_NAME", service_name)
    try:
        assert tracing.start_tracing() is True
        provider = trace.get_tracer_provider()
        assert tracing.start_tracing() is True and trace.get_tracer_provider() is provider
        assert isinstance(provider, TracerProvider) and tracing.tracing_on()
        assert provider.resource.attributes["service.name"] == expected
        with trace.get_tracer("test").start_as_current_span("one-span"):
            pass
    finally:
        tracing.stop_tracing()  # the batch processor exports what it holds
    assert '"name": "one-span"' in capsys.readouterr().out
