"""Write preconditions are checked before an Upload is accepted: a refused
if_none_match / if_match ends the call before the server's
``blobgate-upload: accepted`` and before any data is read, so the client,
which waits for that entry, is never mid-write when the call fails and gets
FAILED_PRECONDITION (grpc.aio would otherwise replace the status of a call
that ends under a write with INTERNAL: grpc/grpc#36066). Plain uploads of
one PutObject or of several parts, and resumable starts, on moto and on
LocalStack's stricter S3; S3 holds the old object and no multipart upload
afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from blobgate.client import BlobgateError, Client
from blobgate.client.wire import UPLOAD_ACCEPTED_KEY
from blobgate.server.app import Gateway, start_gateway
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import PART, ensure_bucket, payload, sessions_left, spec

Code = grpc.StatusCode
TRIES = 5  # the defect showed 5 times of 5 on LocalStack: each case runs this often
SIZES = {"one-put": 64 * 1024, "multipart": 3 * PART + 1000}


pytestmark = pytest.mark.both_s3s


async def _started(endpoint: str, bucket: str, **overrides: Any) -> Gateway:
    """A gateway on ``endpoint``, its bucket made first (a gateway makes its
    buckets in the background, with its first health probe)."""
    await ensure_bucket(endpoint, bucket)
    return await start_gateway(gateway_settings(endpoint, bucket, **overrides))


@pytest.fixture
async def gateway(s3_endpoint: str, bucket: str) -> AsyncIterator[Gateway]:
    """The test's gateway, its bucket made before the test writes to it."""
    gw = await _started(s3_endpoint, bucket)
    yield gw
    await stop_gateway(gw)


async def _existing(s3: Any, bucket: str, key: str) -> str:
    """Store the object the uploads must leave alone; its ETag."""
    stored = await s3.put_object(Bucket=bucket, Key=key, Body=b"the original")
    return str(stored["ETag"]).strip('"')


async def _intact(s3: Any, bucket: str, key: str) -> None:
    """The original object is still there, and nothing else was left."""
    body = await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read()
    assert body == b"the original"
    assert await sessions_left(s3, bucket) == ([], [])


def _refusal(name: str, etag: str) -> dict[str, Any]:
    return {"if_none_match": True} if name == "if_none_match" else {"if_match": etag[::-1]}


@pytest.mark.parametrize("condition", ["if_none_match", "if_match"])
@pytest.mark.parametrize("size", list(SIZES))
async def test_the_client_is_refused_before_it_sends_data(
    gateway: Gateway, s3: Any, bucket: str, condition: str, size: str
) -> None:
    """The Python client's plain Upload, which sends data only once the server
    accepted the spec: FAILED_PRECONDITION every time, with the server's
    message, not retryable, and no data sent (its progress callback, called
    on acceptance, never runs). A precondition that holds still uploads."""
    etag = await _existing(s3, bucket, "taken.bin")
    blob = payload(SIZES[size], seed=7)
    progress: list[int] = []
    async with Client(f"127.0.0.1:{gateway.port}") as client:
        for _ in range(TRIES):
            with pytest.raises(BlobgateError) as caught:
                await client.upload(
                    "taken.bin",
                    blob,
                    resumable=False,
                    progress=lambda done, _total: progress.append(done),
                    **_refusal(condition, etag),
                )
            assert caught.value.code == Code.FAILED_PRECONDITION, caught.value
            assert not caught.value.status_lost
            assert not caught.value.retryable
            assert condition in caught.value.message
        assert progress == []
        await _intact(s3, bucket, "taken.bin")

        replaced = await client.upload("taken.bin", blob, resumable=False, if_match=etag)
        created = await client.upload("new.bin", blob, resumable=False, if_none_match=True)
    assert replaced.size == created.size == len(blob)
    for key in ("taken.bin", "new.bin"):
        assert await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read() == blob
    assert await sessions_left(s3, bucket) == ([], [])


@pytest.mark.parametrize("condition", ["if_none_match", "if_match"])
@pytest.mark.parametrize("size", list(SIZES))
async def test_a_raw_stub_is_refused_on_the_spec_alone(
    stub: storage_pb2_grpc.StorageServiceStub, s3: Any, bucket: str, condition: str, size: str
) -> None:
    """grpc.aio with only the spec sent, the stream left open: the call ends
    FAILED_PRECONDITION without a ``blobgate-upload: accepted`` entry, so no
    data was asked for (before the fix the server waited for data)."""
    etag = await _existing(s3, bucket, "taken.bin")
    for _ in range(TRIES):
        call = stub.Upload(timeout=10)
        await call.write(spec("taken.bin", size=SIZES[size], **_refusal(condition, etag)))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == Code.FAILED_PRECONDITION, caught.value.details()
        assert condition in (caught.value.details() or "")
        metadata = dict(await call.initial_metadata() or ())
        assert UPLOAD_ACCEPTED_KEY not in metadata
    await _intact(s3, bucket, "taken.bin")


@pytest.mark.parametrize("condition", ["if_none_match", "if_match"])
async def test_a_resumable_start_is_refused(
    gateway: Gateway, stub: storage_pb2_grpc.StorageServiceStub, s3: Any, bucket: str,
    condition: str,
) -> None:  # fmt: skip
    """StartResumableUpload checks the preconditions before it creates
    anything (as it did before the fix: kept here beside the plain Upload's)."""
    etag = await _existing(s3, bucket, "taken.bin")
    request = storage_pb2.StartResumableUploadRequest(
        spec=storage_pb2.UploadSpec(key="taken.bin", **_refusal(condition, etag))
    )
    for _ in range(TRIES):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.StartResumableUpload(request, timeout=30)
        assert caught.value.code() == Code.FAILED_PRECONDITION
    async with Client(f"127.0.0.1:{gateway.port}") as client:
        with pytest.raises(BlobgateError) as refused:
            await client.upload(
                "taken.bin", payload(SIZES["multipart"]), resumable=True,
                **_refusal(condition, etag),
            )  # fmt: skip
        assert refused.value.code == Code.FAILED_PRECONDITION
    await _intact(s3, bucket, "taken.bin")


async def test_the_client_reports_the_status_of_a_call_refused_mid_write(
    s3_endpoint: str, bucket: str
) -> None:
    """A refusal that can only come once data flows (an undeclared size over
    ``max_object_size``) ends the call while the client writes; grpc.aio then
    may replace the server's status with INTERNAL (grpc/grpc#36066). The
    client reports the server's RESOURCE_EXHAUSTED, every time."""
    gw = await _started(s3_endpoint, bucket, max_object_size=2 * PART)

    async def unsized() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield payload(PART)

    try:
        async with Client(f"127.0.0.1:{gw.port}") as client:
            for _ in range(TRIES):
                with pytest.raises(BlobgateError) as caught:
                    await client.upload("big.bin", unsized(), resumable=False)
                assert caught.value.code == Code.RESOURCE_EXHAUSTED, caught.value
                assert "limit" in caught.value.message
                assert not caught.value.status_lost
    finally:
        await stop_gateway(gw)
