"""BatchDelete: a result per key for a mix of present, missing and
precondition-failing keys, and the limits on a request; on the in-memory
store and on both S3s (moto, LocalStack), through a real gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from blobgate.client import BlobgateError, Client
from blobgate.server.app import Gateway, start_gateway
from blobgate.server.storage.factory import memory_config
from blobgate.server.storage.memory.backend import MemoryBackend
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import expect_status, upload

Code = grpc.StatusCode

pytestmark = pytest.mark.both_s3s(memory=True)


@pytest.fixture
async def served(
    store_kind: str, s3_endpoint: str, bucket: str
) -> AsyncIterator[tuple[str, Gateway, storage_pb2_grpc.StorageServiceStub]]:
    settings = gateway_settings(s3_endpoint, bucket)
    kind = "memory" if store_kind == "memory" else "s3"
    backend = MemoryBackend(memory_config(settings)) if kind == "memory" else None
    gw = await start_gateway(settings, backend=backend)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            yield kind, gw, storage_pb2_grpc.StorageServiceStub(channel)
    finally:
        await stop_gateway(gw)


def entry(key: str, if_match: str = "") -> storage_pb2.BatchDeleteEntry:
    return storage_pb2.BatchDeleteEntry(key=key, if_match=if_match)


async def batch_delete(
    stub: storage_pb2_grpc.StorageServiceStub, *entries: storage_pb2.BatchDeleteEntry, **fields: Any
) -> list[storage_pb2.BatchDeleteResult]:
    request = storage_pb2.BatchDeleteRequest(entries=entries, **fields)
    response = await stub.BatchDelete(request, timeout=60)
    return list(response.results)


async def keys(stub: storage_pb2_grpc.StorageServiceStub) -> list[str]:
    listing = await stub.List(storage_pb2.ListRequest())
    return [o.key for o in listing.objects]


async def test_a_result_per_key(
    served: tuple[str, Gateway, storage_pb2_grpc.StorageServiceStub], s3: Any, bucket: str
) -> None:
    kind, gw, stub = served
    plain = await upload(gw, "a/plain.txt", b"1")
    guarded = await upload(gw, "a/guarded.txt", b"2")
    stale = await upload(gw, "a/stale.txt", b"3")
    await upload(gw, "a/kept.txt", b"4")
    results = await batch_delete(
        stub,
        entry("a/plain.txt"),
        entry("a/missing.txt"),
        entry("a/guarded.txt", guarded.etag),
        entry("a/stale.txt", plain.etag),  # another object's ETag
        entry("a/gone.txt", stale.etag),  # a condition on a missing key
    )
    assert [r.key for r in results] == [
        "a/plain.txt",
        "a/missing.txt",
        "a/guarded.txt",
        "a/stale.txt",
        "a/gone.txt",
    ]
    codes = [grpc.StatusCode.OK.value[0]] * 3 + [Code.FAILED_PRECONDITION.value[0]] * 2
    assert [r.code for r in results] == codes
    assert [r.message for r in results[:3]] == ["", "", ""]
    # A failed condition reads the same for another ETag and a missing key.
    assert [r.message for r in results[3:]] == ["the object does not match if_match"] * 2
    assert await keys(stub) == ["a/kept.txt", "a/stale.txt"]
    if kind == "s3":
        listing = await s3.list_objects_v2(Bucket=bucket)
        assert sorted(o["Key"] for o in listing["Contents"]) == ["a/kept.txt", "a/stale.txt"]


async def test_a_thousand_keys_in_one_call(
    served: tuple[str, Gateway, storage_pb2_grpc.StorageServiceStub],
) -> None:
    _, gw, stub = served
    for index in range(5):
        await upload(gw, f"many/{index:04}", b"x")
    results = await batch_delete(stub, *(entry(f"many/{i:04}") for i in range(1000)))
    assert len(results) == 1000
    assert all(r.code == 0 for r in results)
    assert await keys(stub) == []


async def test_bad_requests_are_refused_whole(
    served: tuple[str, Gateway, storage_pb2_grpc.StorageServiceStub],
) -> None:
    _, gw, stub = served
    await upload(gw, "stays.txt", b"s")
    too_many = [entry(f"k{i}") for i in range(1001)]
    cases: list[tuple[Code, list[storage_pb2.BatchDeleteEntry], dict[str, Any], str]] = [
        (Code.INVALID_ARGUMENT, too_many, {}, "at most 1000"),
        (Code.INVALID_ARGUMENT, [], {}, "empty"),
        (Code.INVALID_ARGUMENT, [entry("stays.txt"), entry("stays.txt")], {}, "twice"),
        (Code.INVALID_ARGUMENT, [entry("stays.txt"), entry("/bad")], {}, "entries[1]"),
        (Code.INVALID_ARGUMENT, [entry("stays.txt", "with space")], {}, "if_match"),
        (Code.INVALID_ARGUMENT, [entry(".blobgate/uploads/x")], {}, "reserved"),
        (Code.PERMISSION_DENIED, [entry("stays.txt")], {"bucket": "not-allowed"}, "not-allowed"),
    ]
    for code, entries, fields, says in cases:
        error = await expect_status(code, batch_delete(stub, *entries, **fields))
        assert says in (error.details() or ""), (says, error.details())
    assert await keys(stub) == ["stays.txt"]


async def test_an_allowed_bucket_missing_in_s3_is_not_found(s3_endpoint: str, bucket: str) -> None:
    missing = f"{bucket}-missing"
    settings = gateway_settings(
        s3_endpoint, bucket, allowed_buckets=[missing], create_buckets=False
    )
    gw = await start_gateway(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            for entries in ([entry("k")], [entry("k", "abc")]):
                await expect_status(Code.NOT_FOUND, batch_delete(stub, *entries, bucket=missing))
    finally:
        await stop_gateway(gw)


async def test_the_python_client_splits_large_batches_and_copies(
    served: tuple[str, Gateway, storage_pb2_grpc.StorageServiceStub],
) -> None:
    _, gw, stub = served
    async with Client(f"127.0.0.1:{gw.port}") as client:
        first = await client.upload("c/one.txt", b"one")
        copied = await client.copy("c/one.txt", "c/two.txt", if_none_match=True)
        assert copied.sha256 == first.sha256 and copied.key == "c/two.txt"
        with pytest.raises(BlobgateError) as refused:
            await client.copy("c/one.txt", "c/two.txt", if_none_match=True)
        assert refused.value.code == Code.FAILED_PRECONDITION
        keys_to_delete = [f"c/k{i:04}" for i in range(1500)] + ["c/one.txt", "c/two.txt"]
        results = await client.batch_delete(
            keys_to_delete, if_match={"c/two.txt": first.etag + "0"}
        )
        assert [r.key for r in results] == keys_to_delete
        assert all(r.deleted for r in results[:-1])
        assert results[-1].code == Code.FAILED_PRECONDITION and not results[-1].deleted
    assert await keys(stub) == ["c/two.txt"]
