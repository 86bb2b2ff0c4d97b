"""Logs: JSON lines that parse and carry their fields, one access log line
per call with its request id, method, object, byte counts and status, the
same request id in the response's metadata, in the access line and in the
client's error, and no upload id in any log line."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from blobgate.client import BlobgateError, Client
from blobgate.server.app import Gateway
from blobgate.server.logs import JsonFormatter, TextFormatter
from blobgate.server.storage.protocols import ObjectRef
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.support.helpers import lines_of, payload, resume_requests
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.store("memory")

Code = grpc.StatusCode
ACCESS = "blobgate.access"
FIELDS = {
    "request_id",
    "peer",
    "principal",
    "method",
    "bucket",
    "key",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "status",
}


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[Client]:
    async with Client(f"127.0.0.1:{gateway.port}") as c:
        yield c


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The access log lines so far, as their JSON objects."""
    return lines_of(caplog, ACCESS)


async def only_line(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """The one access line of the call just made. The server writes it once
    the call is over, which may be just after the caller has its answer."""
    for _ in range(100):
        if access_lines(caplog):
            break
        await asyncio.sleep(0.02)
    lines = access_lines(caplog)
    assert len(lines) == 1, lines
    return lines[0]


def test_json_lines_parse_and_carry_the_fields() -> None:
    logger = logging.getLogger("blobgate.test")
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        record = logger.makeRecord(
            logger.name,
            logging.ERROR,
            __file__,
            1,
            "Stat failed (request id %s)",
            ("abc",),
            (type(exc), exc, exc.__traceback__),
            extra={"request_id": "abc", "bytes_in": 3, "key": 'a "b"\nc'},
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "blobgate.test"
    assert entry["message"] == "Stat failed (request id abc)"
    assert entry["time"].endswith("+00:00") and "T" in entry["time"]
    assert (entry["request_id"], entry["bytes_in"], entry["key"]) == ("abc", 3, 'a "b"\nc')
    assert "RuntimeError: boom" in entry["exception"]
    # The text format: the fields as name=value after the message, a string
    # quoted so that a key with a newline or a quote cannot forge a line.
    text = TextFormatter().format(record)
    first, _, traceback = text.partition("\n")
    assert first.endswith('request_id="abc" bytes_in=3 key="a \\"b\\"\\nc"')
    assert "ERROR blobgate.test: Stat failed (request id abc)" in first
    assert traceback.startswith("Traceback")


async def test_one_line_per_call_upload_download_missing_stat(
    gateway: Gateway, client: Client, logged: pytest.LogCaptureFixture, bucket: str
) -> None:
    blob = payload(300_000)
    await client.upload("logs/a.bin", blob)
    line = await only_line(logged)
    assert line.keys() >= FIELDS
    assert line["logger"] == ACCESS and line["level"] == "INFO"
    assert (line["method"], line["bucket"], line["key"]) == ("Upload", bucket, "logs/a.bin")
    assert (line["bytes_in"], line["bytes_out"], line["status"]) == (len(blob), 0, "OK")
    assert line["peer"].startswith("ipv4:127.0.0.1:") and line["principal"] == ""
    assert line["duration_ms"] > 0 and len(line["request_id"]) == 16

    logged.clear()
    assert b"".join([c async for c in client.download("logs/a.bin", offset=1000)]) == blob[1000:]
    line = await only_line(logged)
    assert (line["method"], line["bucket"], line["key"]) == ("Download", bucket, "logs/a.bin")
    assert (line["bytes_in"], line["bytes_out"], line["status"]) == (0, len(blob) - 1000, "OK")

    logged.clear()
    with pytest.raises(BlobgateError) as caught:
        await client.stat("logs/missing")
    line = await only_line(logged)
    assert (line["method"], line["bucket"], line["key"]) == ("Stat", bucket, "logs/missing")
    assert (line["bytes_in"], line["bytes_out"], line["status"]) == (0, 0, "NOT_FOUND")
    # The client quotes the call's request id: the one in the access line.
    assert caught.value.code == Code.NOT_FOUND
    assert caught.value.request_id == line["request_id"]
    assert f"(request id {line['request_id']})" in str(caught.value)
    assert line["request_id"] in caught.value.message


async def test_the_request_id_is_in_the_trailing_metadata(
    stub: storage_pb2_grpc.StorageServiceStub, logged: pytest.LogCaptureFixture
) -> None:
    call = stub.List(storage_pb2.ListRequest(prefix="p/"))
    await call
    trailing = dict(await call.trailing_metadata())
    line = await only_line(logged)
    assert trailing["x-request-id"] == line["request_id"]
    assert (line["method"], line["key"], line["status"]) == ("List", "", "OK")

    # The id is always the server's own; a caller's proposal is logged beside
    # it, cut to a short token of safe characters.
    proposals = [
        ("req-42.A_b", "req-42.A_b"),
        ("bad id!", "badid"),
        ("a;b <x>", "abx"),
        ("x" * 65, "x" * 64),
    ]
    for proposed, logged_as in proposals:
        logged.clear()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Stat(
                storage_pb2.StatRequest(key="nope"), metadata=[("x-request-id", proposed)]
            )
        returned = dict(caught.value.trailing_metadata())["x-request-id"]
        line = await only_line(logged)
        assert line["request_id"] == returned != proposed and len(returned) == 16
        assert line["caller_request_id"] == logged_as


async def test_internal_error_quotes_the_calls_request_id(
    gateway: Gateway,
    client: Client,
    logged: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken_head(ref: ObjectRef) -> Any:
        raise RuntimeError("a bug in the store")

    monkeypatch.setattr(gateway.store, "head", broken_head)
    with pytest.raises(BlobgateError) as caught:
        await client.stat("any")
    line = await only_line(logged)
    request_id = line["request_id"]
    assert line["status"] == "INTERNAL" and caught.value.code == Code.INTERNAL
    assert caught.value.request_id == request_id
    assert caught.value.message.count(request_id) == 1  # not quoted twice
    [error] = [r for r in logged.records if r.levelno == logging.ERROR]
    assert error.__dict__["request_id"] == request_id
    assert f"request id {request_id}" in error.getMessage()


async def test_an_upload_continuing_a_session_never_logs_its_upload_id(
    stub: storage_pb2_grpc.StorageServiceStub, logged: pytest.LogCaptureFixture, bucket: str
) -> None:
    blob = payload(1000, seed=5)
    started = await stub.StartResumableUpload(
        storage_pb2.StartResumableUploadRequest(
            spec=storage_pb2.UploadSpec(key="sessions/s.bin", size=len(blob))
        )
    )
    upload_id = started.upload_id
    assert upload_id
    await stub.Upload(resume_requests(upload_id, 0, blob))
    status = stub.QueryUploadStatus(storage_pb2.QueryUploadStatusRequest(upload_id=upload_id))
    with pytest.raises(grpc.aio.AioRpcError):
        await status  # the session ended with the upload
    for _ in range(100):  # the last line is written once the call is over
        if len(access_lines(logged)) == 3:
            break
        await asyncio.sleep(0.02)
    lines = access_lines(logged)
    assert [(x["method"], x["status"]) for x in lines] == [
        ("StartResumableUpload", "OK"),
        ("Upload", "OK"),
        ("QueryUploadStatus", "NOT_FOUND"),
    ]
    upload = lines[1]
    assert (upload["bucket"], upload["key"], upload["bytes_in"]) == (
        bucket,
        "sessions/s.bin",
        len(blob),
    )
    assert lines[2]["bucket"] == "" and lines[2]["key"] == ""
    for record in logged.records:
        for formatter in (JsonFormatter(), TextFormatter()):
            assert upload_id not in formatter.format(record), record.name


async def test_the_server_writes_json_lines(
    moto_endpoint: str, bucket: str, processes: list[ServerProcess]
) -> None:
    server = await ServerProcess.gateway(
        moto_endpoint, bucket, "--log-format", "json", "--drain-delay", "0"
    )
    processes.append(server)
    port = await server.wait_listening()
    async with Client(f"127.0.0.1:{port}") as client:
        await client.upload("k", b"hello")
        with pytest.raises(BlobgateError) as caught:
            await client.stat("missing", bucket="not-allowed")
    server.proc.send_signal(signal.SIGTERM)
    assert await server.proc.wait() == 0
    await server.kill()  # collects the rest of the log
    lines = [json.loads(line) for line in server.text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    access = [line for line in lines if line["logger"] == ACCESS]
    assert [(x["method"], x["key"], x["status"]) for x in access] == [
        ("Upload", "k", "OK"),
        ("Stat", "missing", "PERMISSION_DENIED"),
    ]
    assert access[0]["bytes_in"] == 5 and access[0]["bucket"] == bucket
    assert access[1]["bucket"] == "not-allowed"
    assert access[1]["request_id"] == caught.value.request_id
    assert any("listening on" in line["message"] for line in lines)
