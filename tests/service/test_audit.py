"""The audit log: one ``blobgate.audit`` line at INFO per mutating call
(Upload, the resumable session's start and cancel, Delete, BatchDelete,
Copy, Presign) with its principal, action, object, bytes, outcome and
request id; none for calls that only read; refused calls audited with their
status; never an upload id, a presigned URL or its signature, or a token."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import jwt
import pytest

from blobgate.client import BlobgateError, Client
from blobgate.server.app import Gateway, start_gateway
from blobgate.server.logs import JsonFormatter, TextFormatter
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes.pki import CA
from tests.support.gateways import gateway_settings
from tests.support.helpers import lines_of, payload, resume_requests, upload_stream
from tests.support.server_process import ServerProcess

pb = storage_pb2
Code = grpc.StatusCode
AUDIT = "blobgate.audit"
ACCESS = "blobgate.access"
FIELDS = {
    "request_id",
    "principal",
    "peer",
    "action",
    "method",
    "bucket",
    "key",
    "bytes",
    "outcome",
}


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


async def audit_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[dict[str, Any]]:
    """The audit lines, once ``count`` are in (a line is written when its
    call is over, which may be just after the caller has its answer), and
    after a moment more, so that a line too many would show."""
    for _ in range(250):
        if len(lines_of(caplog, AUDIT)) >= count:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    return lines_of(caplog, AUDIT)


def rid(name: str) -> list[tuple[str, str]]:
    """Metadata proposing the request id ``name``, to find the call's line."""
    return [("x-request-id", name)]


def every_formatted_line(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every record of blobgate's loggers so far, at any level, in both
    formats (botocore's DEBUG lines hold signatures: the server never lets
    them through, see server.logs)."""
    return [
        formatter.format(record)
        for record in caplog.records
        if record.name.startswith("blobgate")
        for formatter in (JsonFormatter(), TextFormatter())
    ]


async def test_one_line_per_mutating_call_none_for_reads(
    gateway: Gateway,
    stub: storage_pb2_grpc.StorageServiceStub,
    logged: pytest.LogCaptureFixture,
    bucket: str,
) -> None:
    blob = payload(300_000, seed=1)
    upload = await stub.Upload(upload_stream("a/one.bin", blob), metadata=rid("up"), timeout=30)
    assert upload.object.size == len(blob)

    # Calls that only read: no audit line.
    await stub.Stat(pb.StatRequest(key="a/one.bin"), metadata=rid("stat"))
    await stub.List(pb.ListRequest(prefix="a/"), metadata=rid("list"))
    async for _ in stub.Download(pb.DownloadRequest(key="a/one.bin"), metadata=rid("down")):
        pass

    # A resumable session: started, queried (a read), resumed, and another cancelled.
    session_blob = payload(1000, seed=2)
    started = await stub.StartResumableUpload(
        pb.StartResumableUploadRequest(spec=pb.UploadSpec(key="a/session.bin")),
        metadata=rid("start"),
    )
    status = await stub.QueryUploadStatus(
        pb.QueryUploadStatusRequest(upload_id=started.upload_id), metadata=rid("query")
    )
    assert status.persisted_size == 0
    await stub.Upload(
        resume_requests(started.upload_id, 0, session_blob), metadata=rid("resume"), timeout=30
    )
    other = await stub.StartResumableUpload(
        pb.StartResumableUploadRequest(spec=pb.UploadSpec(key="a/dropped.bin")),
        metadata=rid("start2"),
    )
    await stub.CancelResumableUpload(
        pb.CancelResumableUploadRequest(upload_id=other.upload_id), metadata=rid("cancel")
    )

    await stub.Copy(
        pb.CopyRequest(source_key="a/one.bin", destination_key="b/copy.bin"), metadata=rid("copy")
    )
    presigned = await stub.Presign(
        pb.PresignRequest(key="a/one.bin", method=pb.HTTP_METHOD_GET), metadata=rid("presign")
    )
    await stub.Delete(pb.DeleteRequest(key="b/copy.bin"), metadata=rid("delete"))
    batch = await stub.BatchDelete(
        pb.BatchDeleteRequest(
            entries=[
                pb.BatchDeleteEntry(key="a/one.bin"),
                pb.BatchDeleteEntry(key="a/missing.bin"),
                pb.BatchDeleteEntry(key="a/session.bin", if_match="stale-etag"),
            ]
        ),
        metadata=rid("batch"),
    )
    assert [r.code for r in batch.results] == [0, 0, Code.FAILED_PRECONDITION.value[0]]

    lines = await audit_lines(logged, 9)
    assert [x["caller_request_id"] for x in lines] == [
        "up",
        "start",
        "resume",
        "start2",
        "cancel",
        "copy",
        "presign",
        "delete",
        "batch",
    ]
    for line in lines:
        assert line.keys() >= FIELDS
        assert (line["logger"], line["level"]) == (AUDIT, "INFO")
        assert line["outcome"] == "OK" and line["principal"] == ""  # plaintext: no identity
        assert line["peer"].startswith("ipv4:127.0.0.1:")
        assert line["bucket"] == bucket
        assert line["message"] == f"{line['action']} {line['method']} OK"
    by_id = {line["caller_request_id"]: line for line in lines}
    view = {name: (x["method"], x["action"], x["key"], x["bytes"]) for name, x in by_id.items()}
    assert view == {
        "up": ("Upload", "write", "a/one.bin", len(blob)),
        "start": ("StartResumableUpload", "write", "a/session.bin", 0),
        "resume": ("Upload", "write", "a/session.bin", len(session_blob)),
        "start2": ("StartResumableUpload", "write", "a/dropped.bin", 0),
        # A cancel names only the session's upload id: its bucket, no key.
        "cancel": ("CancelResumableUpload", "write", "", 0),
        "copy": ("Copy", "copy", "b/copy.bin", len(blob)),
        "presign": ("Presign", "presign", "a/one.bin", 0),
        "delete": ("Delete", "delete", "b/copy.bin", 0),
        "batch": ("BatchDelete", "delete", "", 0),
    }
    assert (by_id["copy"]["source_bucket"], by_id["copy"]["source_key"]) == (bucket, "a/one.bin")
    assert (by_id["batch"]["keys"], by_id["batch"]["failed"]) == (3, 1)
    assert by_id["presign"]["http_method"] == "GET"
    assert by_id["presign"]["expires_at"].endswith("+00:00")

    # The same request ids as the access lines, which every call has: the
    # server's own, one per call; the caller's proposals beside them.
    access = {line["request_id"]: line for line in lines_of(logged, ACCESS)}
    assert {x["request_id"] for x in lines} < set(access)
    assert len(access) == 13 and all(len(request_id) == 16 for request_id in access)
    proposed = {x["caller_request_id"] for x in access.values()}
    assert proposed == set(by_id) | {"stat", "list", "down", "query"}

    # Nothing secret in any line of blobgate's, in either format.
    signature = parse_qs(urlsplit(presigned.url).query)["X-Amz-Signature"][0]
    secrets = [started.upload_id, other.upload_id, presigned.url, signature]
    for text in every_formatted_line(logged):
        for secret in secrets:
            assert secret not in text


async def test_refused_calls_are_audited_with_their_status(
    gateway: Gateway,
    stub: storage_pb2_grpc.StorageServiceStub,
    logged: pytest.LogCaptureFixture,
    bucket: str,
) -> None:
    async def refused(code: Code, call: Any) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == code, caught.value

    malformed_id = base64.urlsafe_b64encode(b"some-bucket/not-a-session").decode()
    await refused(
        Code.PERMISSION_DENIED,
        stub.Delete(pb.DeleteRequest(bucket="not-allowed", key="k"), metadata=rid("other-bucket")),
    )
    await refused(
        Code.NOT_FOUND,
        stub.Copy(
            pb.CopyRequest(source_key="missing", destination_key="dest"), metadata=rid("no-source")
        ),
    )
    await refused(
        Code.INVALID_ARGUMENT,
        stub.CancelResumableUpload(
            pb.CancelResumableUploadRequest(upload_id=malformed_id), metadata=rid("bad-id")
        ),
    )
    await refused(
        Code.INVALID_ARGUMENT,
        stub.Presign(pb.PresignRequest(key="k"), metadata=rid("no-method")),
    )
    await refused(
        Code.INVALID_ARGUMENT,
        stub.Presign(pb.PresignRequest(key="k", method=99), metadata=rid("unknown-method")),
    )
    # An upload whose declared size is not what it sends: refused mid-stream,
    # its bytes received so far in the line.
    call = stub.Upload(metadata=rid("short"))
    await call.write(pb.UploadRequest(spec=pb.UploadSpec(key="short.bin", size=10)))
    await call.write(pb.UploadRequest(data=b"12345"))
    await call.done_writing()
    await refused(Code.OUT_OF_RANGE, call)

    lines = {line["caller_request_id"]: line for line in await audit_lines(logged, 6)}
    assert {
        name: (x["method"], x["bucket"], x["key"], x["bytes"], x["outcome"])
        for name, x in lines.items()
    } == {
        "other-bucket": ("Delete", "not-allowed", "k", 0, "PERMISSION_DENIED"),
        "no-source": ("Copy", bucket, "dest", 0, "NOT_FOUND"),
        "bad-id": ("CancelResumableUpload", "", "", 0, "INVALID_ARGUMENT"),
        "no-method": ("Presign", bucket, "k", 0, "INVALID_ARGUMENT"),
        "unknown-method": ("Presign", bucket, "k", 0, "INVALID_ARGUMENT"),
        "short": ("Upload", bucket, "short.bin", 5, "OUT_OF_RANGE"),
    }
    assert lines["no-source"]["source_key"] == "missing"
    assert lines["no-method"]["http_method"] == "UNSPECIFIED"
    assert lines["unknown-method"]["http_method"] == "99"
    assert "expires_at" not in lines["no-method"]
    for text in every_formatted_line(logged):
        assert malformed_id not in text


# With an identity source: the principal, and refusals before any handler.


@asynccontextmanager
async def tls_gateway(
    tmp_path: Path, moto_endpoint: str, bucket: str, ca: CA, **overrides: Any
) -> AsyncIterator[Gateway]:
    cert_file, key_file = ca.server().write(tmp_path, "server")
    settings = gateway_settings(
        moto_endpoint, bucket, tls_cert_file=cert_file, tls_key_file=key_file, **overrides
    )
    gateway = await start_gateway(settings)
    try:
        yield gateway
    finally:
        await gateway.stop(grace=0.5)


async def test_the_principal_of_a_client_certificate_is_audited(
    tmp_path: Path, moto_endpoint: str, bucket: str, logged: pytest.LogCaptureFixture
) -> None:
    ca = CA()
    spiffe = "spiffe://example.org/ns/reports/sa/uploader"
    client_cert = ca.client("uploader", uris=(spiffe,))
    async with (
        tls_gateway(
            tmp_path, moto_endpoint, bucket, ca, tls_client_ca_file=ca.write(tmp_path)
        ) as gw,
        Client(
            f"127.0.0.1:{gw.port}",
            root_certificates=ca.pem,
            private_key=client_cert.key,
            certificate_chain=client_cert.cert,
        ) as client,
    ):
        await client.upload("m/a.txt", b"hello")
        await client.delete("m/a.txt")
        with pytest.raises(BlobgateError) as caught:
            await client.delete("m/a.txt", bucket="not-allowed")
        assert caught.value.code == Code.PERMISSION_DENIED
        lines = await audit_lines(logged, 3)
    assert [(x["principal"], x["method"], x["outcome"]) for x in lines] == [
        (spiffe, "Upload", "OK"),
        (spiffe, "Delete", "OK"),
        (spiffe, "Delete", "PERMISSION_DENIED"),
    ]
    assert lines[0]["bytes"] == 5


async def test_an_unauthenticated_call_is_audited_without_principal_or_token(
    tmp_path: Path, moto_endpoint: str, bucket: str, logged: pytest.LogCaptureFixture
) -> None:
    ca = CA()
    secret = b"0123456789abcdef0123456789abcdef"
    jwks = tmp_path / "jwks.json"
    key = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "k": key}]}))
    now = int(time.time())
    good = jwt.encode(
        {"sub": "svc-a", "iss": "https://i", "aud": "blobgate", "iat": now, "exp": now + 300},
        secret,
        "HS256",
    )
    expired = jwt.encode(
        {"sub": "svc-a", "iss": "https://i", "aud": "blobgate", "exp": now - 300}, secret, "HS256"
    )
    async with tls_gateway(
        tmp_path,
        moto_endpoint,
        bucket,
        ca,
        jwt_jwks_file=jwks,
        jwt_issuer="https://i",
        jwt_audience="blobgate",
    ) as gw:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.pem)
        async with grpc.aio.secure_channel(f"127.0.0.1:{gw.port}", credentials) as channel:
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            for name, token in (("none", None), ("expired", expired)):
                metadata = rid(name)
                if token is not None:
                    metadata.append(("authorization", f"Bearer {token}"))
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Delete(pb.DeleteRequest(key="k"), metadata=metadata)
                assert caught.value.code() == Code.UNAUTHENTICATED
            await stub.Delete(
                pb.DeleteRequest(key="k"),
                metadata=[*rid("good"), ("authorization", f"Bearer {good}")],
            )
        lines = await audit_lines(logged, 3)
    # Refused before their request was read: no object to name.
    assert [(x["caller_request_id"], x["principal"], x["key"], x["outcome"]) for x in lines] == [
        ("none", "", "", "UNAUTHENTICATED"),
        ("expired", "", "", "UNAUTHENTICATED"),
        ("good", "svc-a", "k", "OK"),
    ]
    for text in every_formatted_line(logged):
        assert good not in text and expired not in text


async def test_the_server_writes_audit_lines_as_json(
    moto_endpoint: str, bucket: str, processes: list[ServerProcess]
) -> None:
    server = await ServerProcess.gateway(
        moto_endpoint, bucket, "--log-format", "json", "--drain-delay", "0"
    )
    processes.append(server)
    port = await server.wait_listening()
    async with Client(f"127.0.0.1:{port}") as client:
        await client.upload("j/k.txt", b"hello")
        await client.stat("j/k.txt")
        await client.delete("j/k.txt")
    server.proc.send_signal(signal.SIGTERM)
    assert await server.proc.wait() == 0
    await server.kill()  # collects the rest of the log
    lines = [json.loads(line) for line in server.text().splitlines()]
    audit = [line for line in lines if line["logger"] == AUDIT]
    assert [
        (x["level"], x["action"], x["method"], x["bucket"], x["key"], x["bytes"], x["outcome"])
        for x in audit
    ] == [
        ("INFO", "write", "Upload", bucket, "j/k.txt", 5, "OK"),
        ("INFO", "delete", "Delete", bucket, "j/k.txt", 0, "OK"),
    ]
    access = {line["request_id"] for line in lines if line["logger"] == ACCESS}
    assert {x["request_id"] for x in audit} < access
