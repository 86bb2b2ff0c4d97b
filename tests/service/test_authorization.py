"""Rights (auth_policy_file) and sessions bound to their creator, on real
parts: moto's S3 server, a gateway in mTLS mode (SPIFFE IDs in client
certificates) or JWT mode (bearer tokens), and the policy's pure decision
function under hypothesis."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from blobgate.server.app import Gateway, StartupError, serve, start_gateway
from blobgate.server.core import access_policy as authorization
from blobgate.server.core.access_policy import (
    MAX_PRESIGN_EXPIRY,
    AccessPolicy,
    Action,
    Grant,
    PolicyError,
    Rules,
    parse_policy,
)
from blobgate.server.core.errors import NotFound, PermissionDenied
from blobgate.server.core.identity import acting_as
from blobgate.server.rpc import upload_id as upload_id_codec
from blobgate.server.storage.authorization import AuthorizedSessions, AuthorizedStore
from blobgate.server.storage.memory.sessions import MemorySessions
from blobgate.server.storage.memory.store import MemoryStore
from blobgate.server.storage.protocols import (
    RESERVED_PREFIX,
    SESSION_GONE,
    DeleteEntry,
    ObjectRef,
    PresignMethod,
    PutOptions,
    SessionSpec,
)
from blobgate.server.storage.s3.checkpoint import Checkpoint
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes.pki import CA
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import eventually, resume_requests, sessions_left, upload_stream

pb = storage_pb2
Code = grpc.StatusCode
ISSUER = "https://issuer.example"
AUDIENCE = "blobgate"
SECRET = b"0123456789abcdef0123456789abcdef"
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
MODES = ["mtls", "jwt"]


@pytest.fixture(autouse=True)
def settle_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written here are read at once: the settle time before a
    changed file is read has its own tests (tests/availability)."""
    monkeypatch.setattr(authorization, "SETTLE_SECONDS", 0.0)


@dataclass
class Caller:
    """One principal's stub, with its token's metadata in JWT mode."""

    stub: storage_pb2_grpc.StorageServiceStub
    metadata: tuple[tuple[str, str], ...]

    async def upload(self, key: str, blob: bytes = b"hello", bucket: str = "") -> Any:
        return await self.stub.Upload(
            iter(upload_stream(key, blob, bucket=bucket)), metadata=self.metadata, timeout=10
        )

    async def stat(self, key: str, bucket: str = "") -> Any:
        request = pb.StatRequest(bucket=bucket, key=key)
        return await self.stub.Stat(request, metadata=self.metadata, timeout=10)

    async def download(self, key: str, bucket: str = "") -> bytes:
        call = self.stub.Download(
            pb.DownloadRequest(bucket=bucket, key=key), metadata=self.metadata, timeout=10
        )
        return b"".join([message.data async for message in call])

    async def list(self, prefix: str, bucket: str = "") -> list[str]:
        request = pb.ListRequest(bucket=bucket, prefix=prefix)
        response = await self.stub.List(request, metadata=self.metadata, timeout=10)
        return [o.key for o in response.objects]

    async def delete(self, key: str, bucket: str = "") -> Any:
        request = pb.DeleteRequest(bucket=bucket, key=key)
        return await self.stub.Delete(request, metadata=self.metadata, timeout=10)

    async def copy(self, source: str, destination: str) -> Any:
        request = pb.CopyRequest(source_key=source, destination_key=destination)
        return await self.stub.Copy(request, metadata=self.metadata, timeout=10)

    async def batch_delete(self, *keys: str) -> list[tuple[str, int]]:
        entries = [pb.BatchDeleteEntry(key=key) for key in keys]
        request = pb.BatchDeleteRequest(entries=entries)
        response = await self.stub.BatchDelete(request, metadata=self.metadata, timeout=10)
        return [(result.key, result.code) for result in response.results]

    async def presign(self, key: str, method: int, seconds: int | None = None) -> Any:
        request = pb.PresignRequest(key=key, method=method)
        if seconds is not None:
            request.expires_in.seconds = seconds
        return await self.stub.Presign(request, metadata=self.metadata, timeout=10)

    async def start(self, key: str) -> str:
        request = pb.StartResumableUploadRequest(spec=pb.UploadSpec(key=key))
        response = await self.stub.StartResumableUpload(request, metadata=self.metadata, timeout=10)
        return str(response.upload_id)

    async def query(self, upload_id: str) -> int:
        request = pb.QueryUploadStatusRequest(upload_id=upload_id)
        response = await self.stub.QueryUploadStatus(request, metadata=self.metadata, timeout=10)
        return int(response.persisted_size)

    async def resume(self, upload_id: str, blob: bytes) -> Any:
        requests = iter(resume_requests(upload_id, 0, blob))
        return await self.stub.Upload(requests, metadata=self.metadata, timeout=10)

    async def cancel(self, upload_id: str) -> Any:
        request = pb.CancelResumableUploadRequest(upload_id=upload_id)
        return await self.stub.CancelResumableUpload(request, metadata=self.metadata, timeout=10)


class Realm:
    """The identity side of one mode: the server's TLS and identity
    settings, and callers named alice, bob, ... in that mode's form."""

    def __init__(self, mode: str, tmp_path: Path) -> None:
        self.mode = mode
        self.ca = CA()
        self.tmp = tmp_path
        self._channels: list[grpc.aio.Channel] = []

    def name(self, who: str) -> str:
        if self.mode == "mtls":
            return f"spiffe://example.org/ns/team/sa/{who}"
        return f"{who}@accounts.example"

    def settings(self) -> dict[str, Any]:
        cert, key = self.ca.server().write(self.tmp, "server")
        values: dict[str, Any] = {"tls_cert_file": cert, "tls_key_file": key}
        if self.mode == "mtls":
            values["tls_client_ca_file"] = self.ca.write(self.tmp)
        else:
            jwks = self.tmp / "jwks.json"
            key_set = {"keys": [{"kty": "oct", "kid": "h1", "alg": "HS256", "k": _b64(SECRET)}]}
            jwks.write_text(json.dumps(key_set))
            values.update(jwt_jwks_file=jwks, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
        return values

    def caller(self, port: int, who: str) -> Caller:
        metadata: tuple[tuple[str, str], ...] = ()
        if self.mode == "mtls":
            client = self.ca.client(who, uris=(self.name(who),))
            credentials = grpc.ssl_channel_credentials(self.ca.pem, client.key, client.cert)
        else:
            credentials = grpc.ssl_channel_credentials(self.ca.pem)
            now = int(time.time())
            claims = {"sub": self.name(who), "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}
            token = jwt.encode(claims, SECRET, "HS256", headers={"kid": "h1"})
            metadata = (("authorization", f"Bearer {token}"),)
        channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=OWN_CONNECTION)
        self._channels.append(channel)
        return Caller(storage_pb2_grpc.StorageServiceStub(channel), metadata)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def other(bucket: str) -> str:
    return f"{bucket}-o"


def policy_text(realm: Realm, bucket: str) -> str:
    """alice: everything under reports/ (presign up to 600 s); anyone: read
    and list public/; carol: read and presign under reports/; mallory:
    write anywhere in both buckets (so only ownership hides sessions)."""
    return f"""
[[grant]]
principals = ["{realm.name("alice")}"]
buckets = ["{bucket}"]
prefixes = ["reports/"]
actions = ["read", "list", "write", "delete", "presign"]
max_presign_expiry = 600

[[grant]]
principals = ["*"]
buckets = ["{bucket}"]
prefixes = ["public/"]
actions = ["read", "list"]

[[grant]]
principals = ["{realm.name("carol")}"]
buckets = ["{bucket}"]
prefixes = ["reports/"]
actions = ["read", "presign"]

[[grant]]
principals = ["{realm.name("mallory")}"]
buckets = ["{bucket}", "{other(bucket)}"]
prefixes = [""]
actions = ["write"]
"""


@pytest.fixture(params=MODES)
async def realm(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Realm]:
    realm = Realm(request.param, tmp_path)
    yield realm
    await realm.close()


@asynccontextmanager
async def running(
    realm: Realm, moto_endpoint: str, bucket: str, policy: str | None = "", **overrides: Any
) -> AsyncIterator[Gateway]:
    """A gateway with ``policy`` (default: policy_text; None: no policy file)."""
    values = {**realm.settings(), "allowed_buckets": [other(bucket)], **overrides}
    if policy is not None:
        path = realm.tmp / "policy.toml"
        path.write_text(policy or policy_text(realm, bucket))
        values["auth_policy_file"] = path
    gateway = await start_gateway(gateway_settings(moto_endpoint, bucket, **values))
    try:
        yield gateway
    finally:
        await stop_gateway(gateway)


async def refused(code: grpc.StatusCode, awaitable: Any) -> str:
    """Await ``awaitable``; it must fail with ``code``; its message."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable
    assert caught.value.code() == code, caught.value
    details = caught.value.details() or ""
    assert "Traceback" not in details
    return details


async def denied(awaitable: Any, *, bucket: str, verb: str) -> None:
    """PERMISSION_DENIED saying what was refused, naming no bucket or grant."""
    details = await refused(Code.PERMISSION_DENIED, awaitable)
    assert f"may not {verb}" in details, details
    assert bucket not in details and "grant" not in details and "reports/" not in details


async def keys_in(s3: Any, bucket: str) -> list[str]:
    """The objects in ``bucket``, without the gateway's own records."""
    listing = await s3.list_objects_v2(Bucket=bucket)
    keys = (o["Key"] for o in listing.get("Contents", []))
    return sorted(key for key in keys if not key.startswith(RESERVED_PREFIX))


# --- each action inside and outside a grant ----------------------------------


async def test_each_action_inside_its_grant_and_refused_outside(
    realm: Realm, moto_endpoint: str, bucket: str, s3: Any
) -> None:
    async with running(realm, moto_endpoint, bucket) as gateway:
        for key in ("secret/s.txt", "reports-old/r.txt", "public/p.txt"):
            await s3.put_object(Bucket=bucket, Key=key, Body=b"seeded")
        await s3.put_object(Bucket=other(bucket), Key="reports/o.txt", Body=b"seeded")
        seeded = await keys_in(s3, bucket)
        alice = realm.caller(gateway.port, "alice")
        bob = realm.caller(gateway.port, "bob")

        # Inside alice's grant: every action.
        await alice.upload("reports/a.txt", b"hello")
        assert (await alice.stat("reports/a.txt")).object.size == 5
        assert await alice.download("reports/a.txt") == b"hello"
        await alice.copy("reports/a.txt", "reports/b.txt")
        await alice.delete("reports/b.txt")
        await alice.upload("reports/c.txt")
        # BatchDelete answers per key: the refused one stays.
        results = await alice.batch_delete("reports/c.txt", "secret/s.txt")
        assert results == [("reports/c.txt", 0), ("secret/s.txt", Code.PERMISSION_DENIED.value[0])]

        # Writes outside it: another prefix, a lookalike prefix, another bucket.
        for key, where in (("other/x", ""), ("reports-old/x", ""), ("reports/x", other(bucket))):
            await denied(alice.upload(key, bucket=where), bucket=bucket, verb="write")
        # '..' and '.' segments never reach S3, where URL handling could rewrite them.
        for key in ("reports/../secret/x", "reports/./x", "./reports/x", "reports/.."):
            await refused(Code.INVALID_ARGUMENT, alice.upload(key))
            await refused(Code.INVALID_ARGUMENT, alice.stat(key))
        # Reads, deletes and copies outside it, of keys that exist.
        for key in ("secret/s.txt", "reports-old/r.txt"):
            await denied(alice.stat(key), bucket=bucket, verb="read")
            await denied(alice.download(key), bucket=bucket, verb="read")
            await denied(alice.delete(key), bucket=bucket, verb="delete")
        await denied(alice.stat("reports/o.txt", other(bucket)), bucket=bucket, verb="read")
        await denied(alice.delete("reports/o.txt", other(bucket)), bucket=bucket, verb="delete")
        await denied(alice.copy("reports/a.txt", "secret/c"), bucket=bucket, verb="write")
        await denied(alice.copy("secret/s.txt", "reports/c"), bucket=bucket, verb="read")

        # bob: read and list public/ only (the "*" grant).
        assert await bob.download("public/p.txt") == b"seeded"
        await denied(bob.stat("reports/a.txt"), bucket=bucket, verb="read")
        await denied(bob.upload("public/x"), bucket=bucket, verb="write")
        await denied(bob.delete("public/p.txt"), bucket=bucket, verb="delete")
        assert await bob.batch_delete("public/p.txt") == [
            ("public/p.txt", Code.PERMISSION_DENIED.value[0])
        ]

    # Nothing refused changed S3.
    assert await keys_in(s3, bucket) == sorted([*seeded, "reports/a.txt"])
    assert await keys_in(s3, other(bucket)) == ["reports/o.txt"]
    uploads = await s3.list_multipart_uploads(Bucket=bucket)
    assert uploads.get("Uploads", []) == []


async def test_batch_delete_refuses_each_key_outside_the_grant(
    realm: Realm, moto_endpoint: str, bucket: str, s3: Any
) -> None:
    async with running(realm, moto_endpoint, bucket) as gateway:
        for key in ("secret/1", "secret/2"):
            await s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        alice = realm.caller(gateway.port, "alice")
        results = await alice.batch_delete("secret/1", "secret/2")
    assert [code for _, code in results] == [Code.PERMISSION_DENIED.value[0]] * 2
    assert await keys_in(s3, bucket) == ["secret/1", "secret/2"]


async def test_list_only_under_a_granted_prefix(
    realm: Realm, moto_endpoint: str, bucket: str, s3: Any
) -> None:
    async with running(realm, moto_endpoint, bucket) as gateway:
        for key in ("reports/a", "reports/sub/b", "reports-old/c", "public/p", "secret/s"):
            await s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        alice = realm.caller(gateway.port, "alice")
        bob = realm.caller(gateway.port, "bob")
        assert await alice.list("reports/") == ["reports/a", "reports/sub/b"]
        assert await alice.list("reports/sub/") == ["reports/sub/b"]
        assert await alice.list("reports/../") == []  # a literal prefix in S3: no escape
        for prefix in ("", "r", "reports", "reports-old/", "secret/", "public"):
            await denied(alice.list(prefix), bucket=bucket, verb="list")
        await denied(alice.list("reports/", other(bucket)), bucket=bucket, verb="list")
        assert await bob.list("public/") == ["public/p"]
        await denied(bob.list(""), bucket=bucket, verb="list")


# --- presigned URLs ----------------------------------------------------------


async def test_presign_needs_the_right_and_keeps_within_the_grants_expiry(
    realm: Realm, moto_endpoint: str, bucket: str
) -> None:
    get, put = pb.HTTP_METHOD_GET, pb.HTTP_METHOD_PUT
    async with running(realm, moto_endpoint, bucket) as gateway:
        alice = realm.caller(gateway.port, "alice")
        carol = realm.caller(gateway.port, "carol")
        bob = realm.caller(gateway.port, "bob")
        assert (await alice.presign("reports/a", get, 600)).url
        assert (await alice.presign("reports/a", put, 60)).url
        for seconds in (601, 86400, None):  # None: the server's default of 15 minutes
            details = await refused(
                Code.PERMISSION_DENIED, alice.presign("reports/a", get, seconds)
            )
            assert "at most 600s" in details and bucket not in details
        await denied(alice.presign("secret/a", get, 60), bucket=bucket, verb="read")
        # carol: presign and read, no maximum of her own (the server's 7 days), no write.
        assert (await carol.presign("reports/a", get, MAX_PRESIGN_EXPIRY)).url
        await denied(carol.presign("reports/a", put, 60), bucket=bucket, verb="write")
        # bob may read public/ but not presign it.
        await denied(bob.presign("public/p", get, 60), bucket=bucket, verb="presign")


# --- sessions bound to their creator -----------------------------------------


async def test_sessions_are_invisible_to_other_principals(
    realm: Realm, moto_endpoint: str, bucket: str, s3: Any
) -> None:
    async with running(realm, moto_endpoint, bucket) as gateway:
        alice = realm.caller(gateway.port, "alice")
        mallory = realm.caller(gateway.port, "mallory")  # may write the key: not the owner
        bob = realm.caller(gateway.port, "bob")
        upload_id = await alice.start("reports/big.bin")
        bogus = upload_id_codec.encode(bucket, "A" * 43)
        missing = await refused(Code.NOT_FOUND, mallory.query(bogus))
        for caller in (mallory, bob):
            assert await refused(Code.NOT_FOUND, caller.query(upload_id)) == missing
            assert await refused(Code.NOT_FOUND, caller.resume(upload_id, b"evil")) == missing
            assert await refused(Code.NOT_FOUND, caller.cancel(upload_id)) == missing
        # The session is untouched: its record and multipart upload are there.
        records, uploads = await sessions_left(s3, bucket)
        assert len(records) == 1 and uploads == ["reports/big.bin"]
        assert await keys_in(s3, bucket) == []
        # Its owner still has it.
        assert await alice.query(upload_id) == 0
        done = await alice.resume(upload_id, b"mine")
        assert done.object.size == 4
        second = await alice.start("reports/second.bin")
        await denied(bob.start("reports/b.bin"), bucket=bucket, verb="write")
        await alice.cancel(second)
    assert await sessions_left(s3, bucket) == ([], [])
    assert await keys_in(s3, bucket) == ["reports/big.bin"]


async def test_without_a_policy_everyone_may_all_but_sessions_stay_their_owners(
    realm: Realm, moto_endpoint: str, bucket: str, s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="blobgate.server.core.access_policy")
    async with running(realm, moto_endpoint, bucket, policy=None) as gateway:
        logged = [r.getMessage() for r in caplog.records]
        warnings = [line for line in logged if "no auth_policy_file" in line]
        assert len(warnings) == 1 and "all rights" in warnings[0]
        bob = realm.caller(gateway.port, "bob")
        alice = realm.caller(gateway.port, "alice")
        await bob.upload("anything/x", bucket=other(bucket))
        assert await bob.list("", other(bucket)) == ["anything/x"]
        assert (await bob.presign("x", pb.HTTP_METHOD_GET, MAX_PRESIGN_EXPIRY)).url
        upload_id = await bob.start("big.bin")
        await refused(Code.NOT_FOUND, alice.cancel(upload_id))
        await bob.cancel(upload_id)
    assert await sessions_left(s3, bucket) == ([], [])


# --- reloading the policy ----------------------------------------------------


def replace_file(path: Path, text: str) -> None:
    """Write the new file beside the old one and rename it over it."""
    fresh = path.with_suffix(".new")
    fresh.write_text(text)
    fresh.replace(path)


async def test_policy_reloads_on_change_and_on_reload_keeping_it_when_broken(
    realm: Realm,
    moto_endpoint: str,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="blobgate.server.core.access_policy")
    monkeypatch.setattr(authorization, "RELOAD_CHECK_INTERVAL", 0.0)
    base = policy_text(realm, bucket)
    bob_reads = f"""{base}
[[grant]]
principals = ["{realm.name("bob")}"]
buckets = ["{bucket}"]
prefixes = ["reports/"]
actions = ["read"]
"""
    async with running(realm, moto_endpoint, bucket) as gateway:
        path = gateway.settings.auth_policy_file
        assert path is not None
        bob = realm.caller(gateway.port, "bob")
        await denied(bob.stat("reports/a"), bucket=bucket, verb="read")
        # A changed file is picked up at the next call.
        replace_file(path, bob_reads)
        await refused(Code.NOT_FOUND, bob.stat("reports/a"))  # allowed: the key is missing
        # A broken replacement keeps the rights in force, with a warning saying why.
        replace_file(path, bob_reads + grant_toml(actions=["admin"]))
        await refused(Code.NOT_FOUND, bob.stat("reports/a"))
        assert gateway.storage.policy.reload() is False  # SIGHUP's entry point: same answer
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings and all("keeping the old rights" in w for w in warnings)
        assert any("grant[5].actions: unknown action 'admin'" in w for w in warnings)
        # Without the stat check, only reload() (SIGHUP) picks a change up.
        monkeypatch.setattr(authorization, "RELOAD_CHECK_INTERVAL", 3600.0)
        replace_file(path, base)
        await refused(Code.NOT_FOUND, bob.stat("reports/a"))
        assert gateway.storage.policy.reload() is True
        await denied(bob.stat("reports/a"), bucket=bucket, verb="read")


async def test_the_watcher_reports_a_broken_or_missing_file_without_a_call(
    tmp_path: Path,
    moto_endpoint: str,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="blobgate.server.core.access_policy")
    monkeypatch.setattr(authorization, "RELOAD_CHECK_INTERVAL", 3600.0)  # calls never look
    monkeypatch.setattr(authorization, "WATCH_INTERVAL", 0.05)
    realm = Realm("mtls", tmp_path)

    def said(fragment: str) -> Callable[[], Awaitable[None]]:
        async def check() -> None:
            assert any(fragment in r.getMessage() for r in caplog.records), fragment

        return check

    try:
        async with running(realm, moto_endpoint, bucket) as gateway:
            path = gateway.settings.auth_policy_file
            assert path is not None
            replace_file(path, "[[grant]")  # and no call comes
            await eventually(said("policy file does not load; keeping the old rights"), 5)
            assert "not TOML" in caplog.records[-1].getMessage()
            assert caplog.records[-1].levelno == logging.WARNING
            path.unlink()
            await eventually(said("policy file gone; keeping the old rights"), 5)
            replace_file(path, "")
            await eventually(said("rights reloaded: 0 grants"), 5)
            gone = [r for r in caplog.records if "policy file gone" in r.getMessage()]
            assert len(gone) == 1  # said once, not every look
    finally:
        await realm.close()


async def test_sighup_reloads_the_policy_of_a_serving_gateway(
    tmp_path: Path,
    moto_endpoint: str,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(authorization, "RELOAD_CHECK_INTERVAL", 3600.0)
    realm = Realm("mtls", tmp_path)
    path = tmp_path / "policy.toml"
    path.write_text(policy_text(realm, bucket))
    values = {**realm.settings(), "allowed_buckets": [other(bucket)], "auth_policy_file": path}
    task = asyncio.create_task(serve(gateway_settings(moto_endpoint, bucket, **values)))

    async def logged(fragment: str) -> None:
        for _ in range(500):
            if any(fragment in record.getMessage() for record in caplog.records):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"no log line with {fragment!r}")

    listening = False
    try:
        await logged("blobgate listening")  # logged just before the handlers go in
        listening = True
        replace_file(path, "")  # no grants: nobody may do anything
        os.kill(os.getpid(), signal.SIGHUP)
        await logged("rights reloaded: 0 grants")
    finally:
        if listening:
            os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler: a graceful stop
            assert await asyncio.wait_for(task, 30) == 0
        else:
            task.cancel()


# --- start-up ----------------------------------------------------------------


def test_a_policy_needs_an_identity_source(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("")
    with pytest.raises(ValidationError) as caught:
        gateway_settings("http://127.0.0.1:9", "b-test", auth_policy_file=path)
    message = str(caught.value)
    assert "auth_policy_file needs an identity source" in message
    assert "tls_client_ca_file" in message and "jwt_jwks_file" in message
    # An empty value is unset, as for the other file settings.
    assert (
        gateway_settings("http://127.0.0.1:9", "b-test", auth_policy_file="").auth_policy_file
        is None
    )


async def test_an_unusable_policy_stops_start_up(
    tmp_path: Path, moto_endpoint: str, bucket: str
) -> None:
    realm = Realm("mtls", tmp_path)
    path = tmp_path / "policy.toml"
    path.write_text(grant_toml(principals=["cn:a"], actions=["fly"]))
    values = {**realm.settings(), "auth_policy_file": path}
    settings_ = gateway_settings(moto_endpoint, bucket, **values)
    # One line, as main() prints it; serve() and start_gateway() alike.
    with pytest.raises(StartupError, match=r"grant\[0\]\.actions: unknown action 'fly'"):
        await start_gateway(settings_)
    with pytest.raises(StartupError) as caught:
        await serve(settings_)
    message = str(caught.value)
    assert message.startswith("bad setting auth_policy_file (--auth-policy-file")
    assert "\n" not in message
    with pytest.raises(StartupError, match="cannot read"):
        await serve(settings_.model_copy(update={"auth_policy_file": tmp_path / "missing.toml"}))


# --- parsing hostile files ---------------------------------------------------

GOOD = {"principals": ["a"], "buckets": ["b"], "prefixes": [""], "actions": ["read"]}


def grant_toml(**fields: Any) -> str:
    values = {**GOOD, **fields}
    lines = [f"{name} = {json.dumps(value)}" for name, value in values.items() if value is not None]
    return "[[grant]]\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[[grant]", "not TOML"),
        ('grant = "x"', "grant: must be a list of tables"),
        ("[other]\nx = 1", "unknown table or key 'other'"),
        ("grant = [1]", "grant[0]: must be a table"),
        (grant_toml(extra=1), "grant[0]: unknown field 'extra'"),
        (grant_toml(principals=None), "grant[0].principals: missing"),
        (grant_toml(actions=None), "grant[0].actions: missing"),
        (grant_toml(actions=["read", "admin"]), "grant[0].actions: unknown action 'admin'"),
        (grant_toml(actions=[]), "grant[0].actions: must be a non-empty list"),
        (grant_toml(buckets="b"), "grant[0].buckets: must be a non-empty list"),
        (grant_toml(principals=[1]), "grant[0].principals: 1 is not a non-empty string"),
        (grant_toml(principals=[""]), "grant[0].principals: '' is not a non-empty string"),
        (grant_toml(principals=["a\u0007"]), "grant[0].principals: 'a\\x07' is not printable"),
        (grant_toml(principals=["a" * 1025]), "longer than 1024"),
        (grant_toml(prefixes=[]), "grant[0].prefixes: must be a non-empty list"),
        (grant_toml(prefixes=None), "grant[0].prefixes: missing: list the key prefixes"),
        (grant_toml(prefixes=["reports/../x/"]), "grant[0].prefixes: 'reports/../x/' has"),
        (grant_toml(prefixes=["./x"]), "'.' or '..' segment"),
        (grant_toml(prefixes=["/x"]), "leading '/'"),
        (grant_toml(prefixes=[".blobgate/"]), "reserved"),
        (grant_toml(max_presign_expiry=0), "grant[0].max_presign_expiry: must be whole seconds"),
        (grant_toml(max_presign_expiry=604801), "max_presign_expiry"),
        (grant_toml(max_presign_expiry=1.5), "max_presign_expiry"),
        (grant_toml(max_presign_expiry=True), "max_presign_expiry"),
        (grant_toml(max_presign_expiry="60"), "max_presign_expiry"),
        (grant_toml() + grant_toml(actions=["x"]), "grant[1].actions: unknown action 'x'"),
    ],
)
def test_hostile_policies_are_refused_naming_grant_and_field(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert fragment in str(caught.value)


def test_a_policy_file_must_be_a_small_regular_utf8_file(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (1024 * 1024))
    for path, fragment in (
        (big, "larger than 1MiB"),
        (tmp_path, "not a regular file"),
        (tmp_path / "missing.toml", "cannot read"),
    ):
        with pytest.raises(PolicyError, match=fragment):
            AccessPolicy(path)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"# \xe9\n")
    with pytest.raises(PolicyError, match="not UTF-8"):
        AccessPolicy(latin)


def test_an_empty_policy_denies_everything_and_a_full_grant_allows() -> None:
    assert parse_policy("").allows("a", Action.READ, "b", "k") is False
    rules = parse_policy(grant_toml(actions=[a.value for a in Action]))
    assert all(rules.allows("a", action, "b", "any/key") for action in Action)
    assert not rules.allows("a", Action.READ, "other", "any/key")
    assert not rules.allows("z", Action.READ, "b", "any/key")
    assert not rules.allows(None, Action.READ, "b", "any/key")
    star = parse_policy(grant_toml(principals=["*"]))
    assert star.allows("anyone", Action.READ, "b", "k") and not star.allows(
        None, Action.READ, "b", "k"
    )
    assert rules.presign_limit("a", "b", "k") == MAX_PRESIGN_EXPIRY


# --- the decision function under hypothesis ----------------------------------

names = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12
)
prefixes = st.text(st.sampled_from("ab/.-"), min_size=1, max_size=5)
key_text = st.text(st.sampled_from("ab/.-"), min_size=0, max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    grants=st.lists(
        st.tuples(
            st.sets(names, min_size=1, max_size=3),
            st.sets(st.sampled_from(list(Action)), min_size=1),
            st.none() | st.lists(prefixes, min_size=1, max_size=3),
        ),
        max_size=4,
    ),
    principal=names,
    action=st.sampled_from(list(Action)),
    key=key_text,
)
def test_a_key_is_allowed_iff_a_grant_names_the_caller_and_prefixes_it(
    grants: list[tuple[set[str], set[Action], list[str] | None]],
    principal: str,
    action: Action,
    key: str,
) -> None:
    rules = Rules(
        tuple(
            Grant(
                frozenset(who),
                frozenset({"b"}),
                frozenset(actions),
                None if granted is None else tuple(granted),
            )
            for who, actions, granted in grants
        )
    )
    expected = any(
        (principal in who or "*" in who)
        and action in actions
        and (granted is None or any(key[: len(p)] == p for p in granted))
        for who, actions, granted in grants
    )
    assert rules.allows(principal, action, "b", key) is expected
    assert rules.allows(principal, action, "other", key) is False


@settings(max_examples=200, deadline=None)
@given(principal=names, folder=prefixes, rest=key_text)
def test_a_parsed_grant_allows_keys_under_its_prefix_only(
    principal: str, folder: str, rest: str
) -> None:
    prefix = folder + "/"
    document = (
        f'[[grant]]\nprincipals = [{json.dumps(principal)}]\nbuckets = ["b"]\n'
        f'prefixes = [{json.dumps(prefix)}]\nactions = ["list", "read"]\n'
    )
    try:
        rules = parse_policy(document)
    except PolicyError:
        assume(False)  # a prefix no key can have ('..' segments): refused, as tested above
    for action in (Action.LIST, Action.READ):
        assert rules.allows(principal, action, "b", prefix + rest)
        # Shorter, or only starting like it ("reports-old/" for "reports/"): outside.
        assert not rules.allows(principal, action, "b", folder)
        assert not rules.allows(principal, action, "b", folder + "-old/" + rest)
        if principal != "*":
            assert not rules.allows(principal + "x", action, "b", prefix + rest)
    assert not rules.allows(principal, Action.WRITE, "b", prefix + rest)


# --- the decorators and old session records ----------------------------------


async def test_old_session_records_without_an_owner_are_only_for_callers_without_one() -> None:
    old = Checkpoint(
        key="k",
        upload_id="u",
        part_size=5,
        content_type="t",
        metadata={},
        if_none_match=False,
        if_match="",
        size=None,
        expected_sha256="",
        expected_crc32c=None,
        parts=0,
        sha256_state="",
        crc32c=0,
    ).to_json()
    record = json.loads(old)
    del record["owner"]  # as written before sessions had owners
    parsed = Checkpoint.from_json(json.dumps(record).encode())
    assert parsed.owner is None and parsed.spec("b").owner is None

    store = MemoryStore(["b"])
    sessions = AuthorizedSessions(MemorySessions(store, part_size=5, expiry=60), AccessPolicy(None))
    ownerless = await sessions.start_session(SessionSpec(ObjectRef("b", "k"), PutOptions("t", {})))
    assert ownerless.spec.owner is None
    assert (
        await sessions.open_session("b", ownerless.session_id)
    ).session_id == ownerless.session_id
    with acting_as("alice"):
        with pytest.raises(NotFound) as caught:
            await sessions.open_session("b", ownerless.session_id)
        assert caught.value.message == SESSION_GONE
        with pytest.raises(NotFound):
            await sessions.cancel_session("b", ownerless.session_id)
        mine = await sessions.start_session(SessionSpec(ObjectRef("b", "m"), PutOptions("t", {})))
        assert mine.spec.owner == "alice"
    with pytest.raises(NotFound):  # nor is alice's visible to a caller without a principal
        await sessions.open_session("b", mine.session_id)


async def test_the_store_decorator_refuses_before_the_store_is_called(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(grant_toml(actions=["read", "delete"], prefixes=["r/"]))
    store = MemoryStore(["b"])
    authorized = AuthorizedStore(store, AccessPolicy(path))
    with acting_as("a"):
        with pytest.raises(PermissionDenied, match="caller 'a' may not write this key"):
            await authorized.put(ObjectRef("b", "r/x"), _nothing(), PutOptions("t", {}))
        with pytest.raises(PermissionDenied, match="may not presign"):
            await authorized.presign(ObjectRef("b", "r/x"), PresignMethod.GET, 60, "")
        results = await authorized.batch_delete("b", [DeleteEntry("s/x"), DeleteEntry("r/x")])
        assert isinstance(results[0], PermissionDenied) and results[1] is None
    with pytest.raises(PermissionDenied, match="this caller may not read"):
        await authorized.head(ObjectRef("b", "r/x"))  # no principal, a policy: denied


async def _nothing() -> AsyncIterator[bytes]:
    for chunk in EMPTY:
        yield chunk


EMPTY: Iterable[bytes] = ()
