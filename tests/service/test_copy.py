"""Copy: within and across buckets, each precondition, metadata kept and
replaced, checksums carried, and the multipart copy path; on the in-memory
store and on both S3s (moto, LocalStack), through a real gateway."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import google_crc32c
import grpc
import pytest

from blobgate.server.app import Gateway, start_gateway
from blobgate.server.storage.factory import memory_config
from blobgate.server.storage.memory.backend import MemoryBackend
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import MiB, download, expect_status, payload, upload

Code = grpc.StatusCode
COPY_THRESHOLD = 5 * MiB  # the smallest setting: larger objects take the multipart path

pytestmark = pytest.mark.both_s3s(memory=True)


@dataclass
class Env:
    kind: str
    gateway: Gateway
    stub: storage_pb2_grpc.StorageServiceStub
    bucket: str
    other: str  # a second allowed bucket


@pytest.fixture
async def env(store_kind: str, s3_endpoint: str, bucket: str) -> AsyncIterator[Env]:
    other = f"{bucket}-other"
    settings = gateway_settings(
        s3_endpoint, bucket, allowed_buckets=[other], copy_threshold=COPY_THRESHOLD
    )
    kind = "memory" if store_kind == "memory" else "s3"
    backend = MemoryBackend(memory_config(settings)) if kind == "memory" else None
    gw = await start_gateway(settings, backend=backend)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            yield Env(kind, gw, storage_pb2_grpc.StorageServiceStub(channel), bucket, other)
    finally:
        await stop_gateway(gw)


async def copy(env: Env, **fields: Any) -> storage_pb2.Object:
    response = await env.stub.Copy(storage_pb2.CopyRequest(**fields), timeout=60)
    return response.object


def crc32c(blob: bytes) -> int:
    return int.from_bytes(google_crc32c.Checksum(blob).digest(), "big")


async def test_copy_within_a_bucket_keeps_content_type_metadata_and_checksums(env: Env) -> None:
    blob = payload(70_000, seed=1)
    source = await upload(
        env.gateway, "src/a.dat", blob, content_type="application/x-a", metadata={"team": "x"}
    )
    copied = await copy(env, source_key="src/a.dat", destination_key="dst/a.dat")
    assert copied.key == "dst/a.dat" and copied.bucket == env.bucket
    assert copied.size == len(blob)
    assert copied.content_type == "application/x-a"
    assert dict(copied.metadata) == {"team": "x"}
    assert copied.checksums.sha256 == hashlib.sha256(blob).digest()
    assert copied.checksums.crc32c == crc32c(blob)
    assert copied.HasField("last_modified")
    got = await download(env.stub, "dst/a.dat")
    assert got.data == blob
    assert got.object.checksums == copied.checksums
    assert dict(got.object.metadata) == {"team": "x"}
    assert got.object.etag == copied.etag
    # The source is untouched.
    stat = await env.stub.Stat(storage_pb2.StatRequest(key="src/a.dat"))
    assert stat.object.etag == source.etag


async def test_copy_across_buckets(env: Env) -> None:
    blob = payload(1234, seed=2)
    await upload(env.gateway, "here.bin", blob)
    copied = await copy(
        env, source_key="here.bin", destination_bucket=env.other, destination_key="there.bin"
    )
    assert copied.bucket == env.other
    got = await download(env.stub, "there.bin", bucket=env.other)
    assert got.data == blob
    assert got.object.checksums.sha256 == hashlib.sha256(blob).digest()
    # And back, naming the source bucket.
    back = await copy(
        env, source_bucket=env.other, source_key="there.bin", destination_key="back.bin"
    )
    assert back.bucket == env.bucket
    assert (await download(env.stub, "back.bin")).data == blob


async def test_replace_metadata_keeps_the_checksums(env: Env, s3: Any) -> None:
    blob = payload(5000, seed=3)
    await upload(env.gateway, "doc.txt", blob, metadata={"old": "1"})
    copied = await copy(
        env,
        source_key="doc.txt",
        destination_key="doc.json",
        replace_metadata=True,
        metadata={"New-Key": "2"},
    )
    assert dict(copied.metadata) == {"new-key": "2"}
    assert copied.content_type == "application/json"  # guessed from the destination key
    assert copied.checksums.sha256 == hashlib.sha256(blob).digest()
    stat = (await env.stub.Stat(storage_pb2.StatRequest(key="doc.json"))).object
    assert dict(stat.metadata) == {"new-key": "2"}
    assert stat.checksums.sha256 == hashlib.sha256(blob).digest()
    assert stat.checksums.crc32c == crc32c(blob)
    if env.kind == "s3":
        head = await s3.head_object(Bucket=env.bucket, Key="doc.json")
        assert head["Metadata"]["sha256"] == hashlib.sha256(blob).hexdigest()
    # Replacing in place, with a content type of its own.
    again = await copy(
        env,
        source_key="doc.json",
        destination_key="doc.json",
        replace_metadata=True,
        content_type="text/x-notes",
    )
    assert again.content_type == "text/x-notes" and dict(again.metadata) == {}
    assert (await download(env.stub, "doc.json")).data == blob


async def test_source_if_match(env: Env) -> None:
    source = await upload(env.gateway, "pinned.bin", b"v1")
    await expect_status(
        Code.FAILED_PRECONDITION,
        copy(env, source_key="pinned.bin", destination_key="p2.bin", source_if_match="0" * 32),
    )
    await expect_status(Code.NOT_FOUND, env.stub.Stat(storage_pb2.StatRequest(key="p2.bin")))
    copied = await copy(
        env, source_key="pinned.bin", destination_key="p2.bin", source_if_match=source.etag
    )
    assert copied.size == 2


async def test_destination_if_none_match_and_if_match(env: Env) -> None:
    await upload(env.gateway, "s.bin", b"source")
    existing = await upload(env.gateway, "d.bin", b"existing")
    await expect_status(
        Code.FAILED_PRECONDITION,
        copy(env, source_key="s.bin", destination_key="d.bin", if_none_match=True),
    )
    await expect_status(
        Code.FAILED_PRECONDITION,
        copy(env, source_key="s.bin", destination_key="d.bin", if_match="0" * 32),
    )
    await expect_status(
        Code.FAILED_PRECONDITION,
        copy(env, source_key="s.bin", destination_key="absent.bin", if_match=existing.etag),
    )
    assert (await download(env.stub, "d.bin")).data == b"existing"
    created = await copy(env, source_key="s.bin", destination_key="new.bin", if_none_match=True)
    assert created.size == 6
    replaced = await copy(env, source_key="s.bin", destination_key="d.bin", if_match=existing.etag)
    assert replaced.etag != existing.etag
    assert (await download(env.stub, "d.bin")).data == b"source"


async def test_bad_requests(env: Env) -> None:
    await upload(env.gateway, "ok.bin", b"x")
    cases: list[tuple[Code, dict[str, Any]]] = [
        (Code.NOT_FOUND, {"source_key": "missing.bin", "destination_key": "d"}),
        (Code.INVALID_ARGUMENT, {"source_key": "", "destination_key": "d"}),
        (Code.INVALID_ARGUMENT, {"source_key": "ok.bin", "destination_key": "/d"}),
        (Code.INVALID_ARGUMENT, {"source_key": "ok.bin", "destination_key": ".blobgate/x"}),
        (Code.PERMISSION_DENIED, {"source_key": "ok.bin", "destination_key": "d",
                                  "destination_bucket": "not-allowed"}),
        (Code.PERMISSION_DENIED, {"source_key": "ok.bin", "destination_key": "d",
                                  "source_bucket": "not-allowed"}),
        (Code.INVALID_ARGUMENT, {"source_key": "ok.bin", "destination_key": "ok.bin"}),
        (Code.INVALID_ARGUMENT, {"source_key": "ok.bin", "destination_key": "d",
                                 "content_type": "text/plain"}),
        (Code.INVALID_ARGUMENT, {"source_key": "ok.bin", "destination_key": "d",
                                 "metadata": {"a": "b"}}),
        (Code.INVALID_ARGUMENT, {"source_key": "ok.bin", "destination_key": "d",
                                 "replace_metadata": True, "metadata": {"sha256": "00"}}),
        (Code.INVALID_ARGUMENT, {"source_key": "ok.bin", "destination_key": "d",
                                 "replace_metadata": True, "content_type": "not a type"}),
        (Code.INVALID_ARGUMENT, {"source_key": "ok.bin", "destination_key": "d",
                                 "if_none_match": True, "if_match": "abc"}),
        (Code.INVALID_ARGUMENT, {"source_key": "ok.bin", "destination_key": "d",
                                 "source_if_match": "with space"}),
    ]  # fmt: skip
    for code, fields in cases:
        error = await expect_status(code, copy(env, **fields))
        assert error.details(), fields
    listing = await env.stub.List(storage_pb2.ListRequest())
    assert [o.key for o in listing.objects] == ["ok.bin"]


async def test_a_large_object_takes_the_multipart_copy_path(env: Env, s3: Any) -> None:
    blob = payload(2 * COPY_THRESHOLD + 12_345, seed=4)
    await upload(env.gateway, "big.bin", blob, metadata={"kind": "big"})
    copied = await copy(
        env, source_key="big.bin", destination_bucket=env.other, destination_key="big-copy.bin"
    )
    assert copied.size == len(blob)
    assert dict(copied.metadata) == {"kind": "big"}
    assert copied.checksums.sha256 == hashlib.sha256(blob).digest()
    got = await download(env.stub, "big-copy.bin", bucket=env.other)
    assert got.data == blob
    assert got.object.checksums.sha256 == hashlib.sha256(blob).digest()
    assert got.object.checksums.crc32c == crc32c(blob)
    if env.kind == "s3":
        # Three UploadPartCopy parts (5 MiB, 5 MiB, the rest), none left over.
        assert copied.etag.endswith("-3"), copied.etag
        assert (await s3.list_multipart_uploads(Bucket=env.other)).get("Uploads", []) == []
    replaced = await copy(
        env,
        source_key="big.bin",
        destination_key="big.dat",
        replace_metadata=True,
        metadata={"kind": "replaced"},
        if_none_match=True,
    )
    assert dict(replaced.metadata) == {"kind": "replaced"}
    assert replaced.content_type == "application/octet-stream"
    stat = (await env.stub.Stat(storage_pb2.StatRequest(key="big.dat"))).object
    assert stat.checksums.sha256 == hashlib.sha256(blob).digest()
    assert dict(stat.metadata) == {"kind": "replaced"}


async def test_a_failed_large_copy_leaves_nothing(env: Env, s3: Any) -> None:
    blob = payload(COPY_THRESHOLD + 1, seed=5)
    await upload(env.gateway, "big.bin", blob)
    await upload(env.gateway, "taken.bin", b"taken")
    await expect_status(
        Code.FAILED_PRECONDITION,
        copy(env, source_key="big.bin", destination_key="taken.bin", if_match="0" * 32),
    )
    assert (await download(env.stub, "taken.bin")).data == b"taken"
    if env.kind == "s3":
        assert (await s3.list_multipart_uploads(Bucket=env.bucket)).get("Uploads", []) == []
