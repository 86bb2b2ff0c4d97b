"""The interceptor chain (``rpc.chain.interceptor_chain``): its docstring
names the interceptors in the order the function builds them, and the
reasons it gives for the positions hold on a running gateway with every
optional interceptor on (metrics, bearer-token authentication, tracing):
a refused call is counted, logged and audited but opens no span; a call
that gets through has its principal and trace id in its access line and
its mapped status in its span, its line and its metrics; a request that
cannot be decoded is mapped for all of them too."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_trace_id
from prometheus_client import CollectorRegistry

from blobgate.server.app import Gateway, start_gateway
from blobgate.server.rpc import chain
from blobgate.server.rpc.authentication import authentication_for
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes.pki import CA
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import lines_of

pb = storage_pb2
Code = grpc.StatusCode
SERVICE = "blobgate.v1.StorageService"
SECRET = b"0123456789abcdef0123456789abcdef"


def documented_order() -> list[str]:
    """The class names the docstring's numbered list gives, in its order."""
    doc = chain.interceptor_chain.__doc__ or ""
    return re.findall(r"^\s*\d+\. ``(\w+)``:", doc, flags=re.MULTILINE)


def test_the_docstring_gives_the_order_the_chain_is_built_in() -> None:
    settings = gateway_settings("http://127.0.0.1:1", "a-bucket")
    full = chain.interceptor_chain(
        settings,
        registry=CollectorRegistry(),
        authentication=authentication_for(True, None),
        traced=True,
    )
    assert [type(x).__name__ for x in full] == documented_order()
    assert len(full) == 8
    # The optional ones drop out; the rest keep their order.
    bare = chain.interceptor_chain(settings, registry=None, authentication=None, traced=False)
    assert [type(x).__name__ for x in bare] == [
        name
        for name in documented_order()
        if name not in {"MetricsInterceptor", "AuthenticationInterceptor", "TracingInterceptor"}
    ]


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """A tracer provider that keeps spans in memory, set before the gateway
    starts (so the gateway has its tracing interceptor)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    yield exporter
    provider.shutdown()


@pytest.fixture
async def gateway_with_everything(
    spans: InMemorySpanExporter, tmp_path: Path, moto_endpoint: str, bucket: str
) -> AsyncIterator[tuple[Gateway, CA]]:
    ca = CA()
    cert_file, key_file = ca.server().write(tmp_path, "server")
    jwks = tmp_path / "jwks.json"
    key = base64.urlsafe_b64encode(SECRET).rstrip(b"=").decode()
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "k": key}]}))
    settings = gateway_settings(
        moto_endpoint,
        bucket,
        tls_cert_file=cert_file,
        tls_key_file=key_file,
        jwt_jwks_file=jwks,
        jwt_issuer="https://i",
        jwt_audience="blobgate",
        metrics_listen="127.0.0.1:0",
    )
    gw = await start_gateway(settings)
    yield gw, ca
    await stop_gateway(gw)


def server_spans(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {
        span.name.rpartition("/")[2]: span
        for span in exporter.get_finished_spans()
        if span.kind == SpanKind.SERVER
    }


def handled(gw: Gateway, method: str, code: Code) -> float | None:
    assert gw.metrics is not None
    labels = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": method}
    return gw.metrics.registry.get_sample_value(
        "grpc_server_handled_total", {**labels, "grpc_code": code.name}
    )


async def lines(caplog: pytest.LogCaptureFixture, logger: str, count: int) -> list[dict[str, Any]]:
    """The lines of ``logger`` once ``count`` are in (a line is written when
    its call is over, which may be just after the caller has its answer)."""
    for _ in range(250):
        if len(lines_of(caplog, logger)) >= count:
            break
        await asyncio.sleep(0.02)
    return lines_of(caplog, logger)


async def test_the_reasons_for_the_order_hold(
    gateway_with_everything: tuple[Gateway, CA],
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    gw, ca = gateway_with_everything
    now = int(time.time())
    token = jwt.encode(
        {"sub": "svc-a", "iss": "https://i", "aud": "blobgate", "iat": now, "exp": now + 300},
        SECRET,
        "HS256",
    )
    bearer = ("authorization", f"Bearer {token}")
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.pem)
    async with grpc.aio.secure_channel(f"127.0.0.1:{gw.port}", credentials) as channel:
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Delete(pb.DeleteRequest(key="k"), metadata=[("x-request-id", "refused")])
        assert refused.value.code() == Code.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.Stat(
                pb.StatRequest(key="missing"), metadata=[("x-request-id", "missing"), bearer]
            )
        assert missing.value.code() == Code.NOT_FOUND
        # A List request whose bytes do not decode: field 1 (bucket) says it is
        # a string but its length runs past the end.
        raw = channel.unary_unary(f"/{SERVICE}/List")
        with pytest.raises(grpc.aio.AioRpcError) as garbled:
            await raw(b"\x0a\x05ab", metadata=[("x-request-id", "garbled"), bearer])
        assert garbled.value.code() == Code.INVALID_ARGUMENT

    access = {x["caller_request_id"]: x for x in await lines(caplog, "blobgate.access", 3)}
    audit = await lines(caplog, "blobgate.audit", 1)
    traced = server_spans(spans)

    # Refused by authentication: still counted (metrics outermost), logged and
    # audited (both logs outside authentication), but no span (tracing inside it).
    assert access["refused"]["status"] == "UNAUTHENTICATED"
    assert [(x["caller_request_id"], x["outcome"]) for x in audit] == [
        ("refused", "UNAUTHENTICATED")
    ]
    assert handled(gw, "Delete", Code.UNAUTHENTICATED) == 1
    assert "Delete" not in traced

    # Let through: the principal and the trace id reach the access line (both
    # inside the access log); the status the error interceptor mapped reaches
    # the span, the line and the metrics (all outside it).
    stat = traced["Stat"]
    assert access["missing"]["principal"] == "svc-a"
    assert access["missing"]["status"] == "NOT_FOUND"
    assert access["missing"]["trace_id"] == format_trace_id(stat.context.trace_id)
    assert stat.attributes is not None
    assert stat.attributes["rpc.grpc.status_code"] == Code.NOT_FOUND.value[0]
    assert stat.attributes["blobgate.request_id"] == access["missing"]["request_id"]
    assert handled(gw, "Stat", Code.NOT_FOUND) == 1

    # Undecodable: the error interceptor maps it; everything outside sees that.
    assert access["garbled"]["status"] == "INVALID_ARGUMENT"
    assert access["garbled"]["principal"] == "svc-a"
    list_span = traced["List"]
    assert list_span.attributes is not None
    assert list_span.attributes["rpc.grpc.status_code"] == Code.INVALID_ARGUMENT.value[0]
    assert handled(gw, "List", Code.INVALID_ARGUMENT) == 1
