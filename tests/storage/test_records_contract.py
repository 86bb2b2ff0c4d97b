"""The contract of the gateway's own records (``protocols.Records``: quota
markers, the page-token key), run against the in-memory and the S3 backend
(the ``stores`` fixture of contract_stores.py), so they cannot drift."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from blobgate.server.core.errors import BucketNotFound, FailedPrecondition, NotFound
from blobgate.server.rpc.page_token_key import KEY_BYTES, KEY_NAME, PageTokenKey
from blobgate.server.storage.protocols import RESERVED_PREFIX
from tests.support.contract_stores import Stores, keys

PREFIX = f"{RESERVED_PREFIX}test/"

pytestmark = pytest.mark.both_s3s(memory=True)


async def test_a_record_is_written_read_and_removed(stores: Stores) -> None:
    records, bucket = stores.records, stores.bucket
    await records.put(bucket, PREFIX + "a", b"first")
    await records.put(bucket, PREFIX + "a", b"second")  # a plain put replaces
    assert await records.get(bucket, PREFIX + "a") == b"second"
    await records.delete(bucket, PREFIX + "a")
    with pytest.raises(NotFound):
        await records.get(bucket, PREFIX + "a")
    await records.delete(bucket, PREFIX + "a")  # a missing record is no error


async def test_if_none_match_keeps_the_first_record(stores: Stores) -> None:
    records, bucket = stores.records, stores.bucket
    await records.put(bucket, PREFIX + "once", b"winner", if_none_match=True)
    with pytest.raises(FailedPrecondition):
        await records.put(bucket, PREFIX + "once", b"loser", if_none_match=True)
    assert await records.get(bucket, PREFIX + "once") == b"winner"


async def test_records_are_listed_in_order_and_hidden_from_callers(stores: Stores) -> None:
    records, bucket = stores.records, stores.bucket
    for name in ["c", "a", "b"]:
        await records.put(bucket, PREFIX + name, b"")
    await records.put(bucket, f"{RESERVED_PREFIX}elsewhere", b"")
    listed = await records.list(bucket, PREFIX, 2)
    assert [entry.key for entry in listed] == [PREFIX + "a", PREFIX + "b"]
    now = datetime.now(UTC)
    assert all(abs(entry.written - now) < timedelta(minutes=5) for entry in listed)
    assert len(await records.list(bucket, PREFIX, 10)) == 3
    # Callers' listings never show them, whatever the prefix asked.
    assert await keys(stores) == []
    assert await keys(stores, RESERVED_PREFIX) == []


async def test_a_record_lives_only_under_the_reserved_prefix(stores: Stores) -> None:
    records, bucket = stores.records, stores.bucket
    with pytest.raises(ValueError, match="records live under"):
        await records.put(bucket, "callers/object", b"x")
    with pytest.raises(ValueError, match="records live under"):
        await records.list(bucket, "", 10)
    assert await keys(stores) == []  # nothing was written


async def test_a_record_in_a_missing_bucket(stores: Stores) -> None:
    with pytest.raises(BucketNotFound):
        await stores.records.get(stores.bucket + "-missing", PREFIX + "a")


async def test_page_token_keys_racing_agree_on_one_record(stores: Stores) -> None:
    """What the page-token key needs of the records: created once with
    if_none_match, the losers of the race read the winner's."""
    racing = [PageTokenKey(stores.records, stores.bucket) for _ in range(4)]
    got = await asyncio.gather(*(key.get() for key in racing))
    stored = await stores.records.get(stores.bucket, KEY_NAME)
    assert len(stored) == KEY_BYTES
    assert got == [stored] * len(racing)
