"""List (paging, delimiters, tokens), Stat and Delete."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from blobgate.v1 import storage_pb2
from tests.support.helpers import Code, download, expect_status, sha256, upload


async def _put(s3: Any, bucket: str, keys: list[str]) -> None:
    await asyncio.gather(
        *(s3.put_object(Bucket=bucket, Key=key, Body=key.encode()) for key in keys)
    )


async def _list(stub: Any, **fields: Any) -> storage_pb2.ListResponse:
    return await stub.List(storage_pb2.ListRequest(**fields), timeout=10)


# --- List ----------------------------------------------------------------------


async def test_list_pages_visit_every_key_once(stub: Any, s3: Any, bucket: str) -> None:
    keys = [f"many/{i:03d}.txt" for i in range(25)]
    await _put(s3, bucket, [*keys, "other/outside.txt"])

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await _list(stub, prefix="many/", page_size=10, page_token=token)
        pages += 1
        assert len(page.objects) <= 10
        seen.extend(o.key for o in page.objects)
        token = page.next_page_token
        if not token:
            break
        assert pages < 10, "paging does not end"
    assert sorted(seen) == keys
    assert len(seen) == len(set(seen))
    assert pages == 3


async def test_list_object_fields(gateway: Any, stub: Any, bucket: str) -> None:
    obj = await upload(gateway, "fields/a.json", b"[1, 2, 3]")
    page = await _list(stub, prefix="fields/")
    assert page.next_page_token == ""
    [listed] = page.objects
    assert listed.bucket == bucket
    assert listed.key == "fields/a.json"
    assert listed.size == 9
    assert listed.etag == obj.etag
    assert '"' not in listed.etag
    assert listed.content_type == "application/json"
    assert listed.HasField("last_modified")


async def test_list_with_delimiter(stub: Any, s3: Any, bucket: str) -> None:
    await _put(s3, bucket, ["a/1", "a/2", "a/deep/3", "b/1", "top.txt", "zed"])
    page = await _list(stub, delimiter="/")
    assert sorted(o.key for o in page.objects) == ["top.txt", "zed"]
    assert sorted(page.common_prefixes) == ["a/", "b/"]

    page = await _list(stub, prefix="a/", delimiter="/")
    assert sorted(o.key for o in page.objects) == ["a/1", "a/2"]
    assert list(page.common_prefixes) == ["a/deep/"]

    page = await _list(stub, prefix="a/")
    assert sorted(o.key for o in page.objects) == ["a/1", "a/2", "a/deep/3"]
    assert list(page.common_prefixes) == []


async def test_list_common_prefixes_page_too(stub: Any, s3: Any, bucket: str) -> None:
    keys = [f"dirs/d{i}/f" for i in range(5)] + ["dirs/x", "dirs/y"]
    await _put(s3, bucket, keys)
    prefixes: list[str] = []
    objects: list[str] = []
    token = ""
    for _ in range(10):
        page = await _list(stub, prefix="dirs/", delimiter="/", page_size=2, page_token=token)
        prefixes.extend(page.common_prefixes)
        objects.extend(o.key for o in page.objects)
        token = page.next_page_token
        if not token:
            break
    assert token == ""
    assert sorted(prefixes) == [f"dirs/d{i}/" for i in range(5)]
    assert sorted(objects) == ["dirs/x", "dirs/y"]


async def test_list_empty_bucket(stub: Any) -> None:
    page = await _list(stub)
    assert list(page.objects) == []
    assert list(page.common_prefixes) == []
    assert page.next_page_token == ""


async def test_list_page_size_limits(stub: Any, s3: Any, bucket: str) -> None:
    await _put(s3, bucket, ["one", "two"])
    assert len((await _list(stub, page_size=1000)).objects) == 2
    assert len((await _list(stub, page_size=0)).objects) == 2
    await expect_status(Code.INVALID_ARGUMENT, _list(stub, page_size=1001))
    await expect_status(Code.INVALID_ARGUMENT, _list(stub, page_size=-1))


@pytest.mark.parametrize("token", ["garbage!", "AAAA", "x" * 300])
async def test_list_garbage_token(stub: Any, token: str) -> None:
    await expect_status(Code.INVALID_ARGUMENT, _list(stub, page_token=token))


async def test_list_token_from_another_listing(stub: Any, s3: Any, bucket: str) -> None:
    await _put(s3, bucket, [f"p/{i}" for i in range(3)] + [f"q/{i}" for i in range(3)])
    page = await _list(stub, prefix="p/", page_size=1)
    token = page.next_page_token
    assert token
    await expect_status(
        Code.INVALID_ARGUMENT, _list(stub, prefix="q/", page_size=1, page_token=token)
    )
    # The same token is fine with the listing it came from.
    again = await _list(stub, prefix="p/", page_size=1, page_token=token)
    assert [o.key for o in again.objects] == ["p/1"]


# --- Stat ----------------------------------------------------------------------


async def test_stat_fields(gateway: Any, stub: Any, bucket: str) -> None:
    blob = b"stat me"
    obj = await upload(
        gateway, "stat/me.bin", blob, content_type="application/x-stat", metadata={"Who": "me"}
    )
    stat = (await stub.Stat(storage_pb2.StatRequest(key="stat/me.bin"), timeout=10)).object
    assert stat.bucket == bucket
    assert stat.key == "stat/me.bin"
    assert stat.size == len(blob)
    assert stat.etag == obj.etag
    assert '"' not in stat.etag
    assert stat.content_type == "application/x-stat"
    assert stat.metadata["who"] == "me"
    assert stat.checksums.sha256 == sha256(blob)
    modified = stat.last_modified.ToDatetime(tzinfo=UTC)
    assert abs(datetime.now(UTC) - modified) < timedelta(minutes=2)


async def test_stat_missing_key(stub: Any) -> None:
    await expect_status(Code.NOT_FOUND, stub.Stat(storage_pb2.StatRequest(key="nope"), timeout=10))


# --- Delete --------------------------------------------------------------------


async def _stat(stub: Any, key: str) -> Any:
    return await stub.Stat(storage_pb2.StatRequest(key=key), timeout=10)


async def test_delete_removes(gateway: Any, stub: Any, s3: Any, bucket: str) -> None:
    await upload(gateway, "doomed.txt", b"bye")
    await stub.Delete(storage_pb2.DeleteRequest(key="doomed.txt"), timeout=10)
    await expect_status(Code.NOT_FOUND, _stat(stub, "doomed.txt"))
    await expect_status(Code.NOT_FOUND, download(stub, "doomed.txt"))
    listing = await s3.list_objects_v2(Bucket=bucket)
    assert listing.get("Contents", []) == []


async def test_delete_missing_key_is_ok(stub: Any) -> None:
    await stub.Delete(storage_pb2.DeleteRequest(key="never/was"), timeout=10)


@pytest.mark.both_s3s
async def test_delete_if_match(gateway: Any, stub: Any) -> None:
    obj = await upload(gateway, "guarded.txt", b"keep me")
    await expect_status(
        Code.FAILED_PRECONDITION,
        stub.Delete(storage_pb2.DeleteRequest(key="guarded.txt", if_match="0" * 32), timeout=10),
    )
    assert (await _stat(stub, "guarded.txt")).object.etag == obj.etag
    assert (await download(stub, "guarded.txt")).data == b"keep me"

    await stub.Delete(storage_pb2.DeleteRequest(key="guarded.txt", if_match=obj.etag), timeout=10)
    await expect_status(Code.NOT_FOUND, _stat(stub, "guarded.txt"))
