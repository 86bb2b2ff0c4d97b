"""What a caller must not learn from the gateway's answers, on real parts
(a gateway on port 0 over moto's and LocalStack's S3, and the in-memory
store where no S3 behaviour is involved): a failed precondition names no
ETag; the gateway's own records never shape a List page; an unserved bucket
is refused in the words of a missing grant; the session quota holds under
concurrent starts; log lines carry the server's own request id."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from blobgate.server.app import Gateway, start_gateway
from blobgate.server.rpc import upload_id as upload_id_codec
from blobgate.server.storage.factory import memory_config
from blobgate.server.storage.memory.backend import MemoryBackend
from blobgate.server.storage.quotas import SESSION_MARKERS
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes.pki import CA
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import lines_of, upload_stream

pb = storage_pb2
Code = grpc.StatusCode
ISSUER = "https://issuer.example"
AUDIENCE = "blobgate"
SECRET = b"0123456789abcdef0123456789abcdef"
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
CONTENT = b"the secret report, version 7"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _policy(bucket: str) -> str:
    """owner: everything; writer: write and delete under w/, read under src/,
    no read of w/; reader: nothing in the other bucket (served, no grant)."""
    return f"""
[[grant]]
principals = ["owner"]
buckets = ["{bucket}"]
prefixes = [""]
actions = ["read", "list", "write", "delete"]

[[grant]]
principals = ["writer"]
buckets = ["{bucket}"]
prefixes = ["w/"]
actions = ["write", "delete"]

[[grant]]
principals = ["writer"]
buckets = ["{bucket}"]
prefixes = ["src/"]
actions = ["read"]
"""


class Callers:
    """Stubs of named principals (bearer JWTs) on one gateway."""

    def __init__(self, gateway: Gateway, ca: CA) -> None:
        self._port = gateway.port
        self._ca = ca
        self._channels: list[grpc.aio.Channel] = []

    def stub(self, who: str) -> tuple[storage_pb2_grpc.StorageServiceStub, list[tuple[str, str]]]:
        credentials = grpc.ssl_channel_credentials(self._ca.pem)
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{self._port}", credentials, options=OWN_CONNECTION
        )
        self._channels.append(channel)
        now = int(time.time())
        claims = {"sub": who, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}
        token = jwt.encode(claims, SECRET, "HS256", headers={"kid": "h1"})
        return storage_pb2_grpc.StorageServiceStub(channel), [("authorization", f"Bearer {token}")]

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


@asynccontextmanager
async def identified_gateway(
    tmp_path: Path, endpoint: str, bucket: str, *, memory: bool = False, **overrides: Any
) -> AsyncIterator[Callers]:
    """A gateway in JWT mode over TLS with ``_policy`` (unless overridden)."""
    ca = CA()
    cert, key = ca.server().write(tmp_path, "server")
    jwks = tmp_path / "jwks.json"
    key_set = {"keys": [{"kty": "oct", "kid": "h1", "alg": "HS256", "k": _b64(SECRET)}]}
    jwks.write_text(json.dumps(key_set))
    policy = tmp_path / "policy.toml"
    policy.write_text(_policy(bucket))
    values: dict[str, Any] = {
        "tls_cert_file": cert,
        "tls_key_file": key,
        "jwt_jwks_file": jwks,
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "auth_policy_file": policy,
        "allowed_buckets": [f"{bucket}-o"],
        **overrides,
    }
    settings = gateway_settings(endpoint, bucket, **values)
    backend = MemoryBackend(memory_config(settings)) if memory else None
    gateway = await start_gateway(settings, backend=backend)
    callers = Callers(gateway, ca)
    try:
        yield callers
    finally:
        await callers.close()
        await stop_gateway(gateway)


async def _details(code: grpc.StatusCode, awaitable: Any) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable
    assert caught.value.code() == code, caught.value
    return caught.value.details() or ""


# --- preconditions ----------------------------------------------------------------


@pytest.mark.both_s3s(memory=True)
async def test_a_write_only_caller_learns_no_etag_from_a_failed_if_match(
    tmp_path: Path, store_kind: str, s3_endpoint: str, bucket: str
) -> None:
    """The writer may not Stat w/secret; its if_match on a resumable start,
    a Copy onto it, a Delete and a BatchDelete entry fail without the
    object's ETag (the MD5 of its bytes), and read the same whether the key
    exists or not."""
    async with identified_gateway(
        tmp_path, s3_endpoint, bucket, memory=store_kind == "memory"
    ) as callers:
        owner, as_owner = callers.stub("owner")
        writer, as_writer = callers.stub("writer")
        stored = await owner.Upload(
            upload_stream("w/secret", CONTENT), metadata=as_owner, timeout=10
        )
        await owner.Upload(upload_stream("src/public", b"x"), metadata=as_owner, timeout=10)
        etag = stored.object.etag
        hints = {etag, hashlib.md5(CONTENT).hexdigest(), str(len(CONTENT))}
        stat = writer.Stat(pb.StatRequest(key="w/secret"), metadata=as_writer, timeout=10)
        assert "may not read" in await _details(Code.PERMISSION_DENIED, stat)

        def calls(key: str) -> list[Any]:
            guess = hashlib.md5(b"a guess").hexdigest()
            spec = pb.UploadSpec(key=key, if_match=guess)
            copy = pb.CopyRequest(source_key="src/public", destination_key=key, if_match=guess)
            return [
                writer.StartResumableUpload(
                    pb.StartResumableUploadRequest(spec=spec), metadata=as_writer, timeout=10
                ),
                writer.Copy(copy, metadata=as_writer, timeout=10),
                writer.Delete(pb.DeleteRequest(key=key, if_match=guess), metadata=as_writer),
            ]

        existing = [await _details(Code.FAILED_PRECONDITION, call) for call in calls("w/secret")]
        missing = [await _details(Code.FAILED_PRECONDITION, call) for call in calls("w/none")]
        entries = [
            pb.BatchDeleteEntry(key=key, if_match=hashlib.md5(b"a guess").hexdigest())
            for key in ("w/secret", "w/none")
        ]
        batch = await writer.BatchDelete(
            pb.BatchDeleteRequest(entries=entries), metadata=as_writer, timeout=10
        )
        assert [r.code for r in batch.results] == [Code.FAILED_PRECONDITION.value[0]] * 2
        messages = [*existing, *missing, *(r.message for r in batch.results)]
        for message in messages:
            assert not any(hint in message for hint in hints), message
        assert existing == missing  # nor whether the key exists
        assert batch.results[0].message == batch.results[1].message
        # The object is untouched.
        again = await owner.Stat(pb.StatRequest(key="w/secret"), metadata=as_owner, timeout=10)
        assert again.object.etag == etag


# --- listings ---------------------------------------------------------------------


@pytest.mark.both_s3s(memory=True)
async def test_hidden_records_never_shape_list_pages(
    tmp_path: Path, store_kind: str, s3_endpoint: str, bucket: str
) -> None:
    """Another principal's open sessions (their records and quota slots)
    under the reserved prefix: a whole-bucket listing with page_size=1
    visits each visible key on its own page, with no empty page."""
    async with identified_gateway(
        tmp_path, s3_endpoint, bucket, memory=store_kind == "memory"
    ) as callers:
        owner, as_owner = callers.stub("owner")
        writer, as_writer = callers.stub("writer")
        for index in range(4):  # the writer's sessions: hidden records
            spec = pb.UploadSpec(key=f"w/open-{index}")
            await writer.StartResumableUpload(
                pb.StartResumableUploadRequest(spec=spec), metadata=as_writer, timeout=10
            )
        # Keys before, among and after the reserved prefix in key order.
        names = ["!first", "-dash", ".blobfish", ".blobgate0", "a/one", "z/last"]
        for name in names:
            await owner.Upload(upload_stream(name, b"x"), metadata=as_owner, timeout=10)
        for delimiter, expected in (("", names), ("/", [*names[:4], "a/", "z/"])):
            pages: list[list[str]] = []
            token = ""
            while True:
                request = pb.ListRequest(page_size=1, page_token=token, delimiter=delimiter)
                page = await owner.List(request, metadata=as_owner, timeout=10)
                pages.append([o.key for o in page.objects] + list(page.common_prefixes))
                token = page.next_page_token
                if not token:
                    break
            assert pages == [[name] for name in expected], (delimiter, pages)
        # A page of two is two visible entries, wherever the hidden run falls.
        page = await owner.List(pb.ListRequest(page_size=2), metadata=as_owner, timeout=10)
        page = await owner.List(
            pb.ListRequest(page_size=2, page_token=page.next_page_token),
            metadata=as_owner,
            timeout=10,
        )
        assert [o.key for o in page.objects] == [".blobfish", ".blobgate0"]
        # A delimiter found inside the reserved prefix rolls up nothing of it.
        rolled = pb.ListRequest(prefix=".blob", delimiter="a")
        page = await owner.List(rolled, metadata=as_owner, timeout=10)
        assert list(page.common_prefixes) == [".blobga"]  # .blobgate0
        await owner.Delete(pb.DeleteRequest(key=".blobgate0"), metadata=as_owner, timeout=10)
        page = await owner.List(rolled, metadata=as_owner, timeout=10)
        assert ([o.key for o in page.objects], list(page.common_prefixes)) == ([".blobfish"], [])


@pytest.mark.both_s3s
async def test_a_listing_skips_the_hidden_run_in_one_request(s3_endpoint: str, bucket: str) -> None:
    """40 open sessions' records before the visible keys: a page_size=1
    listing of 3 keys takes a handful of ListObjectsV2 requests, not one
    per hidden record."""
    settings = gateway_settings(s3_endpoint, bucket, metrics_listen="127.0.0.1:0")
    gateway = await start_gateway(settings)
    try:
        assert gateway.metrics is not None
        registry = gateway.metrics.registry
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            for index in range(40):
                spec = pb.UploadSpec(key=f"open-{index}")
                await stub.StartResumableUpload(pb.StartResumableUploadRequest(spec=spec))
            for name in ("a", "b", "c"):
                await stub.Upload(upload_stream(name, b"x"), timeout=10)

            def lists() -> float:
                labels = {"operation": "ListObjectsV2", "outcome": "ok"}
                name = "blobgate_s3_request_duration_seconds_count"
                return registry.get_sample_value(name, labels) or 0.0

            before, token = lists(), ""
            pages: list[list[str]] = []
            while True:
                page = await stub.List(pb.ListRequest(page_size=1, page_token=token))
                pages.append([o.key for o in page.objects])
                token = page.next_page_token
                if not token:
                    break
        assert pages == [["a"], ["b"], ["c"]]
        assert lists() - before <= 6
    finally:
        await stop_gateway(gateway)


# --- unserved and ungranted -------------------------------------------------------


async def test_an_unserved_bucket_reads_like_one_without_a_grant(
    tmp_path: Path, moto_endpoint: str, bucket: str
) -> None:
    """Under a policy, every call on a bucket the gateway does not serve
    answers exactly as on a served bucket where the caller has no grant."""
    served, unserved = f"{bucket}-o", f"{bucket}-nope"
    async with identified_gateway(tmp_path, moto_endpoint, bucket) as callers:
        stub, auth = callers.stub("writer")

        async def answer(target: str) -> list[tuple[Any, str]]:
            fake_id = upload_id_codec.encode(target, secrets.token_urlsafe(32))
            copy = pb.CopyRequest(
                source_key="src/a", destination_bucket=target, destination_key="k"
            )
            query = pb.QueryUploadStatusRequest(upload_id=fake_id)
            calls = [
                stub.Stat(pb.StatRequest(bucket=target, key="k"), metadata=auth),
                stub.List(pb.ListRequest(bucket=target, prefix="p/"), metadata=auth),
                stub.Delete(pb.DeleteRequest(bucket=target, key="k"), metadata=auth),
                stub.Upload(upload_stream("k", b"x", bucket=target), metadata=auth),
                stub.StartResumableUpload(
                    pb.StartResumableUploadRequest(spec=pb.UploadSpec(bucket=target, key="k")),
                    metadata=auth,
                ),
                stub.Copy(copy, metadata=auth),
                stub.QueryUploadStatus(query, metadata=auth),
                stub.CancelResumableUpload(
                    pb.CancelResumableUploadRequest(upload_id=fake_id), metadata=auth
                ),
            ]
            answers: list[tuple[Any, str]] = []
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                answers.append((caught.value.code(), caught.value.details() or ""))
            batch = await stub.BatchDelete(
                pb.BatchDeleteRequest(bucket=target, entries=[pb.BatchDeleteEntry(key="k")]),
                metadata=auth,
            )
            answers += [(r.code, r.message) for r in batch.results]
            return answers

        on_served, on_unserved = await answer(served), await answer(unserved)
        assert on_unserved == on_served
        assert all(unserved not in message and served not in message for _, message in on_served)
        assert on_served[0] == (Code.PERMISSION_DENIED, "caller 'writer' may not read this key")


async def test_without_a_policy_an_unserved_bucket_is_named(
    moto_endpoint: str, bucket: str, stub: storage_pb2_grpc.StorageServiceStub
) -> None:
    details = await _details(
        Code.PERMISSION_DENIED, stub.Stat(pb.StatRequest(bucket="elsewhere", key="k"))
    )
    assert details == "bucket 'elsewhere' is not served by this gateway"


# --- the session quota --------------------------------------------------------------


@pytest.mark.both_s3s(memory=True)
async def test_concurrent_starts_let_exactly_the_quota_through(
    tmp_path: Path, store_kind: str, s3_endpoint: str, bucket: str, s3: Any
) -> None:
    """30 starts at once against a quota of 3: exactly 3 sessions open, the
    other 27 RESOURCE_EXHAUSTED, and 3 slots held; once they are cancelled,
    3 more fit."""
    async with identified_gateway(
        tmp_path,
        s3_endpoint,
        bucket,
        memory=store_kind == "memory",
        max_sessions_per_principal=3,
    ) as callers:
        stub, auth = callers.stub("writer")

        async def start(index: int) -> str | grpc.StatusCode:
            spec = pb.UploadSpec(key=f"w/race-{index}")
            try:
                response = await stub.StartResumableUpload(
                    pb.StartResumableUploadRequest(spec=spec), metadata=auth, timeout=30
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return str(response.upload_id)

        results = await asyncio.gather(*(start(index) for index in range(30)))
        opened = [result for result in results if isinstance(result, str)]
        refused = [result for result in results if not isinstance(result, str)]
        assert len(opened) == 3, results
        assert refused == [Code.RESOURCE_EXHAUSTED] * 27
        if store_kind != "memory":
            listing = await s3.list_objects_v2(Bucket=bucket, Prefix=SESSION_MARKERS)
            assert len(listing.get("Contents", [])) == 3
        for upload_id in opened:
            await stub.CancelResumableUpload(
                pb.CancelResumableUploadRequest(upload_id=upload_id), metadata=auth, timeout=10
            )
        again = await asyncio.gather(*(start(index) for index in range(30, 36)))
        assert sum(isinstance(result, str) for result in again) == 3, again


# --- request ids ----------------------------------------------------------------------


async def test_log_lines_carry_the_servers_own_request_ids(
    tmp_path: Path, moto_endpoint: str, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two principals send the same x-request-id: every access and audit line
    has its own id (the one the caller got back), the proposal beside it."""
    caplog.set_level(logging.INFO)
    async with identified_gateway(tmp_path, moto_endpoint, bucket) as callers:
        returned: list[str] = []
        for who, key in (("owner", "a"), ("writer", "w/b"), ("writer", "w/c")):
            stub, auth = callers.stub(who)
            call = stub.Upload(
                upload_stream(key, b"x"), metadata=[*auth, ("x-request-id", "chosen-id")]
            )
            await call
            returned.append(dict(await call.trailing_metadata())["x-request-id"])
        for _ in range(100):
            if len(lines_of(caplog, "blobgate.audit")) >= 3:
                break
            await asyncio.sleep(0.02)
    assert len(set(returned)) == 3 and "chosen-id" not in returned
    for logger in ("blobgate.access", "blobgate.audit"):
        lines = [x for x in lines_of(caplog, logger) if x.get("method") == "Upload"]
        assert [x["request_id"] for x in lines] == returned
        assert {x["caller_request_id"] for x in lines} == {"chosen-id"}
