"""The SessionStore contract: every test runs against the in-memory sessions
and against the S3 sessions on moto and on LocalStack (see contract_stores),
so they cannot drift apart. Parts are 5 MiB, S3's least."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from blobgate.server.core.errors import FailedPrecondition, InvalidArgument, NotFound
from blobgate.server.storage.memory.store import MemoryStore
from blobgate.server.storage.protocols import (
    ContentChecksums,
    ObjectRef,
    PresignMethod,
    Session,
    SessionSpec,
)
from tests.support.contract_stores import (
    PART,
    Boom,
    Gate,
    Stores,
    body,
    broken,
    eventually,
    keys,
    options,
    put,
    read,
    sums,
)
from tests.support.helpers import MiB, chunks, payload

pytestmark = pytest.mark.both_s3s(memory=True)


async def start(stores: Stores, key: str, size: int | None = None, **fields: Any) -> Session:
    spec = SessionSpec(stores.ref(key), options(**fields), size)
    session = await stores.sessions.start_session(spec)
    assert (session.bucket, session.spec, session.persisted_size) == (stores.bucket, spec, 0)
    assert session.part_size == PART
    return session


async def persisted(stores: Stores, session: Session) -> int:
    return (await stores.sessions.open_session(session.bucket, session.session_id)).persisted_size


async def gone(stores: Stores, session: Session) -> None:
    """The session is over: every way of reaching it is NotFound."""
    with pytest.raises(NotFound):
        await stores.sessions.open_session(session.bucket, session.session_id)
    with pytest.raises(NotFound):
        await stores.sessions.cancel_session(session.bucket, session.session_id)
    with pytest.raises(NotFound):
        await stores.sessions.resume_session(session, body(b"late"))


async def interrupted(stores: Stores, session: Session, data: bytes) -> int:
    """Send ``data`` into ``session`` and break the stream; the persisted size."""
    with pytest.raises(Boom):
        await stores.sessions.resume_session(session, broken(*chunks(data)))
    return await persisted(stores, session)


async def test_one_stream_commits_the_object_and_ends_the_session(stores: Stores) -> None:
    blob = payload(2 * PART + 123, seed=1)
    meta = {"who": "me"}
    started = await start(stores, "one.bin", len(blob), content_type="text/plain", metadata=meta)
    opened = await stores.sessions.open_session(started.bucket, started.session_id)
    assert (opened.spec, opened.persisted_size) == (started.spec, 0)
    info = await stores.sessions.resume_session(opened, body(*chunks(blob)))
    assert (info.key, info.size, info.content_type) == ("one.bin", len(blob), "text/plain")
    assert dict(info.metadata) == meta
    assert info.checksums == sums(blob)
    head = await stores.objects.head(stores.ref("one.bin"))
    assert (head.etag, head.size, head.checksums) == (info.etag, len(blob), sums(blob))
    assert await read(stores, "one.bin", chunk=MiB) == blob
    await gone(stores, started)


async def test_an_interrupted_session_resumes_from_whole_parts(stores: Stores) -> None:
    blob = payload(3 * PART + 777, seed=2)
    started = await start(stores, "resumed.bin", len(blob))
    assert await interrupted(stores, started, blob[: 2 * PART + MiB]) == 2 * PART
    assert await keys(stores) == []  # nothing is visible before the commit
    # The session as it stood before: a stale view cannot move it back.
    with pytest.raises(FailedPrecondition, match="another Upload continued"):
        await stores.sessions.resume_session(started, body(blob))
    assert await persisted(stores, started) == 2 * PART
    # A second interruption inside the next part keeps the persisted size.
    now = await stores.sessions.open_session(started.bucket, started.session_id)
    assert await interrupted(stores, now, blob[2 * PART : 2 * PART + 10]) == 2 * PART
    info = await stores.sessions.resume_session(now, body(*chunks(blob[2 * PART :])))
    # The checksums cover every byte, across all three calls.
    assert (info.size, info.checksums) == (len(blob), sums(blob))
    assert await read(stores, "resumed.bin", chunk=MiB) == blob
    await gone(stores, started)


async def test_expected_checksums_are_checked_across_calls(stores: Stores) -> None:
    blob = payload(2 * PART + 5, seed=3)
    started = await start(stores, "checked.bin", known=sums(blob))
    assert await interrupted(stores, started, blob[: PART + 10]) == PART
    now = await stores.sessions.open_session(started.bucket, started.session_id)
    corrupt = blob[PART:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(InvalidArgument, match="sha256 mismatch"):
        await stores.sessions.resume_session(now, body(corrupt))
    # A wrong whole object cannot be mended by resuming: the session is over.
    await gone(stores, started)
    assert await keys(stores) == []


async def test_the_expected_crc32c_alone_is_checked(stores: Stores) -> None:
    blob = payload(PART + 5, seed=4)
    wrong = (sums(blob).crc32c or 0) ^ 1
    started = await start(stores, "crc.bin", known=ContentChecksums(crc32c=wrong))
    with pytest.raises(InvalidArgument, match="crc32c mismatch"):
        await stores.sessions.resume_session(started, body(blob))
    await gone(stores, started)


async def test_cancel_ends_the_session_and_stores_nothing(stores: Stores) -> None:
    started = await start(stores, "cancelled.bin")
    assert await interrupted(stores, started, payload(PART + 1, seed=5)) == PART
    await stores.sessions.cancel_session(started.bucket, started.session_id)
    await gone(stores, started)
    assert await keys(stores) == []


async def test_unknown_sessions_are_not_found(stores: Stores) -> None:
    with pytest.raises(NotFound):
        await stores.sessions.open_session(stores.bucket, "A" * 43)
    with pytest.raises(NotFound):
        await stores.sessions.cancel_session(stores.bucket, "A" * 43)


async def test_the_owner_is_kept_with_the_session(stores: Stores) -> None:
    owner = "spiffe://example.org/ns/team/sa/uploader"
    spec = SessionSpec(stores.ref("owned.bin"), options(), owner=owner)
    started = await stores.sessions.start_session(spec)
    opened = await stores.sessions.open_session(started.bucket, started.session_id)
    assert started.spec.owner == opened.spec.owner == owner
    await stores.sessions.cancel_session(started.bucket, started.session_id)


async def test_an_empty_object_through_a_session(stores: Stores) -> None:
    started = await start(stores, "empty.txt", 0)
    info = await stores.sessions.resume_session(started, body())
    assert (info.size, info.checksums) == (0, sums(b""))
    assert await read(stores, "empty.txt") == b""
    await gone(stores, started)


async def test_preconditions_are_checked_when_a_session_starts(stores: Stores) -> None:
    old = await put(stores, "taken.bin", b"taken")
    refused: list[tuple[str, dict[str, Any]]] = [
        ("taken.bin", {"if_none_match": True}),
        ("taken.bin", {"if_match": "0" * 32}),
        ("absent.bin", {"if_match": old.etag}),
    ]
    for key, fields in refused:
        with pytest.raises(FailedPrecondition):
            await stores.sessions.start_session(SessionSpec(stores.ref(key), options(**fields)))
    started = await start(stores, "taken.bin", if_match=old.etag)
    info = await stores.sessions.resume_session(started, body(b"replaced"))
    assert info.size == 8
    assert await read(stores, "taken.bin") == b"replaced"


@pytest.mark.parametrize("condition", ["if_none_match", "if_match"])
async def test_a_precondition_that_fails_at_commit_ends_the_session(
    stores: Stores, condition: str
) -> None:
    fields: dict[str, Any] = {"if_none_match": True}
    if condition == "if_match":
        fields = {"if_match": (await put(stores, "race.bin", b"the original")).etag}
    started = await start(stores, "race.bin", **fields)
    await put(stores, "race.bin", b"the winner")
    with pytest.raises(FailedPrecondition):
        await stores.sessions.resume_session(started, body(payload(PART + 3, seed=6)))
    assert await read(stores, "race.bin") == b"the winner"
    await gone(stores, started)


async def test_a_stale_stream_cannot_move_a_session_back(stores: Stores) -> None:
    """Two streams on one session (a client retried while its first call
    still ran): the one that continued first wins, the stale one fails when
    it tries to persist, and the persisted size never goes back."""
    blob = payload(3 * PART + 10, seed=11)
    started = await start(stores, "contested.bin", len(blob))
    stale_body = Gate(blob[:PART], blob[PART : 2 * PART])
    stale = asyncio.create_task(stores.sessions.resume_session(started, stale_body))
    await stale_body.open()

    async def at(size: int) -> bool:
        return await persisted(stores, started) == size

    await eventually(lambda: at(PART))
    retry = await stores.sessions.open_session(started.bucket, started.session_id)
    fresh_body = Gate(blob[PART : 2 * PART], blob[2 * PART :])
    fresh = asyncio.create_task(stores.sessions.resume_session(retry, fresh_body))
    await fresh_body.open()
    await eventually(lambda: at(2 * PART))
    await stale_body.open()  # the stale stream goes on and fills its second part
    with pytest.raises(FailedPrecondition, match="another Upload continued"):
        await stale
    assert await persisted(stores, started) == 2 * PART
    await fresh_body.open()
    info = await fresh
    assert info.checksums == sums(blob)
    assert await read(stores, "contested.bin", chunk=MiB) == blob
    await gone(stores, started)


async def test_a_stale_stream_with_a_short_tail_cannot_commit(stores: Stores) -> None:
    """A stale stream that stores no whole part and ends must not commit over
    the parts another stream of the same session stored meanwhile. On S3 its
    tail still overwrote the other stream's first part (S3 cannot refuse a
    part), so that stream may fail at commit too: the exact object or none,
    never the stale stream's."""
    blob = payload(2 * PART + 10, seed=13)
    started = await start(stores, "tail.bin")
    stale_body = Gate(b"a short tail")
    stale = asyncio.create_task(stores.sessions.resume_session(started, stale_body))
    retry = await stores.sessions.open_session(started.bucket, started.session_id)
    fresh_body = Gate(blob[:PART], blob[PART:])
    fresh = asyncio.create_task(stores.sessions.resume_session(retry, fresh_body))
    await fresh_body.open()

    async def at(size: int) -> bool:
        return await persisted(stores, started) == size

    await eventually(lambda: at(PART))
    await stale_body.open()
    with pytest.raises(FailedPrecondition, match="another Upload continued"):
        await stale
    await fresh_body.open()
    try:
        info = await fresh
    except FailedPrecondition:
        assert stores.kind == "s3", "only S3 lets a stale part replace a stored one"
        assert await keys(stores, "tail.bin") == []
        return
    assert info.checksums == sums(blob)
    assert await read(stores, "tail.bin", chunk=MiB) == blob


async def test_the_sweep_aborts_sessions_idle_past_the_expiry(stores: Stores) -> None:
    short = await stores.with_expiry(3.0)
    idle = await start(stores, "idle.bin")
    busy = await start(stores, "busy.bin")
    # S3 dates a session's record to the second: wait past the expiry plus one.
    await asyncio.sleep(4.1)
    assert await interrupted(stores, busy, payload(PART, seed=12)) == PART  # progress is activity
    live = await start(stores, "live.bin")
    assert await stores.sessions.sweep([stores.bucket]) == 0  # a week's expiry
    assert await short.sweep([]) == 0
    # The idle session, once (not again as an orphan upload); both sweeps
    # soon after busy's progress (a loaded machine is slow, and a record
    # dated to the second looks up to a second older).
    aborted = [await short.sweep([stores.bucket]), await short.sweep([stores.bucket])]
    assert aborted == [1, 0]
    await gone(stores, idle)
    assert await persisted(stores, busy) == PART
    assert await persisted(stores, live) == 0


# --- the in-memory store alone -------------------------------------------------


async def test_the_memory_store_cannot_presign() -> None:
    store = MemoryStore(["bkt"])
    for method in PresignMethod:
        with pytest.raises(FailedPrecondition, match="presigned URLs need an S3 backend"):
            await store.presign(ObjectRef("bkt", "k"), method, 60, "text/plain")
