"""Prometheus metrics: a real gateway on moto is scraped over HTTP before and
after known calls, and the exact deltas are checked with prometheus_client's
own text parser; the ops files name only metrics a scrape really has."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import aioboto3
import grpc
import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from blobgate.server.consul_registration import ConsulRegistration
from blobgate.server.core.settings import Settings
from blobgate.server.storage.s3.instrumentation import S3Instrumentation
from blobgate.v1 import storage_pb2
from tests.support import ROOT
from tests.support.gateways import gateway_settings
from tests.support.helpers import (
    HeldUpload,
    MiB,
    download,
    expect_status,
    http,
    payload,
    running_gateway,
    upload,
)

OPS = ROOT / "ops"
SERVICE = "blobgate.v1.StorageService"
Code = grpc.StatusCode

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int | None) -> tuple[Samples, set[str]]:
    """Every sample of /metrics by (name, labels), and every family name."""
    assert port is not None, "metrics are off"
    status, body = await asyncio.to_thread(http, "GET", f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    samples: Samples = {}
    families: set[str] = set()
    for family in text_string_to_metric_families(body.decode()):
        families.add(family.name)
        if family.type == "counter":  # exposed (HELP, TYPE) before its first sample
            families.add(f"{family.name}_total")
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, families


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def rpc(method: str, kind: str = "unary", **more: str) -> dict[str, str]:
    return {"grpc_type": kind, "grpc_service": SERVICE, "grpc_method": method, **more}


async def test_calls_bytes_and_s3_requests_are_counted(moto_endpoint: str, bucket: str) -> None:
    settings = gateway_settings(moto_endpoint, bucket, metrics_listen="127.0.0.1:0")
    async with running_gateway(settings) as (gw, stub, _):
        blobs = {"a": payload(1000, 1), "b": payload(2000, 2), "c": payload(6 * MiB, 3)}
        before, _ = await scrape(gw.metrics_port)
        for key, blob in blobs.items():
            await upload(gw, key, blob)
        await expect_status(
            Code.NOT_FOUND, stub.Stat(storage_pb2.StatRequest(key="missing"), timeout=10)
        )
        got = await download(stub, "c")
        after, _ = await scrape(gw.metrics_port)

    up = rpc("Upload", "client_stream")
    assert delta(before, after, "grpc_server_started_total", **up) == 3
    assert delta(before, after, "grpc_server_handled_total", **up, grpc_code="OK") == 3
    assert delta(before, after, "grpc_server_handling_seconds_count", **up) == 3
    # Each upload: its spec, then one data message per MiB begun.
    assert delta(before, after, "grpc_server_msg_received_total", **up) == 2 + 2 + 7
    assert delta(before, after, "grpc_server_msg_sent_total", **up) == 3
    stat = rpc("Stat")
    assert delta(before, after, "grpc_server_handled_total", **stat, grpc_code="NOT_FOUND") == 1
    assert delta(before, after, "grpc_server_handled_total", **stat, grpc_code="OK") == 0
    down = rpc("Download", "server_stream")
    assert delta(before, after, "grpc_server_handled_total", **down, grpc_code="OK") == 1
    assert delta(before, after, "grpc_server_msg_sent_total", **down) == 1 + len(got.message_sizes)

    total = sum(len(blob) for blob in blobs.values())
    assert delta(before, after, "blobgate_received_bytes_total", bucket=bucket) == total
    assert delta(before, after, "blobgate_sent_bytes_total", bucket=bucket) == 6 * MiB
    size = "blobgate_committed_object_size_bytes"
    assert delta(before, after, f"{size}_count", bucket=bucket) == 3
    assert delta(before, after, f"{size}_sum", bucket=bucket) == total
    assert delta(before, after, f"{size}_bucket", bucket=bucket, le="1024.0") == 1

    s3 = "blobgate_s3_request_duration_seconds_count"
    # The two small objects go in one PutObject each, the 6 MiB one in two
    # parts, and its sha256 (not declared) in one more PutObject: its record.
    assert delta(before, after, s3, operation="PutObject", outcome="ok") == 3
    assert delta(before, after, s3, operation="UploadPart", outcome="ok") == 2
    assert delta(before, after, s3, operation="CompleteMultipartUpload", outcome="ok") == 1
    assert delta(before, after, s3, operation="HeadObject", outcome="client_error") == 1
    assert value(after, "blobgate_health_serving") == 1
    assert value(after, "blobgate_consul_registered") == 0  # Consul is off
    assert value(after, "blobgate_memory_budget_bytes", kind="limit") == settings.memory_budget
    assert value(after, "blobgate_memory_budget_bytes", kind="used") == 0
    assert value(after, "blobgate_streams_in_flight") == 0


async def test_refused_calls_and_gauges(moto_endpoint: str, bucket: str) -> None:
    """A call the stream cap refuses ends RESOURCE_EXHAUSTED (set by the error
    interceptor's abort, inside the metrics one); the gauges follow the held
    stream and its budget."""
    settings = gateway_settings(moto_endpoint, bucket, metrics_listen="127.0.0.1:0", max_streams=1)
    async with running_gateway(settings) as (gw, stub, _):
        before, _ = await scrape(gw.metrics_port)
        held = HeldUpload("held", payload(3 * MiB, 4), hold_at=2 * MiB)
        call = stub.Upload(held.requests(), timeout=60)
        await held.holding()
        during, _ = await scrape(gw.metrics_port)
        await expect_status(Code.RESOURCE_EXHAUSTED, upload(gw, "refused", b"x"))
        await held.completes(call)
        after, _ = await scrape(gw.metrics_port)

    up = rpc("Upload", "client_stream")
    assert value(during, "blobgate_streams_in_flight") == 1
    assert value(during, "blobgate_memory_budget_bytes", kind="used") > 0
    assert delta(before, after, "grpc_server_started_total", **up) == 2
    assert delta(before, after, "grpc_server_handled_total", **up, grpc_code="OK") == 1
    exhausted = delta(
        before, after, "grpc_server_handled_total", **up, grpc_code="RESOURCE_EXHAUSTED"
    )
    assert exhausted == 1
    assert value(after, "blobgate_streams_in_flight") == 0


async def test_resumable_sessions_are_counted(moto_endpoint: str, bucket: str) -> None:
    settings = gateway_settings(moto_endpoint, bucket, metrics_listen="127.0.0.1:0")
    async with running_gateway(settings) as (gw, stub, _):
        before, _ = await scrape(gw.metrics_port)
        spec = storage_pb2.UploadSpec(key="s")
        kept = await stub.StartResumableUpload(
            storage_pb2.StartResumableUploadRequest(spec=spec), timeout=10
        )
        dropped = await stub.StartResumableUpload(
            storage_pb2.StartResumableUploadRequest(spec=spec), timeout=10
        )
        await stub.CancelResumableUpload(
            storage_pb2.CancelResumableUploadRequest(upload_id=dropped.upload_id), timeout=10
        )
        blob = payload(1500, 5)
        requests = [
            storage_pb2.UploadRequest(
                resume=storage_pb2.UploadResume(upload_id=kept.upload_id, write_offset=0)
            ),
            storage_pb2.UploadRequest(data=blob),
        ]
        await stub.Upload(iter(requests), timeout=30)
        assert await gw.sessions.sweep([bucket]) == 0
        after, _ = await scrape(gw.metrics_port)

    assert delta(before, after, "blobgate_sessions_started_total") == 2
    assert delta(before, after, "blobgate_sessions_ended_total", reason="completed") == 1
    assert delta(before, after, "blobgate_sessions_ended_total", reason="cancelled") == 1
    assert delta(before, after, "blobgate_sessions_ended_total", reason="expired") == 0
    assert delta(before, after, "blobgate_janitor_sweeps_total", outcome="ok") == 1
    assert delta(before, after, "blobgate_received_bytes_total", bucket=bucket) == len(blob)


async def test_expired_sessions_count_when_the_janitor_sweeps(
    moto_endpoint: str, bucket: str
) -> None:
    settings = gateway_settings(
        moto_endpoint, bucket, metrics_listen="127.0.0.1:0", session_expiry=0.5
    )
    async with running_gateway(settings) as (gw, stub, _):
        before, _ = await scrape(gw.metrics_port)
        spec = storage_pb2.UploadSpec(key="stale")
        await stub.StartResumableUpload(
            storage_pb2.StartResumableUploadRequest(spec=spec), timeout=10
        )
        await asyncio.sleep(1.5)  # S3 dates records to the second
        assert await gw.sessions.sweep([bucket]) == 1
        after, _ = await scrape(gw.metrics_port)

    assert delta(before, after, "blobgate_sessions_ended_total", reason="expired") == 1
    assert delta(before, after, "blobgate_janitor_aborted_uploads_total") == 1
    assert delta(before, after, "blobgate_janitor_sweeps_total", outcome="ok") == 1


async def test_metrics_are_off_when_metrics_listen_is_empty(
    moto_endpoint: str, bucket: str
) -> None:
    assert Settings().metrics_listen == ""
    settings = gateway_settings(moto_endpoint, bucket, metrics_listen="")
    async with running_gateway(settings) as (gw, _, _):
        assert gw.metrics is None
        assert gw.metrics_port is None
        assert not type(gw.store).__name__.startswith("Metered")  # no metered decorator
        assert type(gw.store).__name__ == "AuthorizedStore"  # the outermost without metrics


async def test_the_start_up_log_says_where_metrics_are(
    moto_endpoint: str, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="blobgate.server.app")
    settings = gateway_settings(moto_endpoint, bucket, metrics_listen="127.0.0.1:0")
    async with running_gateway(settings) as (gw, _, _):
        url = f"http://127.0.0.1:{gw.metrics_port}/metrics"
        assert url in [r.getMessage().removeprefix("metrics on ") for r in caplog.records]
        samples, _ = await scrape(gw.metrics_port)  # and it is served there
        assert value(samples, "blobgate_health_serving") == 1


def test_bad_metrics_listen_is_refused() -> None:
    with pytest.raises(ValueError, match="host:port"):
        Settings(metrics_listen="9464")


async def test_s3_requests_are_spans_with_the_bucket_and_never_the_key(
    moto_endpoint: str, bucket: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = CollectorRegistry()
    instrumentation = S3Instrumentation(registry, tracer_provider=provider)
    session = aioboto3.Session()
    async with session.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1") as s3:
        instrumentation.attach(s3)
        instrumentation.attach(s3)  # attaching twice must not count twice
        await s3.create_bucket(Bucket=bucket)
        await s3.put_object(Bucket=bucket, Key="secret-key-name", Body=b"x")
        with pytest.raises(Exception, match="404"):
            await s3.head_object(Bucket=bucket, Key="missing")
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"S3.CreateBucket", "S3.PutObject", "S3.HeadObject"}
    put = spans["S3.PutObject"]
    assert put.attributes is not None
    assert put.attributes["aws.s3.bucket"] == bucket
    assert put.attributes["http.response.status_code"] == 200
    assert "secret-key-name" not in json.dumps(dict(put.attributes))
    assert not spans["S3.HeadObject"].status.is_ok
    count = registry.get_sample_value(
        "blobgate_s3_request_duration_seconds_count",
        {"operation": "PutObject", "outcome": "ok"},
    )
    assert count == 1


def test_consul_meta_advertises_the_metrics_port() -> None:
    settings = Settings(consul=True, listen="10.0.0.5:50051")
    assert ConsulRegistration(settings, 50051, 9464).payload()["meta"]["metrics_port"] == "9464"
    assert "metrics_port" not in ConsulRegistration(settings, 50051).payload()["meta"]


_NAME = re.compile(r"\b(?:grpc_server|blobgate|process|python)_[a-z0-9_]+\b")


def _names_in(text: str) -> set[str]:
    return set(_NAME.findall(text))


def _exprs(node: Any) -> list[str]:
    """Every PromQL expression in a Grafana dashboard or an alerts file."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k in ("expr", "query") and isinstance(v, str)]
        return found + [e for v in node.values() for e in _exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in _exprs(v)]
    return []


async def test_ops_files_use_only_metrics_a_scrape_has(moto_endpoint: str, bucket: str) -> None:
    dashboard = json.loads((OPS / "grafana-dashboard.json").read_text())
    alerts = yaml.safe_load((OPS / "prometheus-alerts.yml").read_text())
    exprs = _exprs(dashboard) + _exprs(alerts)
    assert len(_exprs(alerts)) >= 4 and len(_exprs(dashboard)) >= 8
    used = {name for expr in exprs for name in _names_in(expr)}
    settings = gateway_settings(moto_endpoint, bucket, metrics_listen="127.0.0.1:0")
    async with running_gateway(settings) as (gw, _, _):
        await upload(gw, "k", b"data")
        samples, families = await scrape(gw.metrics_port)
    scraped = {name for name, _ in samples} | families
    missing = {name for name in used if name not in scraped}
    assert not missing, f"the ops files use metrics no scrape has: {sorted(missing)}"
    assert {"grpc_server_handled_total", "blobgate_s3_retries_total"} <= used
