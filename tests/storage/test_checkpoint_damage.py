"""A resumable session whose record in S3 no longer parses (LocalStack once
stored a truncated record body): Query and a resumed Upload answer DATA_LOSS
with a message that says to cancel, Cancel aborts the session's multipart
upload and deletes the record, and the janitor ends it once idle past the
expiry. Records go up with a Content-MD5, so a store that verifies it
(LocalStack, like AWS) refuses a body damaged on the way instead of storing
it. On moto and on LocalStack's stricter S3; S3 is checked afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from blobgate.client.wire import UPLOAD_ACCEPTED_KEY
from blobgate.server.app import Gateway, start_gateway
from blobgate.server.core.access_policy import AccessPolicy
from blobgate.server.core.errors import NotFound
from blobgate.server.core.identity import acting_as
from blobgate.server.rpc import upload_id as upload_id_codec
from blobgate.server.storage.authorization import AuthorizedSessions
from blobgate.server.storage.factory import s3_config
from blobgate.server.storage.limits import ByteBudget
from blobgate.server.storage.protocols import (
    SESSION_GONE,
    DamagedSession,
    ObjectRef,
    PutOptions,
    SessionSpec,
)
from blobgate.server.storage.s3.checkpoint import CHECKPOINT_PREFIX, checkpoint_key
from blobgate.server.storage.s3.connection import S3Connection
from blobgate.server.storage.s3.sessions import S3Sessions
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes.s3_fault_proxy import FaultProxy, Request, put_object
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import (
    PART,
    ensure_bucket,
    eventually,
    payload,
    resume_requests,
    sessions_left,
)

Code = grpc.StatusCode
Stub = storage_pb2_grpc.StorageServiceStub


def _truncated(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


# How a record is damaged, and whether its metadata (headers) stays: a store
# that cuts a body short keeps them, a record rewritten by hand may not.
DAMAGES: dict[str, tuple[Callable[[bytes], bytes], bool]] = {
    "truncated": (_truncated, True),
    "not-json": (lambda raw: b"\x00" + raw[1:], True),
    "wrong-fields": (lambda raw: b'{"version": 1, "key": 7}', True),
    "without-metadata": (_truncated, False),
}


pytestmark = pytest.mark.both_s3s


async def _started(s3_endpoint: str, bucket: str, **overrides: Any) -> Gateway:
    """A gateway on ``s3_endpoint`` (its bucket made first: a gateway makes
    its buckets in the background, with its first health probe)."""
    await ensure_bucket(s3_endpoint, bucket)
    return await start_gateway(gateway_settings(s3_endpoint, bucket, **overrides))


@pytest.fixture
async def stub(s3_endpoint: str, bucket: str) -> AsyncIterator[Stub]:
    """A stub on a gateway of the test's own, its bucket made first."""
    gw = await _started(s3_endpoint, bucket)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            yield Stub(channel)
    finally:
        await stop_gateway(gw)


async def _session(stub: Stub, key: str) -> str:
    """A session holding one whole part, its stream gone; its upload_id."""
    request = storage_pb2.StartResumableUploadRequest(spec=storage_pb2.UploadSpec(key=key))
    upload_id: str = (await stub.StartResumableUpload(request, timeout=30)).upload_id
    sent = asyncio.Event()

    async def requests() -> AsyncIterator[storage_pb2.UploadRequest]:
        for message in resume_requests(upload_id, 0, payload(PART + 1000)):
            yield message
        sent.set()
        await asyncio.Event().wait()  # never half-close: the call is dropped

    call = stub.Upload(requests(), timeout=60)
    await asyncio.wait_for(sent.wait(), 30)

    async def stored() -> None:
        assert await _persisted(stub, upload_id) == PART

    await eventually(stored)
    call.cancel()
    return upload_id


async def _persisted(stub: Stub, upload_id: str) -> int:
    request = storage_pb2.QueryUploadStatusRequest(upload_id=upload_id)
    return int((await stub.QueryUploadStatus(request, timeout=30)).persisted_size)


async def _damage(s3: Any, upload_id: str, kind: str) -> None:
    """Rewrite the session's record behind the gateway's back."""
    bucket, session_id = upload_id_codec.decode(upload_id)
    key = checkpoint_key(session_id)
    damage, keep_metadata = DAMAGES[kind]
    record = await s3.get_object(Bucket=bucket, Key=key)
    async with record["Body"] as body:
        raw = await body.read()
    metadata = record["Metadata"] if keep_metadata else {}
    await s3.put_object(Bucket=bucket, Key=key, Body=damage(raw), Metadata=metadata)


async def _refused(code: Code, call: Any) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


@pytest.mark.parametrize("kind", list(DAMAGES))
async def test_a_damaged_session_says_so_and_can_be_cancelled(
    stub: Stub, s3: Any, bucket: str, kind: str
) -> None:
    upload_id = await _session(stub, "damaged.bin")
    await _damage(s3, upload_id, kind)

    query = storage_pb2.QueryUploadStatusRequest(upload_id=upload_id)
    message = await _refused(Code.DATA_LOSS, stub.QueryUploadStatus(query, timeout=30))
    assert "damaged" in message and "CancelResumableUpload" in message
    # A resumed Upload is refused on its first message, before it is accepted.
    call = stub.Upload(timeout=30)
    resume = storage_pb2.UploadResume(upload_id=upload_id, write_offset=PART)
    await call.write(storage_pb2.UploadRequest(resume=resume))
    assert "CancelResumableUpload" in await _refused(Code.DATA_LOSS, call)
    assert UPLOAD_ACCEPTED_KEY not in dict(await call.initial_metadata() or ())

    cancel = storage_pb2.CancelResumableUploadRequest(upload_id=upload_id)
    await stub.CancelResumableUpload(cancel, timeout=30)

    await _refused(Code.NOT_FOUND, stub.QueryUploadStatus(query, timeout=30))
    records, uploads = await sessions_left(s3, bucket)
    assert records == []
    # A record without its metadata does not say which multipart upload was
    # its own: that one is left to the janitor, as an orphan.
    assert uploads == ([] if DAMAGES[kind][1] else ["damaged.bin"])


async def test_the_janitor_ends_damaged_sessions_once_idle(
    stub: Stub, s3_endpoint: str, s3: Any, bucket: str
) -> None:
    """Until it has been idle past the expiry a damaged session answers
    DATA_LOSS; then the janitor (of another instance) ends it as any other:
    its multipart upload aborted (as an orphan when its record lost its
    metadata) and its record deleted."""
    ids = {kind: await _session(stub, f"{kind}.bin") for kind in DAMAGES}
    for kind, upload_id in ids.items():
        await _damage(s3, upload_id, kind)
        query = storage_pb2.QueryUploadStatusRequest(upload_id=upload_id)
        await _refused(Code.DATA_LOSS, stub.QueryUploadStatus(query, timeout=30))
    assert len((await sessions_left(s3, bucket))[0]) == len(DAMAGES)

    sweeper = await _started(s3_endpoint, bucket, session_expiry=2.0, janitor_interval=0.3)
    try:

        async def swept() -> None:
            assert await sessions_left(s3, bucket) == ([], [])

        await eventually(swept, within=20)
    finally:
        await stop_gateway(sweeper)
    for upload_id in ids.values():
        query = storage_pb2.QueryUploadStatusRequest(upload_id=upload_id)
        await _refused(Code.NOT_FOUND, stub.QueryUploadStatus(query, timeout=30))


def _record_put(request: Request) -> bool:
    return put_object(request) and request.key.startswith(CHECKPOINT_PREFIX)


async def test_a_record_damaged_on_the_way_is_refused_by_a_store_that_checks(
    store_kind: str, s3_endpoint: str, s3: Any, bucket: str
) -> None:
    """A session record's body changed between the gateway and S3 (a byte
    flipped in flight, through a proxy): it carries the Content-MD5 of what
    the gateway sent, so LocalStack refuses it (BadDigest): the start is
    UNAVAILABLE and leaves nothing. moto checks no digest and stores it: the
    session then answers DATA_LOSS, and Cancel leaves nothing either."""
    checks_digests = store_kind == "localstack"
    with FaultProxy(s3_endpoint) as proxy:
        gw = await _started(proxy.url, bucket)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
                stub = Stub(channel)
                flipped = proxy.corrupt_request(0, match=_record_put, times=1)
                spec = storage_pb2.UploadSpec(key="flipped.bin")
                start = stub.StartResumableUpload(
                    storage_pb2.StartResumableUploadRequest(spec=spec), timeout=30
                )
                if checks_digests:
                    assert "BadDigest" in await _refused(Code.UNAVAILABLE, start)
                else:
                    upload_id = (await start).upload_id
                    query = storage_pb2.QueryUploadStatusRequest(upload_id=upload_id)
                    await _refused(Code.DATA_LOSS, stub.QueryUploadStatus(query, timeout=30))
                    cancel = storage_pb2.CancelResumableUploadRequest(upload_id=upload_id)
                    await stub.CancelResumableUpload(cancel, timeout=30)
                assert flipped.fired == 1
                assert proxy.seen(lambda r: _record_put(r) and "content-md5" in r.headers) >= 1
        finally:
            await stop_gateway(gw)
    assert await sessions_left(s3, bucket) == ([], [])


async def test_only_its_owner_learns_that_a_session_is_damaged_and_may_cancel_it(
    s3_endpoint: str, s3: Any, bucket: str
) -> None:
    """With identified callers a damaged session still belongs to its owner
    (the record's metadata keeps a hash of it): to another principal it does
    not exist. A record that lost its metadata proves no owner, so it
    belongs to no identified caller: the janitor ends it."""
    settings = gateway_settings(s3_endpoint, bucket)
    async with S3Connection(s3_config(settings)) as connection:
        await connection.ensure_buckets([bucket])
        inner = S3Sessions(connection, ByteBudget(int(settings.memory_budget)))
        sessions = AuthorizedSessions(inner, AccessPolicy(None))
        spec = SessionSpec(ObjectRef(bucket, "owned.bin"), PutOptions("", {}))
        ids = {}
        with acting_as("alice"):
            for kind in ("truncated", "without-metadata"):
                started = await sessions.start_session(spec)
                ids[kind] = started.session_id
                await _damage(s3, upload_id_codec.encode(bucket, started.session_id), kind)
        with acting_as("bob"):
            for session_id in ids.values():
                for call in (sessions.open_session, sessions.cancel_session):
                    with pytest.raises(NotFound) as gone:
                        await call(bucket, session_id)
                    assert gone.value.message == SESSION_GONE
        with acting_as("alice"):
            with pytest.raises(DamagedSession):
                await sessions.open_session(bucket, ids["truncated"])
            await sessions.cancel_session(bucket, ids["truncated"])
            with pytest.raises(NotFound):
                await sessions.open_session(bucket, ids["truncated"])
            for call in (sessions.open_session, sessions.cancel_session):
                with pytest.raises(NotFound):
                    await call(bucket, ids["without-metadata"])
        records, uploads = await sessions_left(s3, bucket)
        assert len(records) == 1 and uploads == ["owned.bin"]  # the one without metadata
