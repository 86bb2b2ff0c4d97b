"""Per-principal quotas: one identified caller's concurrent Upload/Download
streams (per instance) and open resumable sessions (across the fleet, counted
in S3), with mTLS callers; callers without an identity are not counted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import grpc
import pytest

from blobgate.server.app import Gateway, start_gateway
from blobgate.server.settings_loading import SettingsError, load_settings
from blobgate.server.storage.quotas import SESSION_MARKERS, principal_prefix
from blobgate.v1 import storage_pb2 as pb
from blobgate.v1 import storage_pb2_grpc
from tests.fakes.pki import CA, Issued
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import eventually, resume_requests, upload
from tests.support.mtls import OWN_CONNECTION, caller, mtls_gateway
from tests.support.mtls import client_credentials as _credentials

Code = grpc.StatusCode


@pytest.fixture
def ca() -> CA:
    return CA()


def _upload_blocking(
    port: int, credentials: grpc.ChannelCredentials, requests: Iterable[pb.UploadRequest]
) -> pb.Object:
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=OWN_CONNECTION) as ch:
        return storage_pb2_grpc.StorageServiceStub(ch).Upload(iter(requests), timeout=30).object


async def upload_as(
    gateway: Gateway, ca: CA, client: Issued, requests: Iterable[pb.UploadRequest]
) -> pb.Object:
    """One Upload as ``client``, on grpc's synchronous client (which reports
    the status the server sent when it ends a stream early; see
    helpers.upload_requests)."""
    credentials = _credentials(ca, client)
    return await asyncio.to_thread(_upload_blocking, gateway.port, credentials, list(requests))


def small_upload(key: str, blob: bytes = b"ok") -> list[pb.UploadRequest]:
    return [pb.UploadRequest(spec=pb.UploadSpec(key=key)), pb.UploadRequest(data=blob)]


class HeldUpload:
    """An Upload that sends its spec and some data, then waits to be released."""

    def __init__(self, stub: Any, key: str) -> None:
        self.release = asyncio.Event()
        self.call = stub.Upload(self._requests(key), timeout=30)

    async def _requests(self, key: str) -> AsyncIterator[pb.UploadRequest]:
        yield pb.UploadRequest(spec=pb.UploadSpec(key=key))
        yield pb.UploadRequest(data=b"first")
        await self.release.wait()
        yield pb.UploadRequest(data=b" second")

    async def started(self) -> None:
        """Once the store reads its data, it holds its stream slots."""
        await asyncio.wait_for(self.call.initial_metadata(), 10)

    async def finish(self) -> pb.Object:
        self.release.set()
        return (await self.call).object


async def download_code(stub: Any, key: str) -> Code:
    try:
        async for _ in stub.Download(pb.DownloadRequest(key=key), timeout=10):
            pass
    except grpc.aio.AioRpcError as error:
        return error.code()
    return Code.OK


async def test_a_principal_at_its_stream_cap_is_refused_while_another_streams(
    tmp_path: Path, ca: CA, moto_endpoint: str, bucket: str
) -> None:
    alice, bob = ca.client("alice"), ca.client("bob")
    async with (
        mtls_gateway(
            tmp_path, ca, moto_endpoint, bucket, max_streams=8, max_streams_per_principal=2
        ) as gateway,
        caller(gateway, ca, alice) as as_alice,
        caller(gateway, ca, bob) as as_bob,
    ):
        await upload_as(gateway, ca, bob, small_upload("shared.txt"))
        held = [HeldUpload(as_alice, f"held-{index}") for index in range(2)]
        for one in held:
            await one.started()
        # Alice is at her cap: a third stream of hers, Upload or Download, is refused at once.
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            await upload_as(gateway, ca, alice, small_upload("third.txt"))
        assert refused.value.code() == Code.RESOURCE_EXHAUSTED
        assert "this caller is at its limit of 2 concurrent transfers" in refused.value.details()
        assert await download_code(as_alice, "shared.txt") == Code.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < 5
        # Unary calls are not counted.
        await as_alice.Stat(pb.StatRequest(key="shared.txt"), timeout=10)
        # Bob still streams, both ways, at the same time as Alice's two.
        assert (await upload_as(gateway, ca, bob, small_upload("bob.txt"))).size == 2
        assert await download_code(as_bob, "shared.txt") == Code.OK
        # Alice's streams end: her slots are free again.
        for one in held:
            assert (await one.finish()).size == len(b"first second")
        assert (await upload_as(gateway, ca, alice, small_upload("after.txt"))).size == 2
        assert await download_code(as_alice, "shared.txt") == Code.OK


async def test_cancelled_streams_give_their_slots_back(
    tmp_path: Path, ca: CA, moto_endpoint: str, bucket: str, s3: Any
) -> None:
    alice = ca.client("alice")
    async with (
        mtls_gateway(
            tmp_path, ca, moto_endpoint, bucket, max_streams=8, max_streams_per_principal=1
        ) as gateway,
        caller(gateway, ca, alice) as as_alice,
    ):
        # A download whose client reads nothing (larger than every window), then cancels.
        big = b"x" * (12 * 1024 * 1024)
        await s3.put_object(Bucket=bucket, Key="big.bin", Body=big)
        stalled = as_alice.Download(pb.DownloadRequest(key="big.bin"), timeout=30)
        await asyncio.wait_for(stalled.initial_metadata(), 10)
        assert await download_code(as_alice, "big.bin") == Code.RESOURCE_EXHAUSTED
        stalled.cancel()

        async def slot_free() -> None:
            assert await download_code(as_alice, "missing.bin") == Code.NOT_FOUND

        await eventually(slot_free, within=10)
        # An upload the client cancels midway.
        held = HeldUpload(as_alice, "cancelled.bin")
        await held.started()
        assert await download_code(as_alice, "missing.bin") == Code.RESOURCE_EXHAUSTED
        held.call.cancel()
        await eventually(slot_free, within=10)


async def _start(stub: Any, key: str) -> str:
    response = await stub.StartResumableUpload(
        pb.StartResumableUploadRequest(spec=pb.UploadSpec(key=key)), timeout=10
    )
    return str(response.upload_id)


async def _start_code(stub: Any, key: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _start(stub, key)
    return refused.value


async def _markers(s3: Any, bucket: str) -> list[str]:
    listing = await s3.list_objects_v2(Bucket=bucket, Prefix=SESSION_MARKERS)
    return [entry["Key"] for entry in listing.get("Contents", [])]


async def _marker_etags(s3: Any, bucket: str) -> list[tuple[str, str]]:
    listing = await s3.list_objects_v2(Bucket=bucket, Prefix=SESSION_MARKERS)
    return [(entry["Key"], entry["ETag"]) for entry in listing.get("Contents", [])]


async def test_open_sessions_are_counted_across_instances(
    tmp_path: Path, ca: CA, moto_endpoint: str, bucket: str, s3: Any
) -> None:
    """Two instances sharing one bucket: the quota holds across them;
    cancelling or finishing a session frees its slot."""
    alice, bob = ca.client("alice"), ca.client("bob")
    async with (
        mtls_gateway(tmp_path, ca, moto_endpoint, bucket, max_sessions_per_principal=2) as one,
        mtls_gateway(tmp_path, ca, moto_endpoint, bucket, max_sessions_per_principal=2) as two,
        caller(one, ca, alice) as alice_one,
        caller(two, ca, alice) as alice_two,
        caller(one, ca, bob) as bob_one,
    ):
        first = await _start(alice_one, "a/1")
        second = await _start(alice_two, "a/2")
        for stub in (alice_one, alice_two):
            refused = await _start_code(stub, "a/3")
            assert refused.code() == Code.RESOURCE_EXHAUSTED
            details = refused.details() or ""
            assert "2 resumable upload sessions open" in details
            assert "finish or cancel one" in details and "expire" in details
        await _start(bob_one, "b/1")  # another caller has a quota of its own
        markers = await _markers(s3, bucket)
        assert len(markers) == 3
        assert all("alice" not in key and "bob" not in key for key in markers)
        assert sum(key.startswith(principal_prefix("cn:alice")) for key in markers) == 2
        # Cancelling one (on the other instance) frees its slot.
        await alice_two.CancelResumableUpload(
            pb.CancelResumableUploadRequest(upload_id=first), timeout=10
        )
        await _start(alice_one, "a/3")
        assert (await _start_code(alice_two, "a/4")).code() == Code.RESOURCE_EXHAUSTED
        # Finishing one (resumed on the other instance) frees its slot too.
        blob = b"resumed bytes"
        stored = await upload_as(two, ca, alice, resume_requests(second, 0, blob))
        assert stored.size == len(blob)
        await _start(alice_two, "a/4")
        assert (await _start_code(alice_one, "a/5")).code() == Code.RESOURCE_EXHAUSTED


async def test_expired_markers_do_not_count(
    tmp_path: Path, ca: CA, moto_endpoint: str, bucket: str, s3: Any
) -> None:
    """A session idle past session_expiry frees its slot, whether or not the
    janitor has aborted it yet; its marker is deleted when next counted."""
    alice = ca.client("alice")
    async with (
        mtls_gateway(
            tmp_path,
            ca,
            moto_endpoint,
            bucket,
            max_sessions_per_principal=1,
            session_expiry=2.0,
            janitor_interval=0,
        ) as gateway,
        caller(gateway, ca, alice) as as_alice,
    ):
        await _start(as_alice, "old")
        assert (await _start_code(as_alice, "new")).code() == Code.RESOURCE_EXHAUSTED
        old_markers = await _marker_etags(s3, bucket)
        await asyncio.sleep(3.1)  # S3 times are whole seconds
        await _start(as_alice, "new")
        markers = await _marker_etags(s3, bucket)
        assert len(markers) == 1 and markers != old_markers  # the slot taken over


async def test_a_resumed_session_refreshes_its_marker(
    tmp_path: Path, ca: CA, moto_endpoint: str, bucket: str, s3: Any
) -> None:
    """Resuming a session restarts its idle time, so it keeps counting."""
    alice = ca.client("alice")
    async with (
        mtls_gateway(
            tmp_path,
            ca,
            moto_endpoint,
            bucket,
            max_sessions_per_principal=1,
            session_expiry=3.0,
            janitor_interval=0,
        ) as gateway,
        caller(gateway, ca, alice) as as_alice,
    ):
        upload_id = await _start(as_alice, "kept")
        await asyncio.sleep(2.1)
        # A resume that sends less than the declared size fails; the session stays.
        requests = [
            pb.UploadRequest(resume=pb.UploadResume(upload_id=upload_id, write_offset=0)),
            pb.UploadRequest(data=b"partial"),
        ]
        call = as_alice.Upload(_paused(requests), timeout=10)
        await asyncio.wait_for(call.initial_metadata(), 10)
        call.cancel()
        await asyncio.sleep(1.5)  # past the expiry counted from the start, not from the resume
        assert (await _start_code(as_alice, "other")).code() == Code.RESOURCE_EXHAUSTED


async def _paused(requests: list[pb.UploadRequest]) -> AsyncIterator[pb.UploadRequest]:
    for request in requests:
        yield request
    await asyncio.Event().wait()  # the stream stays open until the call is cancelled


async def test_callers_without_an_identity_are_not_counted(
    moto_endpoint: str, bucket: str, s3: Any
) -> None:
    """Plaintext (and --dev): no principal, no per-principal quota, no markers;
    the server-wide stream cap still applies."""
    settings = gateway_settings(moto_endpoint, bucket, max_streams=3, max_sessions_per_principal=1)
    assert settings.streams_per_principal == 1
    gateway = await start_gateway(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            held = [HeldUpload(stub, f"held-{index}") for index in range(3)]
            for one in held:
                await one.started()
            with pytest.raises(grpc.RpcError) as refused:
                await upload(gateway, "fourth.txt", b"x", rpc_timeout=10)
            assert refused.value.code() == Code.RESOURCE_EXHAUSTED
            assert "the server is at its limit of 3" in refused.value.details()
            for one in held:
                await one.finish()
            for index in range(3):
                await _start(stub, f"s/{index}")
        assert await _markers(s3, bucket) == []
    finally:
        await stop_gateway(gateway)


def test_the_quota_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _ = load_settings([])
    assert settings.max_streams_per_principal is None
    assert settings.streams_per_principal == settings.max_streams // 4 == 64
    assert settings.max_sessions_per_principal == 100
    assert load_settings(["--max-streams", "1"])[0].streams_per_principal == 1
    given = ["--max-streams", "10", "--max-streams-per-principal", "10"]
    assert load_settings(given)[0].streams_per_principal == 10
    monkeypatch.setenv("BLOBGATE_MAX_STREAMS_PER_PRINCIPAL", "")
    assert load_settings([])[0].max_streams_per_principal is None
    for argv, fragment in [
        (["--max-streams", "4", "--max-streams-per-principal", "5"], "more than max_streams 4"),
        (["--max-streams-per-principal", "0"], "max_streams_per_principal"),
        (["--max-sessions-per-principal", "0"], "max_sessions_per_principal"),
        (["--max-sessions-per-principal", "1001"], "max_sessions_per_principal"),
    ]:
        with pytest.raises(SettingsError, match=fragment):
            load_settings(argv)
