"""Tags, storage classes and lifetimes through a real gateway: set on
Upload, Copy and SetTags, read back by Stat (include_tags) and List,
checked as S3 checks them; on the in-memory store and on both S3s."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from blobgate.server.app import Gateway, start_gateway
from blobgate.server.core.access_policy import AccessPolicy
from blobgate.server.core.errors import PermissionDenied
from blobgate.server.core.identity import acting_as
from blobgate.server.core.tags import EXPIRY_TAG
from blobgate.server.storage.authorization import AuthorizedStore
from blobgate.server.storage.factory import memory_config
from blobgate.server.storage.memory.backend import MemoryBackend
from blobgate.server.storage.memory.store import MemoryStore
from blobgate.server.storage.protocols import ObjectRef, PutOptions
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import (
    MiB,
    download,
    eventually,
    expect_status,
    lines_of,
    payload,
    upload,
)

Code = grpc.StatusCode
pb = storage_pb2
COPY_THRESHOLD = 5 * MiB

pytestmark = pytest.mark.both_s3s(memory=True)


@dataclass
class Env:
    kind: str
    gateway: Gateway
    stub: storage_pb2_grpc.StorageServiceStub
    bucket: str


@pytest.fixture
async def env(store_kind: str, s3_endpoint: str, bucket: str) -> AsyncIterator[Env]:
    settings = gateway_settings(
        s3_endpoint, bucket, copy_threshold=COPY_THRESHOLD, expiry_days_allowed=[1, 30]
    )
    backend = MemoryBackend(memory_config(settings)) if store_kind == "memory" else None
    gw = await start_gateway(settings, backend=backend)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            yield Env(store_kind, gw, storage_pb2_grpc.StorageServiceStub(channel), bucket)
    finally:
        await stop_gateway(gw)


async def stat(env: Env, key: str, *, include_tags: bool = True) -> pb.Object:
    request = pb.StatRequest(key=key, include_tags=include_tags)
    return (await env.stub.Stat(request, timeout=30)).object


async def copy(env: Env, **fields: Any) -> pb.Object:
    return (await env.stub.Copy(pb.CopyRequest(**fields), timeout=60)).object


async def test_tags_round_trip_and_only_when_asked(env: Env) -> None:
    tags = {"team": "data", "Projekt": "Größe 2/3", "empty": "", "a+b=c": "x@y:z_1.0-2"}
    await upload(env.gateway, "t/a.txt", b"hello", tags=tags)
    assert dict((await stat(env, "t/a.txt")).tags) == tags
    assert dict((await stat(env, "t/a.txt", include_tags=False)).tags) == {}


async def test_ten_tags_pass_eleven_and_bad_keys_are_refused(env: Env) -> None:
    ten = {f"k{i}": str(i) for i in range(10)}
    await upload(env.gateway, "ten", b"x", tags=ten)
    assert dict((await stat(env, "ten")).tags) == ten
    error = await expect_status(
        Code.INVALID_ARGUMENT, upload(env.gateway, "eleven", b"x", tags={**ten, "k10": "10"})
    )
    assert "at most 10" in error.details()
    for bad, words in [
        ({"aws:owner": "me"}, "aws:"),
        ({"semi;colon": "v"}, "character"),
        ({"k": "v" * 257}, "256"),
        ({"k" * 129: "v"}, "128"),
        ({EXPIRY_TAG: "30"}, "expire_days"),
    ]:
        error = await expect_status(
            Code.INVALID_ARGUMENT, upload(env.gateway, "bad", b"x", tags=bad)
        )
        assert words in error.details()
    # The expiry tag takes one of the ten.
    error = await expect_status(
        Code.INVALID_ARGUMENT, upload(env.gateway, "ten-and-days", b"x", tags=ten, expire_days=30)
    )
    assert "at most 9" in error.details()
    await expect_status(Code.NOT_FOUND, stat(env, "bad"))


async def test_expire_days_must_be_allowed_and_sets_the_expiry_tag(env: Env) -> None:
    error = await expect_status(
        Code.INVALID_ARGUMENT, upload(env.gateway, "soon", b"x", expire_days=2)
    )
    assert "1, 30" in error.details()
    await upload(env.gateway, "soon", b"x", expire_days=30, tags={"a": "b"})
    assert dict((await stat(env, "soon")).tags) == {"a": "b", EXPIRY_TAG: "30"}


async def test_set_tags_replaces_the_callers_tags_and_keeps_the_lifetime(env: Env) -> None:
    put = await upload(env.gateway, "s.txt", b"body", tags={"old": "1"}, expire_days=1)
    response = await env.stub.SetTags(
        pb.SetTagsRequest(key="s.txt", tags={"new": "2"}, if_match=put.etag), timeout=30
    )
    assert dict(response.object.tags) == {"new": "2", EXPIRY_TAG: "1"}
    assert response.object.etag == put.etag  # tags are not the object's bytes
    assert dict((await stat(env, "s.txt")).tags) == {"new": "2", EXPIRY_TAG: "1"}
    await expect_status(
        Code.FAILED_PRECONDITION,
        env.stub.SetTags(pb.SetTagsRequest(key="s.txt", tags={}, if_match="nope"), timeout=30),
    )
    await expect_status(
        Code.INVALID_ARGUMENT,
        env.stub.SetTags(pb.SetTagsRequest(key="s.txt", tags={"aws:x": "1"}), timeout=30),
    )
    await expect_status(
        Code.NOT_FOUND, env.stub.SetTags(pb.SetTagsRequest(key="missing", tags={}), timeout=30)
    )
    assert (await download(env.stub, "s.txt")).data == b"body"


@pytest.mark.parametrize("size", [1000, COPY_THRESHOLD + 1], ids=["single", "multipart"])
async def test_copy_keeps_or_replaces_tags(env: Env, size: int) -> None:
    await upload(env.gateway, "src", payload(size), tags={"keep": "me"}, expire_days=30)
    kept = await copy(env, source_key="src", destination_key="kept")
    assert kept.storage_class == "STANDARD"
    assert dict((await stat(env, "kept")).tags) == {"keep": "me", EXPIRY_TAG: "30"}
    await copy(env, source_key="src", destination_key="shorter", expire_days=1)
    assert dict((await stat(env, "shorter")).tags) == {"keep": "me", EXPIRY_TAG: "1"}
    await copy(env, source_key="src", destination_key="new", replace_tags=True, tags={"n": "1"})
    assert dict((await stat(env, "new")).tags) == {"n": "1"}
    await copy(env, source_key="src", destination_key="none", replace_tags=True)
    assert dict((await stat(env, "none")).tags) == {}
    error = await expect_status(
        Code.INVALID_ARGUMENT, copy(env, source_key="src", destination_key="x", tags={"a": "b"})
    )
    assert "replace_tags" in error.details()


async def test_storage_class_set_and_reported_by_stat_and_list(env: Env) -> None:
    put = await upload(env.gateway, "c/ia", b"x", storage_class="standard_ia")
    assert put.storage_class == "STANDARD_IA"
    await upload(env.gateway, "c/std", b"y")
    assert (await stat(env, "c/ia")).storage_class == "STANDARD_IA"
    assert (await stat(env, "c/std")).storage_class == "STANDARD"
    listed = await env.stub.List(pb.ListRequest(prefix="c/"), timeout=30)
    assert {o.key: o.storage_class for o in listed.objects} == {
        "c/ia": "STANDARD_IA",
        "c/std": "STANDARD",
    }
    # A copy in place changes the class.
    moved = await copy(env, source_key="c/std", destination_key="c/std", storage_class="ONEZONE_IA")
    assert moved.storage_class == "ONEZONE_IA"
    assert (await stat(env, "c/std")).storage_class == "ONEZONE_IA"
    error = await expect_status(
        Code.INVALID_ARGUMENT, upload(env.gateway, "c/bad", b"x", storage_class="COLD")
    )
    assert "GLACIER" in error.details()


async def test_resumable_upload_carries_tags_and_class(env: Env) -> None:
    spec = pb.UploadSpec(key="r.bin", tags={"via": "session"}, storage_class="GLACIER_IR")
    started = await env.stub.StartResumableUpload(
        pb.StartResumableUploadRequest(spec=spec), timeout=30
    )
    requests = [
        pb.UploadRequest(resume=pb.UploadResume(upload_id=started.upload_id)),
        pb.UploadRequest(data=b"resumed"),
    ]
    response = await env.stub.Upload(iter(requests), timeout=60)
    assert response.object.storage_class == "GLACIER_IR"
    got = await stat(env, "r.bin")
    assert dict(got.tags) == {"via": "session"}
    assert got.storage_class == "GLACIER_IR"


async def test_download_of_an_archived_object_says_to_restore_it(env: Env) -> None:
    """S3 (moto and LocalStack alike) refuses a GET of a GLACIER object with
    InvalidObjectState; the in-memory store does as S3 does."""
    await upload(env.gateway, "cold", b"frozen", storage_class="GLACIER")
    # Without tags: moto refuses GetObjectTagging of a GLACIER object too.
    assert (await stat(env, "cold", include_tags=False)).storage_class == "GLACIER"
    error = await expect_status(Code.FAILED_PRECONDITION, download(env.stub, "cold"))
    assert "archived" in error.details() and "restore" in error.details()


async def test_set_tags_is_audited_as_a_write_and_stat_tags_is_not(
    gateway: Gateway, stub: storage_pb2_grpc.StorageServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="blobgate.audit")
    await upload(gateway, "audited", b"x")
    await stub.Stat(pb.StatRequest(key="audited", include_tags=True), timeout=30)
    await stub.SetTags(pb.SetTagsRequest(key="audited", tags={"a": "b"}), timeout=30)

    async def written() -> None:
        assert [line["method"] for line in lines_of(caplog, "blobgate.audit")] == [
            "Upload",
            "SetTags",
        ]

    await eventually(written)
    line = lines_of(caplog, "blobgate.audit")[-1]
    assert (line["action"], line["key"], line["outcome"]) == ("write", "audited", "OK")


async def test_set_tags_needs_write_and_stat_tags_needs_read(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[[grant]]\nprincipals = ["reader"]\nbuckets = ["b"]\nprefixes = [""]\n'
        'actions = ["read"]\n'
        '[[grant]]\nprincipals = ["writer"]\nbuckets = ["b"]\nprefixes = [""]\n'
        'actions = ["write"]\n'
    )
    store = MemoryStore(["b"])
    ref = ObjectRef("b", "k")
    await store.put(ref, _body(b"x"), PutOptions("text/plain", {}, tags={"t": "1"}))
    authorized = AuthorizedStore(store, AccessPolicy(policy))
    with acting_as("reader"):
        assert await authorized.get_tags(ref) == {"t": "1"}
        with pytest.raises(PermissionDenied, match="caller 'reader' may not write"):
            await authorized.set_tags(ref, {"t": "2"}, "")
    with acting_as("writer"):
        with pytest.raises(PermissionDenied, match="caller 'writer' may not read"):
            await authorized.get_tags(ref)
        assert (await authorized.set_tags(ref, {"t": "2"}, "")).tags == {"t": "2"}


async def _body(blob: bytes) -> AsyncIterator[bytes]:
    yield blob


async def test_a_copy_in_place_changes_only_tags_or_lifetime(env: Env) -> None:
    put = await upload(
        env.gateway, "in-place", b"same", tags={"a": "1"}, metadata={"m": "v"}, content_type="x/y"
    )
    await copy(env, source_key="in-place", destination_key="in-place", expire_days=30)
    got = await stat(env, "in-place")
    assert dict(got.tags) == {"a": "1", EXPIRY_TAG: "30"}
    assert (dict(got.metadata), got.content_type) == ({"m": "v"}, "x/y")
    assert got.checksums == put.checksums
    await copy(env, source_key="in-place", destination_key="in-place", replace_tags=True)
    assert dict((await stat(env, "in-place")).tags) == {}
    assert (await download(env.stub, "in-place")).data == b"same"
