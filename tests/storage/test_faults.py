"""S3 misbehaving under a real gateway: connections cut mid-body, throttling,
slowness, and clients leaving while S3 is slow.

Each test runs a gateway whose S3 is a FaultProxy in front of moto, and
checks S3 directly (the ``s3`` fixture talks to moto) afterwards: the exact
object (its sha256 is the payload's) or no object at all, and never a
multipart upload left behind. Then, with the faults off, the same gateway
must be SERVING and take a normal upload.

Two layers retry under the gateway, and the tests count on both:
botocore's standard retries (s3_max_attempts) resend a request that met a
cut connection or a 503 SlowDown, after a backoff; below them aiohttp resends
an idempotent request (PUT, GET, HEAD, DELETE) once, at once, when its
connection fails. Neither retries a GetObject body cut after its headers.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from blobgate.client import Client
from blobgate.server.app import Gateway
from blobgate.server.core.settings import Settings
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes.s3_fault_proxy import (
    FaultProxy,
    Request,
    complete_multipart_upload,
    get_object,
    head_object,
    list_objects,
    put_object,
    upload_part,
)
from tests.support.gateways import gateway_settings
from tests.support.helpers import (
    PART,
    Code,
    MiB,
    assert_status,
    chunks,
    data,
    eventually,
    expect_status,
    health,
    payload,
    resume_requests,
    running_gateway,
    sessions_left,
    sha256,
    spec,
    upload,
    upload_requests,
    wait_multipart_started,
    wait_nothing_left,
    write_all,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
DEFAULT_ATTEMPTS = int(Settings.model_fields["s3_max_attempts"].default)
# Where every attempt is throttled: fewer attempts, less of botocore's backoff.
THROTTLED_ATTEMPTS = 2
MULTIPART = 2 * PART + 1000  # three UploadParts
SINGLE = 3 * MiB  # one PutObject

# Each shape: its size, the S3 requests that carry its bytes, how many there are.
SHAPES = {
    "multipart": (MULTIPART, upload_part, 3),
    "single": (SINGLE, put_object, 1),
}

Gw = tuple[Gateway, storage_pb2_grpc.StorageServiceStub, grpc.aio.Channel]


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_endpoint) as fault_proxy:
        yield fault_proxy


@asynccontextmanager
async def proxied_gateway(
    proxy: FaultProxy, moto_endpoint: str, bucket: str, **overrides: Any
) -> AsyncIterator[Gw]:
    """A gateway whose S3 is ``proxy`` (in front of moto)."""
    settings = gateway_settings(moto_endpoint, bucket, s3_endpoint=proxy.url, **overrides)
    async with running_gateway(settings) as parts:
        yield parts


async def stored(s3: Any, bucket: str, key: str) -> bytes:
    response = await s3.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as body:
        return bytes(await body.read())


async def assert_exact(s3: Any, bucket: str, key: str, blob: bytes) -> None:
    """S3 holds exactly ``blob`` at ``key``, and no multipart upload."""
    assert sha256(await stored(s3, bucket, key)) == sha256(blob)
    assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []


async def assert_recovers(proxy: FaultProxy, gw: Gw, s3: Any, bucket: str) -> None:
    """Faults off: the gateway is SERVING again and takes a normal upload."""
    gateway, _stub, channel = gw
    proxy.clear()

    async def serving() -> None:
        assert await health(channel, "") == SERVING

    await eventually(serving)
    blob = payload(PART + 1000, seed=99)
    obj = await upload(gateway, "after-the-fault.bin", blob)
    assert obj.size == len(blob)
    await assert_exact(s3, bucket, "after-the-fault.bin", blob)


# --- the proxy itself ----------------------------------------------------------


async def test_proxy_is_transparent_without_faults(
    proxy: FaultProxy, moto_endpoint: str, s3: Any, bucket: str
) -> None:
    """Guards the guard: with no fault on, uploads and downloads through the
    proxy are exact, and it counts the requests it forwards."""
    async with proxied_gateway(proxy, moto_endpoint, bucket) as gw:
        gateway, stub, _channel = gw
        for shape, (size, kind, requests) in SHAPES.items():
            blob = payload(size, seed=size)
            await upload(gateway, f"{shape}.bin", blob)
            await assert_exact(s3, bucket, f"{shape}.bin", blob)
            # (The multipart upload also wrote its sha256 record: not counted.)
            assert proxy.seen(lambda r, k=kind, s=shape: k(r) and r.key == f"{s}.bin") == requests
            call = stub.Download(storage_pb2.DownloadRequest(key=f"{shape}.bin"), timeout=30)
            got = [m.data async for m in call if m.WhichOneof("message") == "data"]
            assert sha256(b"".join(got)) == sha256(blob)
        assert proxy.seen(lambda r: get_object(r) and r.key.endswith(".bin")) == 2


# --- a connection cut while the gateway sends an object ------------------------


@pytest.mark.parametrize("attempts", [1, DEFAULT_ATTEMPTS])
@pytest.mark.parametrize("shape", SHAPES)
async def test_connection_cut_once_mid_upload_is_retried(
    proxy: FaultProxy, moto_endpoint: str, s3: Any, bucket: str, shape: str, attempts: int
) -> None:
    """One UploadPart / PutObject loses its connection after 1 MiB of body;
    it is sent again and the object is exact. Even with s3_max_attempts=1:
    aiohttp itself resends a PUT once when its connection fails."""
    size, kind, requests = SHAPES[shape]
    blob = payload(size)
    async with proxied_gateway(proxy, moto_endpoint, bucket, s3_max_attempts=attempts) as gw:
        cut = proxy.cut_request(MiB, match=kind, times=1)
        obj = await upload(gw[0], "cut.bin", blob)
        assert obj.size == size
        await assert_exact(s3, bucket, "cut.bin", blob)
        assert cut.fired == 1
        assert proxy.seen(kind) == requests + 1  # the cut one, sent again
        await assert_recovers(proxy, gw, s3, bucket)


@pytest.mark.parametrize("shape", SHAPES)
async def test_connection_cut_always_mid_upload_is_unavailable(
    proxy: FaultProxy, moto_endpoint: str, s3: Any, bucket: str, shape: str
) -> None:
    """Every UploadPart / PutObject loses its connection after 1 MiB: the
    Upload is UNAVAILABLE, nothing is committed, the multipart is aborted."""
    size, kind, _requests = SHAPES[shape]
    async with proxied_gateway(proxy, moto_endpoint, bucket, s3_max_attempts=1) as gw:
        cut = proxy.cut_request(MiB, match=kind)
        await expect_status(Code.UNAVAILABLE, upload(gw[0], "cut.bin", payload(size)))
        await wait_nothing_left(s3, bucket, "cut.bin")
        # Nothing got through, though each request was tried at least twice
        # (aiohttp resends a PUT once under each botocore attempt).
        assert cut.fired == proxy.seen(kind) >= 2
        await assert_recovers(proxy, gw, s3, bucket)


async def test_lost_answer_to_complete_multipart_upload(
    proxy: FaultProxy, moto_endpoint: str, s3: Any, bucket: str
) -> None:
    """S3 commits the object but the answer to CompleteMultipartUpload is
    lost: botocore sends it again, S3 (like moto) answers a repeated complete
    of a completed upload with success, even under if_none_match."""
    blob = payload(MULTIPART, seed=2)
    async with proxied_gateway(proxy, moto_endpoint, bucket) as gw:
        cut = proxy.cut_response(0, match=complete_multipart_upload, times=1)
        obj = await upload(gw[0], "completed.bin", blob, if_none_match=True)
        assert obj.size == len(blob)
        await assert_exact(s3, bucket, "completed.bin", blob)
        assert cut.fired == 1
        assert proxy.seen(complete_multipart_upload) == 2
        await assert_recovers(proxy, gw, s3, bucket)


# --- a connection cut while the gateway reads an object -----------------------


async def _download_cut(
    proxy: FaultProxy, gw: Gw, s3: Any, bucket: str, after: int
) -> grpc.aio.AioRpcError:
    """Download an object while every GetObject body stops after ``after``
    bytes: the stream must end with an error, after a correct prefix, and S3
    must still hold the object. Return the error."""
    blob = payload(SINGLE, seed=3)
    await s3.put_object(Bucket=bucket, Key="read.bin", Body=blob)
    cut = proxy.cut_response(after, match=get_object)
    received: list[bytes] = []
    call = gw[1].Download(storage_pb2.DownloadRequest(key="read.bin"), timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for message in call:
            if message.WhichOneof("message") == "data":
                received.append(message.data)
    got = b"".join(received)
    assert len(got) <= after < len(blob)
    assert blob.startswith(got)
    assert cut.fired >= 1
    assert await stored(s3, bucket, "read.bin") == blob
    return info.value


@pytest.mark.parametrize("after", [0, MiB + 1, SINGLE - 1], ids=["at-once", "midway", "last-byte"])
async def test_connection_cut_mid_download_is_never_a_short_stream(
    proxy: FaultProxy, moto_endpoint: str, s3: Any, bucket: str, after: int
) -> None:
    """GetObject bodies that stop early: the Download ends with an error
    after a correct prefix, never as a successful but short stream (botocore
    does not retry a body cut after its headers)."""
    # One attempt: a cut that also loses the headers is retried, at length.
    async with proxied_gateway(proxy, moto_endpoint, bucket, s3_max_attempts=1) as gw:
        await _download_cut(proxy, gw, s3, bucket, after)
        await assert_recovers(proxy, gw, s3, bucket)


async def test_connection_cut_mid_download_is_unavailable(
    proxy: FaultProxy, moto_endpoint: str, s3: Any, bucket: str
) -> None:
    async with proxied_gateway(proxy, moto_endpoint, bucket, s3_max_attempts=1) as gw:
        assert_status(await _download_cut(proxy, gw, s3, bucket, MiB + 1), Code.UNAVAILABLE)


# --- throttling ------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
async def test_slow_down_twice_is_retried(
    proxy: FaultProxy, moto_endpoint: str, s3: Any, bucket: str, shape: str
) -> None:
    """The first two of the requests carrying the bytes get 503 SlowDown:
    botocore's retries carry the upload through, and the object is exact."""
    size, kind, requests = SHAPES[shape]
    blob = payload(size, seed=4)
    async with proxied_gateway(proxy, moto_endpoint, bucket) as gw:
        throttle = proxy.slow_down(match=kind, times=2)
        obj = await upload(gw[0], "throttled.bin", blob)
        assert obj.size == size
        await assert_exact(s3, bucket, "throttled.bin", blob)
        assert throttle.fired == 2
        assert proxy.seen(kind) == requests + 2
        await assert_recovers(proxy, gw, s3, bucket)


@pytest.mark.parametrize("shape", SHAPES)
async def test_slow_down_always_is_unavailable(
    proxy: FaultProxy, moto_endpoint: str, s3: Any, bucket: str, shape: str
) -> None:
    """S3 throttles every request carrying the bytes: once botocore has made
    its attempts the Upload is UNAVAILABLE, naming the cause (S3's error
    code, not its message), and nothing is
    committed (the multipart upload is aborted: its DELETE is not throttled)."""
    size, kind, _requests = SHAPES[shape]
    async with proxied_gateway(
        proxy, moto_endpoint, bucket, s3_max_attempts=THROTTLED_ATTEMPTS
    ) as gw:
        throttle = proxy.slow_down(match=kind)
        error = await expect_status(
            Code.UNAVAILABLE, upload(gw[0], "throttled.bin", payload(size, seed=5))
        )
        assert "SlowDown" in (error.details() or "")
        # S3's own words stay in the gateway's log, never in the caller's message.
        assert "reduce your request rate" not in (error.details() or "")
        await wait_nothing_left(s3, bucket, "throttled.bin")
        # Every attempt was refused, and botocore made all of its attempts.
        assert throttle.fired == proxy.seen(kind) >= THROTTLED_ATTEMPTS
        await assert_recovers(proxy, gw, s3, bucket)


async def test_reads_under_slow_down_are_unavailable(
    proxy: FaultProxy, moto_endpoint: str, s3: Any, bucket: str
) -> None:
    """Stat, List and Download while S3 throttles HeadObject, ListObjectsV2
    and GetObject: each is UNAVAILABLE with a message naming the cause."""
    blob = b"kept as it is"
    async with proxied_gateway(
        proxy, moto_endpoint, bucket, s3_max_attempts=THROTTLED_ATTEMPTS
    ) as gw:
        await s3.put_object(Bucket=bucket, Key="kept.bin", Body=blob)
        _gateway, stub, _channel = gw
        throttles = [proxy.slow_down(match=k) for k in (head_object, list_objects, get_object)]
        calls = [
            stub.Stat(storage_pb2.StatRequest(key="kept.bin"), timeout=30),
            stub.List(storage_pb2.ListRequest(), timeout=30),
            _read_all(stub.Download(storage_pb2.DownloadRequest(key="kept.bin"), timeout=30)),
        ]
        stat, listing, reading = await asyncio.gather(
            *(expect_status(Code.UNAVAILABLE, call) for call in calls)
        )
        assert "503" in (stat.details() or "")  # an answer to HEAD has no error body
        assert "SlowDown" in (listing.details() or "")
        assert "SlowDown" in (reading.details() or "")
        # Each call's one S3 request was made, and refused, as often as botocore tries.
        assert [t.fired for t in throttles] == [throttles[0].fired] * 3
        assert throttles[0].fired >= THROTTLED_ATTEMPTS
        await assert_recovers(proxy, gw, s3, bucket)
        again = await stub.Stat(storage_pb2.StatRequest(key="kept.bin"), timeout=10)
        assert again.object.size == len(blob)
        assert await stored(s3, bucket, "kept.bin") == blob


async def _read_all(call: Any) -> list[Any]:
    return [message async for message in call]


@pytest.mark.parametrize("attempts", [1, 2])
async def test_s3_max_attempts_is_the_number_of_attempts(
    proxy: FaultProxy, moto_endpoint: str, bucket: str, attempts: int
) -> None:
    """The setting is documented as "attempts per S3 request"."""
    async with proxied_gateway(proxy, moto_endpoint, bucket, s3_max_attempts=attempts) as gw:
        proxy.slow_down(match=head_object)
        await expect_status(
            Code.UNAVAILABLE, gw[1].Stat(storage_pb2.StatRequest(key="any.bin"), timeout=30)
        )
        assert proxy.seen(head_object) == attempts


# --- slow S3 ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
async def test_slow_s3_and_a_client_deadline(
    proxy: FaultProxy, moto_endpoint: str, s3: Any, bucket: str, shape: str
) -> None:
    """S3 holds every data request past the client's deadline: the Upload is
    DEADLINE_EXCEEDED, the gateway gives up its S3 requests (none of them
    ever reaches S3) and aborts the multipart upload."""
    size, kind, _requests = SHAPES[shape]
    async with proxied_gateway(proxy, moto_endpoint, bucket) as gw:
        slow = proxy.delay(30.0, match=kind)
        await expect_status(
            Code.DEADLINE_EXCEEDED,
            upload(gw[0], "late.bin", payload(size, seed=6), rpc_timeout=2.0),
        )
        await wait_nothing_left(s3, bucket, "late.bin")

        async def all_dropped() -> None:
            assert slow.fired >= 1
            assert slow.dropped == slow.fired

        await eventually(all_dropped)
        await assert_recovers(proxy, gw, s3, bucket)


@pytest.mark.parametrize("how", ["cancel", "close-channel"])
async def test_client_vanishes_while_s3_is_slow(
    proxy: FaultProxy, moto_endpoint: str, s3: Any, bucket: str, how: str
) -> None:
    """The client cancels its Upload, or closes its channel, while the
    gateway waits for S3 to take a part: the gateway gives up the part (S3
    never gets it), aborts the multipart upload and commits nothing."""
    async with proxied_gateway(proxy, moto_endpoint, bucket) as gw:
        slow = proxy.delay(30.0, match=upload_part)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{gw[0].port}")
        call = storage_pb2_grpc.StorageServiceStub(channel).Upload(timeout=60)
        await call.write(spec("vanished.bin"))
        await write_all(call, (data(piece) for piece in chunks(payload(2 * PART, seed=7))))
        await wait_multipart_started(s3, bucket, "vanished.bin")

        async def part_held() -> None:
            assert slow.fired >= 1

        await eventually(part_held)
        if how == "cancel":
            call.cancel()
        else:
            await channel.close()
        with pytest.raises((asyncio.CancelledError, grpc.aio.AioRpcError)):
            await call
        await channel.close()
        await wait_nothing_left(s3, bucket, "vanished.bin")

        async def all_dropped() -> None:
            assert slow.dropped == slow.fired

        await eventually(all_dropped)
        await assert_recovers(proxy, gw, s3, bucket)


# --- resumable sessions ------------------------------------------------------------


def part_number(number: int) -> Callable[[Request], bool]:
    def matches(r: Request) -> bool:
        return upload_part(r) and r.query["partNumber"] == [str(number)]

    return matches


async def test_s3_failing_mid_session_leaves_it_resumable(
    proxy: FaultProxy, moto_endpoint: str, s3: Any, bucket: str
) -> None:
    """S3 throttles one part of a session for good: the Upload is
    UNAVAILABLE, no object exists, the only multipart upload left is the
    live session's, holding its whole parts; with S3 back, resuming from the
    persisted size commits the exact object."""
    blob = payload(3 * PART + 7, seed=31)
    async with proxied_gateway(proxy, moto_endpoint, bucket, s3_max_attempts=1) as gw:
        gateway, stub, _ = gw
        started = await stub.StartResumableUpload(
            storage_pb2.StartResumableUploadRequest(
                spec=storage_pb2.UploadSpec(key="session.bin", size=len(blob))
            ),
            timeout=10,
        )
        proxy.slow_down(match=part_number(3))
        await expect_status(
            Code.UNAVAILABLE,
            upload_requests(gateway, resume_requests(started.upload_id, 0, blob)),
        )
        records, uploads = await sessions_left(s3, bucket)
        assert len(records) == 1 and uploads == ["session.bin"]
        listing = await s3.list_objects_v2(Bucket=bucket, Prefix="session.bin")
        assert listing.get("Contents", []) == []
        query = storage_pb2.QueryUploadStatusRequest(upload_id=started.upload_id)
        persisted = (await stub.QueryUploadStatus(query, timeout=10)).persisted_size
        assert persisted == 2 * PART
        proxy.clear()
        obj = await upload_requests(gateway, resume_requests(started.upload_id, persisted, blob))
        assert obj.checksums.sha256 == sha256(blob)
        await assert_exact(s3, bucket, "session.bin", blob)
        assert await sessions_left(s3, bucket) == ([], [])
        await assert_recovers(proxy, gw, s3, bucket)


async def test_the_client_resumes_through_s3_failures(
    proxy: FaultProxy, moto_endpoint: str, s3: Any, bucket: str
) -> None:
    """The client library's upload meets S3 failing one part: it asks where
    the session stands and sends only the rest."""
    blob = payload(4 * PART + 11, seed=32)
    sent: list[int] = []
    async with proxied_gateway(proxy, moto_endpoint, bucket, s3_max_attempts=1) as gw:
        gateway = gw[0]
        proxy.slow_down(match=part_number(3), times=1)
        async with Client(f"127.0.0.1:{gateway.port}") as client:
            info = await client.upload(
                "client.bin", blob, progress=lambda done, total: sent.append(done)
            )
        assert info.sha256 == sha256(blob)
        await assert_exact(s3, bucket, "client.bin", blob)
        assert await sessions_left(s3, bucket) == ([], [])
    restarts = [b for a, b in itertools.pairwise(sent) if b < a]
    assert restarts == [2 * PART]  # one resume, from the two whole parts S3 kept
