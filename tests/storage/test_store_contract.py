"""The ObjectStore contract: every test runs against the in-memory store and
against the S3 store on moto and on LocalStack (see contract_stores), so
they cannot drift apart."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import google_crc32c
import pytest

from blobgate.server.core.errors import (
    BucketNotFound,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
)
from blobgate.server.storage.memory.store import MemoryStore
from blobgate.server.storage.protocols import (
    ByteRange,
    Chunk,
    ContentChecksums,
    ObjectRef,
    SessionSpec,
    StoredObject,
)
from tests.support.contract_stores import (
    BLOB,
    PART,
    SIZE,
    Boom,
    Stores,
    body,
    broken,
    keys,
    md5,
    options,
    put,
    read,
    sums,
)
from tests.support.helpers import RANGES, MiB, payload

pytestmark = pytest.mark.both_s3s(memory=True)


# --- put, head, open -----------------------------------------------------------


def assert_same_object(stored: StoredObject, written: StoredObject) -> None:
    """What a read says of an object is what its write said, but for the
    time: where a store's answer to PutObject carries no Last-Modified, the
    write's is the answer's Date, which can be a second later than the
    object's (commit.write_time), never earlier."""
    assert replace(written, last_modified=stored.last_modified) == stored
    assert stored.last_modified is not None and written.last_modified is not None
    assert timedelta(0) <= written.last_modified - stored.last_modified <= timedelta(seconds=1)


async def test_put_describes_what_head_and_open_return(stores: Stores) -> None:
    meta = {"owner": "alice", "build-id": "42"}
    info = await put(stores, "docs/report.txt", BLOB, content_type="text/x-report", metadata=meta)
    assert (info.bucket, info.key, info.size) == (stores.bucket, "docs/report.txt", SIZE)
    assert info.etag == md5(BLOB)  # S3's ETag of an object stored in one piece
    assert info.content_type == "text/x-report"
    assert dict(info.metadata) == meta
    assert info.checksums == sums(BLOB)
    assert info.last_modified is not None
    assert abs(datetime.now(UTC) - info.last_modified) < timedelta(minutes=2)

    head = await stores.objects.head(stores.ref("docs/report.txt"))
    assert_same_object(head, info)
    assert await read(stores, "docs/report.txt") == BLOB
    reader = await stores.objects.open(stores.ref("docs/report.txt"), ByteRange(), "")
    assert_same_object(reader.info, info)
    await reader.close()
    await reader.close()  # safe twice


async def test_an_empty_object(stores: Stores) -> None:
    info = await put(stores, "empty.bin", b"")
    assert info.size == 0
    assert info.etag == md5(b"")
    assert info.checksums == sums(b"")
    assert (await stores.objects.head(stores.ref("empty.bin"))).size == 0
    assert await read(stores, "empty.bin") == b""
    assert await read(stores, "empty.bin", offset=-5) == b""
    with pytest.raises(OutOfRange):
        await read(stores, "empty.bin", offset=1)


@pytest.mark.parametrize(("offset", "limit", "expected"), RANGES)
async def test_ranged_reads(stores: Stores, offset: int, limit: int, expected: bytes) -> None:
    info = await put(stores, "ranged.bin", BLOB)
    reader = await stores.objects.open(stores.ref("ranged.bin"), ByteRange(offset, limit), "")
    assert reader.info.size == SIZE  # the object, not the range
    assert reader.info.etag == info.etag
    await reader.close()
    assert await read(stores, "ranged.bin", offset, limit) == expected


@pytest.mark.parametrize("offset", [SIZE + 1, SIZE * 10])
async def test_an_offset_past_the_end_is_out_of_range(stores: Stores, offset: int) -> None:
    await put(stores, "ranged.bin", BLOB)
    with pytest.raises(OutOfRange):
        await read(stores, "ranged.bin", offset)


async def test_open_if_match(stores: Stores) -> None:
    info = await put(stores, "guarded.bin", BLOB)
    assert await read(stores, "guarded.bin", if_match=info.etag) == BLOB
    assert await read(stores, "guarded.bin", if_match=f'"{info.etag}"') == BLOB
    with pytest.raises(FailedPrecondition):
        await read(stores, "guarded.bin", if_match="0" * 32)
    with pytest.raises(FailedPrecondition):  # even where the range is empty
        await read(stores, "guarded.bin", offset=SIZE, if_match="0" * 32)


async def test_missing_keys_are_not_found(stores: Stores) -> None:
    with pytest.raises(NotFound):
        await stores.objects.head(stores.ref("no/such.bin"))
    with pytest.raises(NotFound):
        await read(stores, "no/such.bin")


async def test_a_plain_put_replaces(stores: Stores) -> None:
    await put(stores, "again.bin", b"one")
    info = await put(stores, "again.bin", b"two!")
    assert info.etag == md5(b"two!")
    assert await read(stores, "again.bin") == b"two!"
    assert await keys(stores) == ["again.bin"]


async def test_a_bucket_that_does_not_exist(stores: Stores) -> None:
    ref = ObjectRef("no-such-bucket-here", "k")
    with pytest.raises(BucketNotFound):
        await stores.objects.put(ref, body(b"x"), options())
    with pytest.raises(BucketNotFound):
        await stores.objects.list_page(ref.bucket, "", "", 10, "")
    with pytest.raises(BucketNotFound):
        await stores.objects.open(ref, ByteRange(), "")
    with pytest.raises(NotFound):  # S3 answers a HEAD without saying which is missing
        await stores.objects.head(ref)
    with pytest.raises(BucketNotFound):
        await stores.sessions.start_session(SessionSpec(ref, options()))


async def test_check_answers(stores: Stores) -> None:
    await stores.objects.check()


# --- preconditions -------------------------------------------------------------


async def test_if_none_match(stores: Stores) -> None:
    assert (await put(stores, "fresh.bin", b"first", if_none_match=True)).size == 5
    with pytest.raises(FailedPrecondition):
        await put(stores, "fresh.bin", b"second", if_none_match=True)
    assert await read(stores, "fresh.bin") == b"first"


async def test_if_match(stores: Stores) -> None:
    old = await put(stores, "guarded.bin", b"old contents")
    with pytest.raises(FailedPrecondition):
        await put(stores, "guarded.bin", b"lost", if_match="0" * 32)
    assert await stores.objects.head(stores.ref("guarded.bin")) == old
    new = await put(stores, "guarded.bin", b"new contents!", if_match=old.etag)
    assert new.etag != old.etag
    assert await read(stores, "guarded.bin") == b"new contents!"
    with pytest.raises(FailedPrecondition):  # no object has that etag any more
        await put(stores, "guarded.bin", b"late", if_match=old.etag)


async def test_if_match_on_a_missing_key(stores: Stores) -> None:
    with pytest.raises(FailedPrecondition):
        await put(stores, "absent.bin", b"data", if_match="0" * 32)
    assert await keys(stores) == []


async def test_if_none_match_is_checked_again_at_commit(stores: Stores) -> None:
    async def racing() -> AsyncIterator[Chunk]:
        yield b"the loser "
        await put(stores, "race.bin", b"the winner")  # lands while this one streams
        yield b"finishes"

    with pytest.raises(FailedPrecondition):
        await stores.objects.put(stores.ref("race.bin"), racing(), options(if_none_match=True))
    assert await read(stores, "race.bin") == b"the winner"


async def test_if_match_is_checked_again_at_commit(stores: Stores) -> None:
    old = await put(stores, "race.bin", b"original")

    async def racing() -> AsyncIterator[Chunk]:
        yield b"the loser "
        await put(stores, "race.bin", b"the winner")
        yield b"finishes"

    with pytest.raises(FailedPrecondition):
        await stores.objects.put(stores.ref("race.bin"), racing(), options(if_match=old.etag))
    assert await read(stores, "race.bin") == b"the winner"


# --- checksums and failed bodies -----------------------------------------------


@pytest.mark.parametrize("size", [SIZE, PART + 7], ids=["small", "past-a-part"])
async def test_vouched_checksums_are_verified_and_stored(stores: Stores, size: int) -> None:
    data = payload(size, seed=size)
    info = await put(stores, "verified.bin", data, known=sums(data))
    assert info.checksums == sums(data)
    assert (await stores.objects.head(stores.ref("verified.bin"))).checksums == sums(data)
    assert await read(stores, "verified.bin", chunk=MiB) == data


@pytest.mark.parametrize(
    "known",
    [
        ContentChecksums(sha256=hashlib.sha256(b"other").digest()),
        ContentChecksums(crc32c=(google_crc32c.value(BLOB) + 1) % 2**32),
        ContentChecksums(sha256=hashlib.sha256(BLOB).digest(), crc32c=0),
    ],
    ids=["sha256", "crc32c", "crc32c-with-right-sha256"],
)
async def test_a_checksum_mismatch_stores_nothing(stores: Stores, known: ContentChecksums) -> None:
    with pytest.raises(InvalidArgument, match="mismatch"):
        await put(stores, "bad.bin", BLOB, known=known)
    with pytest.raises(NotFound):
        await stores.objects.head(stores.ref("bad.bin"))
    old = await put(stores, "kept.bin", b"kept")
    with pytest.raises(InvalidArgument, match="mismatch"):
        await put(stores, "kept.bin", BLOB, known=known)
    assert await stores.objects.head(stores.ref("kept.bin")) == old


@pytest.mark.parametrize("sent", [SIZE, PART + MiB], ids=["small", "past-a-part"])
async def test_a_body_that_fails_leaves_nothing(stores: Stores, sent: int) -> None:
    data = payload(sent)
    with pytest.raises(Boom):
        await stores.objects.put(
            stores.ref("broken.bin"), broken(data[:MiB], data[MiB:]), options()
        )
    with pytest.raises(NotFound):
        await stores.objects.head(stores.ref("broken.bin"))
    assert await keys(stores) == []


async def test_a_body_that_fails_leaves_the_old_object(stores: Stores) -> None:
    old = await put(stores, "kept.bin", b"the original", content_type="text/plain")
    with pytest.raises(Boom):
        await stores.objects.put(stores.ref("kept.bin"), broken(b"half of the new"), options())
    assert await stores.objects.head(stores.ref("kept.bin")) == old
    assert await read(stores, "kept.bin") == b"the original"


# --- delete --------------------------------------------------------------------


async def test_delete(stores: Stores) -> None:
    await put(stores, "doomed.txt", b"bye")
    await stores.objects.delete(stores.ref("doomed.txt"), "")
    with pytest.raises(NotFound):
        await stores.objects.head(stores.ref("doomed.txt"))
    assert await keys(stores) == []
    await stores.objects.delete(stores.ref("doomed.txt"), "")  # a missing key is fine
    await stores.objects.delete(stores.ref("never/was"), "")


async def test_delete_if_match(stores: Stores) -> None:
    info = await put(stores, "guarded.txt", b"keep me")
    with pytest.raises(FailedPrecondition):
        await stores.objects.delete(stores.ref("guarded.txt"), "0" * 32)
    assert await stores.objects.head(stores.ref("guarded.txt")) == info
    await stores.objects.delete(stores.ref("guarded.txt"), info.etag)
    assert await keys(stores) == []
    with pytest.raises(FailedPrecondition):  # nothing has that etag any more
        await stores.objects.delete(stores.ref("guarded.txt"), info.etag)


# --- list ----------------------------------------------------------------------


async def _put_keys(stores: Stores, names: list[str]) -> None:
    for name in names:
        await put(stores, name, name.encode())


async def _walk(
    stores: Stores, prefix: str = "", delimiter: str = "", page_size: int = 1000
) -> tuple[list[str], list[str], int]:
    """Every page of a listing: keys and common prefixes in order, and the page count."""
    names: list[str] = []
    prefixes: list[str] = []
    token, pages = "", 0
    while True:
        page = await stores.objects.list_page(stores.bucket, prefix, delimiter, page_size, token)
        pages += 1
        assert len(page.objects) + len(page.common_prefixes) <= page_size
        names += [o.key for o in page.objects]
        prefixes += page.common_prefixes
        token = page.next_token
        if not token:
            return names, prefixes, pages
        assert pages < 50, "paging does not end"


async def test_list_pages_visit_every_key_once_in_order(stores: Stores) -> None:
    names = [f"many/{i:03d}.txt" for i in range(25)]
    await _put_keys(stores, [*reversed(names), "other/outside.txt", "man"])
    assert await _walk(stores, "many/", page_size=10) == (names, [], 3)
    assert await _walk(stores, "many/", page_size=25) == (names, [], 1)
    assert (await _walk(stores, page_size=7))[0] == ["man", *names, "other/outside.txt"]


async def test_listed_objects(stores: Stores) -> None:
    info = await put(stores, "fields/a.json", b"[1, 2, 3]", content_type="application/json")
    page = await stores.objects.list_page(stores.bucket, "fields/", "", 10, "")
    assert page.next_token == ""
    [listed] = page.objects
    assert (listed.bucket, listed.key, listed.size, listed.etag) == (
        stores.bucket,
        "fields/a.json",
        9,
        info.etag,
    )
    assert listed.content_type == ""  # S3 lists no content type: left to the caller
    assert listed.last_modified is not None


async def test_list_with_a_delimiter(stores: Stores) -> None:
    await _put_keys(stores, ["a/1", "a/2", "a/deep/3", "b/1", "top.txt", "zed"])
    assert await _walk(stores, delimiter="/") == (["top.txt", "zed"], ["a/", "b/"], 1)
    assert await _walk(stores, "a/", "/") == (["a/1", "a/2"], ["a/deep/"], 1)
    assert await _walk(stores, "a/") == (["a/1", "a/2", "a/deep/3"], [], 1)


async def test_common_prefixes_page_too(stores: Stores) -> None:
    await _put_keys(stores, [*(f"dirs/d{i}/f{j}" for i in range(5) for j in range(2)), "dirs/x"])
    names, prefixes, pages = await _walk(stores, "dirs/", "/", page_size=2)
    assert prefixes == [f"dirs/d{i}/" for i in range(5)]
    assert names == ["dirs/x"]
    assert pages == 3


async def test_an_empty_listing(stores: Stores) -> None:
    page = await stores.objects.list_page(stores.bucket, "", "/", 10, "")
    assert (page.objects, page.common_prefixes, page.next_token) == ([], [], "")


async def test_session_records_are_never_listed(stores: Stores) -> None:
    await stores.sessions.start_session(SessionSpec(stores.ref("pending.bin"), options()))
    await put(stores, "visible.txt", b"x")
    await put(stores, ".blobgate/written-directly", b"x")
    assert await _walk(stores) == (["visible.txt"], [], 1)
    assert await _walk(stores, delimiter="/") == (["visible.txt"], [], 1)
    assert await _walk(stores, ".blobgate/") == ([], [], 1)


# --- the in-memory store alone -------------------------------------------------
# (moto answers a continuation token it did not issue with an internal error,
# where S3 says InvalidArgument: so this one is not part of the shared suite.)


@pytest.mark.parametrize("token", ["not a token", "eA", "aw", "\u00e9"])
async def test_a_token_the_memory_store_did_not_issue_is_refused(token: str) -> None:
    store = MemoryStore(["bkt"])
    with pytest.raises(InvalidArgument, match="page_token"):
        await store.list_page("bkt", "", "", 10, token)


async def test_a_created_bucket_exists_and_creating_it_again_keeps_it() -> None:
    store = MemoryStore([])
    with pytest.raises(BucketNotFound):
        await store.head(ObjectRef("new", "k"))
    store.create_bucket("new")
    await store.put(ObjectRef("new", "k"), body(b"x"), options())
    store.create_bucket("new")
    assert (await store.head(ObjectRef("new", "k"))).size == 1
