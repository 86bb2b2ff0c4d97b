"""Object versions through a real gateway on a versioned bucket (the
bucket_versioning setting), on both S3s (moto, LocalStack): an overwrite
keeps the old version (Stat, Download and Copy read it), a Delete leaves a
delete marker and a Copy of the old version restores it with its checksums,
a Delete with a version id removes it for good, and the versions listing
pages through every version and marker in S3's order. On an unversioned
bucket and the in-memory store, version ids stay empty."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from xml.etree import ElementTree

import grpc
import pytest

from blobgate.server.app import Gateway, start_gateway
from blobgate.server.core.access_policy import AccessPolicy, Action
from blobgate.server.core.errors import NotFound, PermissionDenied
from blobgate.server.core.identity import acting_as
from blobgate.server.storage.authorization import AuthorizedStore
from blobgate.server.storage.factory import memory_config
from blobgate.server.storage.memory.backend import MemoryBackend
from blobgate.server.storage.memory.store import MemoryStore
from blobgate.server.storage.protocols import (
    NULL_VERSION,
    RESERVED_PREFIX,
    DeleteEntry,
    ObjectRef,
    PutOptions,
)
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import download, expect_status, payload, upload

Code = grpc.StatusCode
pb = storage_pb2


@dataclass
class Env:
    gateway: Gateway
    stub: storage_pb2_grpc.StorageServiceStub
    bucket: str


@pytest.fixture
async def env(store_kind: str, s3_endpoint: str, bucket: str) -> AsyncIterator[Env]:
    """A gateway whose bucket it made versioned (bucket_versioning)."""
    settings = gateway_settings(s3_endpoint, bucket, bucket_versioning=True)
    backend = MemoryBackend(memory_config(settings)) if store_kind == "memory" else None
    gw = await start_gateway(settings, backend=backend)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            yield Env(gw, storage_pb2_grpc.StorageServiceStub(channel), bucket)
    finally:
        await stop_gateway(gw)


async def stat(env: Env, key: str, version_id: str = "") -> storage_pb2.Object:
    response = await env.stub.Stat(pb.StatRequest(key=key, version_id=version_id), timeout=30)
    return response.object


async def all_versions(env: Env, page_size: int = 0, prefix: str = "") -> list[pb.Object]:
    """Every page of the versions listing, with the page sizes checked."""
    found: list[pb.Object] = []
    token = ""
    while True:
        page = await env.stub.List(
            pb.ListRequest(prefix=prefix, versions=True, page_size=page_size, page_token=token),
            timeout=30,
        )
        assert not page_size or len(page.objects) <= page_size
        found.extend(page.objects)
        token = page.next_page_token
        if not token:
            return found


async def s3_versions(
    s3: Any, bucket: str, prefix: str = "", page_size: int = 1000
) -> list[tuple[str, str, bool]]:
    """(key, version id, is a delete marker) of everything S3 keeps, in the
    order of S3's answers (their XML: botocore parses each into two lists),
    asking for pages of ``page_size`` (moto orders its pages otherwise than
    a whole listing)."""
    bodies: list[bytes] = []

    def keep_body(response_dict: dict[str, Any], **_: Any) -> None:
        bodies.append(response_dict["body"])

    s3.meta.events.register("before-parse.s3.ListObjectVersions", keep_body)
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
    try:
        while True:
            page = await s3.list_object_versions(**kwargs)
            if not page.get("IsTruncated"):
                break
            kwargs["KeyMarker"] = page["NextKeyMarker"]
            kwargs["VersionIdMarker"] = page["NextVersionIdMarker"]
    finally:
        s3.meta.events.unregister("before-parse.s3.ListObjectVersions", keep_body)
    found: list[tuple[str, str, bool]] = []
    for body in bodies:
        for child in ElementTree.fromstring(body):
            kind = child.tag.rsplit("}", 1)[-1]
            if kind in {"Version", "DeleteMarker"}:
                fields = {field.tag.rsplit("}", 1)[-1]: field.text or "" for field in child}
                key = unquote(fields["Key"])
                found.append((key, fields["VersionId"], kind == "DeleteMarker"))
    return found


@pytest.mark.both_s3s
async def test_overwrite_keeps_the_old_version_readable(env: Env) -> None:
    first = await upload(env.gateway, "doc.txt", b"first draft")
    second = await upload(env.gateway, "doc.txt", b"second draft, longer")
    assert first.version_id and second.version_id and first.version_id != second.version_id
    current = await stat(env, "doc.txt")
    assert (current.version_id, current.size) == (second.version_id, len(b"second draft, longer"))
    old = await stat(env, "doc.txt", first.version_id)
    assert (old.version_id, old.etag, old.size) == (first.version_id, first.etag, 11)
    assert old.checksums.sha256 == hashlib.sha256(b"first draft").digest()
    got = await download(env.stub, "doc.txt", version_id=first.version_id)
    assert got.data == b"first draft" and got.object.version_id == first.version_id
    # A range of the old version, and its preconditions beside the version id.
    ranged = await download(env.stub, "doc.txt", version_id=first.version_id, offset=6)
    assert ranged.data == b"draft"
    same = await download(env.stub, "doc.txt", version_id=first.version_id, if_match=first.etag)
    assert same.data == b"first draft"
    await expect_status(
        Code.FAILED_PRECONDITION,
        download(env.stub, "doc.txt", version_id=first.version_id, if_match=second.etag),
    )


@pytest.mark.both_s3s
async def test_delete_leaves_a_marker_and_a_copy_of_the_old_version_restores_it(
    env: Env, s3: Any
) -> None:
    blob = payload(3000, seed=7)
    kept = await upload(env.gateway, "notes/a.bin", blob)
    deleted = await env.stub.Delete(pb.DeleteRequest(key="notes/a.bin"), timeout=30)
    assert deleted.delete_marker and deleted.version_id
    await expect_status(Code.NOT_FOUND, stat(env, "notes/a.bin"))
    await expect_status(Code.NOT_FOUND, stat(env, "notes/a.bin", deleted.version_id))
    await expect_status(
        Code.NOT_FOUND, download(env.stub, "notes/a.bin", version_id=deleted.version_id)
    )

    restored = await env.stub.Copy(
        pb.CopyRequest(
            source_key="notes/a.bin",
            source_version_id=kept.version_id,
            destination_key="notes/a.bin",
        ),
        timeout=30,
    )
    new = restored.object
    assert new.version_id not in {"", kept.version_id, deleted.version_id}
    assert new.checksums.sha256 == hashlib.sha256(blob).digest()
    assert new.checksums.crc32c == kept.checksums.crc32c
    assert (await download(env.stub, "notes/a.bin")).data == blob
    described = await stat(env, "notes/a.bin")
    assert described.checksums.sha256 == hashlib.sha256(blob).digest()
    listing = await all_versions(env, prefix="notes/")
    assert [(o.key, o.version_id, o.is_delete_marker) for o in listing] == await s3_versions(
        s3, env.bucket, "notes/"
    )
    # In the order S3 gave (AWS: newest first; moto and LocalStack differ).
    by_id = {o.version_id: o for o in listing}
    assert by_id[new.version_id].is_latest
    assert set(by_id) == {new.version_id, deleted.version_id, kept.version_id}
    marker, old = by_id[deleted.version_id], by_id[kept.version_id]
    assert marker.is_delete_marker and not marker.is_latest and marker.size == 0
    assert marker.etag == "" and marker.content_type == ""
    assert not old.is_delete_marker and old.size == 3000 and old.etag == kept.etag


@pytest.mark.both_s3s
async def test_a_version_id_removes_that_version_for_good(env: Env, s3: Any) -> None:
    one = await upload(env.gateway, "k", b"one")
    two = await upload(env.gateway, "k", b"two")
    await expect_status(
        Code.FAILED_PRECONDITION,
        env.stub.Delete(pb.DeleteRequest(key="k", version_id=one.version_id, if_match=two.etag)),
    )
    gone = await env.stub.Delete(
        pb.DeleteRequest(key="k", version_id=one.version_id, if_match=one.etag), timeout=30
    )
    assert (gone.version_id, gone.delete_marker) == (one.version_id, False)
    await expect_status(Code.NOT_FOUND, stat(env, "k", one.version_id))
    assert (await stat(env, "k")).version_id == two.version_id
    assert await s3_versions(s3, env.bucket, "k") == [("k", two.version_id, False)]
    # BatchDelete takes version ids too: a marker, then the last version.
    marker = await env.stub.Delete(pb.DeleteRequest(key="k"), timeout=30)
    results = await env.stub.BatchDelete(
        pb.BatchDeleteRequest(
            entries=[
                pb.BatchDeleteEntry(key="k", version_id=marker.version_id),
                pb.BatchDeleteEntry(key="k", version_id=two.version_id),
            ]
        ),
        timeout=30,
    )
    assert [r.code for r in results.results] == [0, 0]
    assert await s3_versions(s3, env.bucket, "k") == []


@pytest.mark.both_s3s
@pytest.mark.parametrize("page_size", [1, 2, 3])
async def test_versions_listing_pages_in_s3_order(env: Env, s3: Any, page_size: int) -> None:
    for key, writes in (("a", 3), ("b/x", 1), ("c", 2)):
        for n in range(writes):
            await upload(env.gateway, key, f"{key}-{n}".encode())
    await env.stub.Delete(pb.DeleteRequest(key="a"), timeout=30)
    await env.stub.Delete(pb.DeleteRequest(key="b/x"), timeout=30)
    await s3.put_object(Bucket=env.bucket, Key=f"{RESERVED_PREFIX}mine", Body=b"hidden")
    # The gateway writes its page-token key (a record) at the first listing
    # of many pages: before S3's own listing below, which then sees the same
    # bucket (moto's pages of versions depend on every key in the bucket).
    await env.stub.List(pb.ListRequest(versions=True, page_size=1), timeout=30)

    listing = await all_versions(env, page_size)
    paged = await s3_versions(s3, env.bucket, page_size=page_size)
    expected = [e for e in paged if not e[0].startswith(".")]
    whole = [e for e in await s3_versions(s3, env.bucket) if not e[0].startswith(".")]
    assert sorted(expected) == sorted(whole) and len(set(whole)) == len(whole)
    assert [(o.key, o.version_id, o.is_delete_marker) for o in listing] == expected
    assert len(listing) == 3 + 1 + 1 + 1 + 2
    latest = {o.key: o.is_delete_marker for o in listing if o.is_latest}
    assert latest == {"a": True, "b/x": True, "c": False}

    rolled = await env.stub.List(pb.ListRequest(versions=True, delimiter="/"), timeout=30)
    assert list(rolled.common_prefixes) == ["b/"]
    assert {o.key for o in rolled.objects} == {"a", "c"}


@pytest.mark.both_s3s
async def test_a_versions_page_token_is_bound_to_a_versions_listing(env: Env) -> None:
    for n in range(3):
        await upload(env.gateway, f"k{n}", b"x")
    page = await env.stub.List(pb.ListRequest(versions=True, page_size=1), timeout=30)
    assert page.next_page_token
    await expect_status(
        Code.INVALID_ARGUMENT,
        env.stub.List(pb.ListRequest(page_size=1, page_token=page.next_page_token)),
    )
    plain = await env.stub.List(pb.ListRequest(page_size=1), timeout=30)
    await expect_status(
        Code.INVALID_ARGUMENT,
        env.stub.List(pb.ListRequest(versions=True, page_token=plain.next_page_token)),
    )


@pytest.mark.both_s3s(memory=True)
async def test_version_ids_that_name_nothing(env: Env, store_kind: str) -> None:
    await upload(env.gateway, "k", b"x")
    for bad in ("has space", "\x01", "v" * 1025):
        await expect_status(Code.INVALID_ARGUMENT, stat(env, "k", bad))
    await expect_status(
        Code.INVALID_ARGUMENT,
        env.stub.BatchDelete(pb.BatchDeleteRequest(entries=[pb.BatchDeleteEntry(key="k")] * 2)),
    )
    await expect_status(
        Code.INVALID_ARGUMENT,
        env.stub.Presign(pb.PresignRequest(key="k", method=pb.HTTP_METHOD_PUT, version_id="null")),
    )
    if store_kind != "memory":  # a well-formed id of no version of this key
        listing = await all_versions(env)
        other = await upload(env.gateway, "other", b"y")
        await expect_status(Code.NOT_FOUND, stat(env, "k", other.version_id))
        assert listing[0].version_id


@pytest.mark.both_s3s(memory=True)
async def test_an_unversioned_bucket_has_one_null_version_per_key(
    store_kind: str, s3_endpoint: str, bucket: str, s3: Any
) -> None:
    settings = gateway_settings(s3_endpoint, bucket)
    backend = MemoryBackend(memory_config(settings)) if store_kind == "memory" else None
    gw = await start_gateway(settings, backend=backend)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            env = Env(gw, storage_pb2_grpc.StorageServiceStub(channel), bucket)
            await upload(gw, "k", b"one")
            written = await upload(gw, "k", b"two")
            assert written.version_id == ""
            assert (await stat(env, "k")).version_id == ""
            listing = await all_versions(env)
            assert [(o.key, o.version_id, o.is_latest) for o in listing] == [("k", "null", True)]
            if store_kind != "moto":  # moto refuses versionId=null where AWS takes it
                assert (await stat(env, "k", "null")).size == 3
            done = await env.stub.Delete(pb.DeleteRequest(key="k"), timeout=30)
            assert (done.version_id, done.delete_marker) == ("", False)
            await expect_status(Code.NOT_FOUND, stat(env, "k"))
    finally:
        await stop_gateway(gw)


# --- the purge right ------------------------------------------------------------


async def test_removing_a_version_needs_purge_which_delete_does_not_imply(
    tmp_path: Path,
) -> None:
    store = MemoryStore(["b"])
    await store.put(ObjectRef("b", "k"), _once(b"x"), PutOptions("text/plain", {}))
    path = tmp_path / "policy.toml"
    path.write_text(
        '[[grant]]\nprincipals = ["deleter"]\nbuckets = ["b"]\nprefixes = [""]\n'
        'actions = ["read", "delete"]\n'
        '[[grant]]\nprincipals = ["purger"]\nbuckets = ["b"]\nprefixes = [""]\n'
        'actions = ["purge"]\n'
    )
    authorized = AuthorizedStore(store, AccessPolicy(path))
    version = ObjectRef("b", "k", NULL_VERSION)
    with acting_as("deleter"):
        with pytest.raises(PermissionDenied, match="caller 'deleter' may not purge this key"):
            await authorized.delete(version, "")
        results = await authorized.batch_delete(
            "b", [DeleteEntry("k", version_id=NULL_VERSION), DeleteEntry("gone")]
        )
        assert isinstance(results[0], PermissionDenied) and results[1] is None
        assert (await authorized.head(ObjectRef("b", "k"))).size == 1  # still there
    with acting_as("purger"):
        with pytest.raises(PermissionDenied, match="may not delete"):
            await authorized.delete(ObjectRef("b", "k"), "")  # purge is not delete either
        done = await authorized.delete(version, "")
        assert done.version_id == NULL_VERSION
    with pytest.raises(NotFound):
        await store.head(ObjectRef("b", "k"))
    assert Action("purge") is Action.PURGE


async def _once(blob: bytes) -> AsyncIterator[bytes]:
    yield blob


@pytest.mark.both_s3s
async def test_logs_name_the_versions(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    one = await upload(env.gateway, "k", b"one")
    await upload(env.gateway, "k", b"two")
    await stat(env, "k", one.version_id)
    gone = await env.stub.Delete(pb.DeleteRequest(key="k", version_id=one.version_id))
    assert gone.version_id == one.version_id
    access = [r for r in caplog.records if r.name == "blobgate.access"]
    audit = [r for r in caplog.records if r.name == "blobgate.audit"]
    assert [getattr(r, "version_id", None) for r in access if r.method == "Stat"] == [
        one.version_id
    ]
    uploads = [r for r in audit if r.method == "Upload"]
    assert uploads[0].version_id == one.version_id and all(r.version_id for r in uploads)
    [purge] = [r for r in audit if r.method == "Delete"]
    assert (purge.action, purge.version_id, purge.delete_marker) == (
        "purge",
        one.version_id,
        False,
    )


async def test_metrics_count_markers_and_removed_versions(moto_endpoint: str, bucket: str) -> None:
    settings = gateway_settings(
        moto_endpoint, bucket, bucket_versioning=True, metrics_listen="127.0.0.1:0"
    )
    gw = await start_gateway(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            env = Env(gw, storage_pb2_grpc.StorageServiceStub(channel), bucket)
            one = await upload(gw, "k", b"one")
            await upload(gw, "k", b"two")
            marker = await env.stub.Delete(pb.DeleteRequest(key="k"), timeout=30)
            await env.stub.Delete(pb.DeleteRequest(key="k", version_id=one.version_id))
            await env.stub.BatchDelete(
                pb.BatchDeleteRequest(
                    entries=[pb.BatchDeleteEntry(key="k", version_id=marker.version_id)]
                )
            )
        assert gw.metrics is not None
        registry = gw.metrics.registry
        labels = {"bucket": bucket}
        assert registry.get_sample_value("blobgate_delete_markers_total", labels) == 1
        assert registry.get_sample_value("blobgate_versions_removed_total", labels) == 2
    finally:
        await stop_gateway(gw)
