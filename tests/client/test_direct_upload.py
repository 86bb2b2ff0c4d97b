"""The Python client's direct uploads: a resumable upload asks for a direct
session, PUTs its parts straight to S3 where the server offers it, and
falls back to the gateway (a proxied session) where the server does not
offer it or S3 cannot be reached from the client."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import crc32c
import pytest

from blobgate.client import Client, SyncClient
from blobgate.client.resumable import RESUMABLE_THRESHOLD
from tests.support.gateways import gateway_settings
from tests.support.helpers import free_port, lines_of, payload, running_gateway

MiB = 1024 * 1024
ACCESS = "blobgate.access"
SIZE = RESUMABLE_THRESHOLD + 12_345  # resumable by default: 4 parts of 5 MiB


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=ACCESS)
    return caplog


def calls(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, int]]:
    """Each call's (method, status, bytes through the gateway)."""
    return [(line["method"], line["status"], line["bytes_in"]) for line in lines_of(caplog, ACCESS)]


def methods(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [method for method, _, _ in calls(caplog)]


@pytest.mark.both_s3s
async def test_a_large_upload_goes_straight_to_s3(
    s3_endpoint: str, bucket: str, logged: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    blob = payload(SIZE, seed=41)
    settings = gateway_settings(s3_endpoint, bucket, direct_transfers=True)
    async with running_gateway(settings) as (gw, _, _), Client(f"127.0.0.1:{gw.port}") as client:
        stored = await client.upload("cu/big.bin", blob)
        path = tmp_path / "big.bin"
        path.write_bytes(blob[::-1])
        from_path = await client.upload("cu/from-path.bin", path)
        info = await client.stat("cu/big.bin")
        assert b"".join([chunk async for chunk in client.download("cu/big.bin")]) == blob
    assert stored.size == info.size == len(blob) == from_path.size
    assert info.sha256 == hashlib.sha256(blob).digest()
    assert info.crc32c == crc32c.crc32c(blob)
    seen = methods(logged)
    assert "Upload" not in seen  # no byte went through the gateway
    # Each upload's 4 parts are signed in one call.
    assert seen.count("PresignUploadParts") == 2 and "PresignUploadPart" not in seen
    assert seen.count("CompleteDirectUpload") == 2
    assert all(received == 0 for _, _, received in calls(logged))


async def test_when_s3_cannot_be_reached_the_upload_goes_through_the_gateway(
    moto_endpoint: str, bucket: str, logged: pytest.LogCaptureFixture
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = gateway_settings(
        moto_endpoint, bucket, direct_transfers=True, s3_public_endpoint=closed
    )
    blob = payload(SIZE, seed=42)
    async with running_gateway(settings) as (gw, _, _), Client(f"127.0.0.1:{gw.port}") as client:
        stored = await client.upload("cu/fallback.bin", blob)
        assert b"".join([c async for c in client.download("cu/fallback.bin")]) == blob
    assert stored.size == len(blob)
    seen = calls(logged)
    assert ("CancelResumableUpload", "OK", 0) in seen  # the direct session ended
    assert ("Upload", "OK", len(blob)) in seen  # the data went through the gateway
    assert "CompleteDirectUpload" not in methods(logged)


async def test_a_server_without_direct_transfers_gets_a_proxied_session_with_the_sha256(
    moto_endpoint: str, bucket: str, logged: pytest.LogCaptureFixture
) -> None:
    """The first upload learns that the server offers no direct session: it
    cancels the one it got (started before the sha256 was known) and sends
    through a session that declares it; later uploads hash first and ask
    for a proxied session straight away."""
    blob = payload(SIZE, seed=43)
    async with (
        running_gateway(gateway_settings(moto_endpoint, bucket)) as (gw, _, _),
        Client(f"127.0.0.1:{gw.port}") as client,
    ):
        assert (await client.upload("cu/proxied.bin", blob)).size == len(blob)
        assert (await client.upload("cu/proxied2.bin", blob)).sha256 == hashlib.sha256(
            blob
        ).digest()
    seen = methods(logged)
    assert seen.count("StartResumableUpload") == 3 and seen.count("CancelResumableUpload") == 1
    assert calls(logged).count(("Upload", "OK", len(blob))) == 2


async def test_a_client_that_does_not_ask_and_the_sync_client(
    moto_endpoint: str, bucket: str, logged: pytest.LogCaptureFixture
) -> None:
    blob = payload(SIZE, seed=44)
    settings = gateway_settings(moto_endpoint, bucket, direct_transfers=True)
    async with running_gateway(settings) as (gw, _, _):
        target = f"127.0.0.1:{gw.port}"
        async with Client(target, direct_uploads=False) as plain:
            await plain.upload("cu/plain.bin", blob)
        assert not {"PresignUploadPart", "PresignUploadParts"} & set(methods(logged))

        def sync_upload() -> int:
            with SyncClient(target) as client:
                return client.upload("cu/sync.bin", blob).size

        assert await asyncio.to_thread(sync_upload) == len(blob)
    assert methods(logged).count("CompleteDirectUpload") == 1


async def test_parts_are_signed_in_batches_and_singly_by_an_older_server(
    moto_endpoint: str,
    bucket: str,
    logged: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches of PRESIGN_BATCH parts; a server that answers PresignUploadParts
    with UNIMPLEMENTED (one built before it: simulated, as no such server
    runs here) gets one PresignUploadPart per part, and the upload goes on."""
    import grpc

    from blobgate.client import direct_upload
    from blobgate.server.rpc.handlers import StorageServicer

    monkeypatch.setattr(direct_upload, "PRESIGN_BATCH", 3)
    blob = payload(SIZE, seed=45)
    settings = gateway_settings(moto_endpoint, bucket, direct_transfers=True)
    async with running_gateway(settings) as (gw, _, _), Client(f"127.0.0.1:{gw.port}") as client:
        assert (await client.upload("cu/batches.bin", blob)).size == len(blob)
    assert methods(logged).count("PresignUploadParts") == 2  # parts 1-3, then 4

    async def unimplemented(
        self: object, request: object, context: grpc.aio.ServicerContext
    ) -> None:  # type: ignore[type-arg]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")

    monkeypatch.setattr(StorageServicer, "PresignUploadParts", unimplemented)
    logged.clear()
    async with running_gateway(settings) as (gw, _, _), Client(f"127.0.0.1:{gw.port}") as client:
        assert (await client.upload("cu/singly.bin", blob)).size == len(blob)
        assert b"".join([c async for c in client.download("cu/singly.bin")]) == blob
    seen = methods(logged)
    assert seen.count("PresignUploadParts") == 1 and seen.count("PresignUploadPart") == 4


async def test_a_source_that_changes_between_the_passes_fails_the_upload(
    moto_endpoint: str, bucket: str, logged: pytest.LogCaptureFixture
) -> None:
    """Seven parts: the client reads at most PARTS_IN_FLIGHT + 1 parts (and
    the source's next chunk) before the first PUT ends, so the last part is
    read after that; changed by then, it no longer has the CRC32C of the
    first pass. No object, and the session is cancelled."""
    source = bytearray(payload(SIZE + 3 * 5 * MiB, seed=46))

    original = source[-1]

    def change(sent: int, total: int) -> None:
        source[-1] = original ^ 1  # once changed, it stays so

    settings = gateway_settings(moto_endpoint, bucket, direct_transfers=True)
    async with running_gateway(settings) as (gw, _, _), Client(f"127.0.0.1:{gw.port}") as client:
        with pytest.raises(ValueError, match="the source changed during the upload"):
            await client.upload("cu/changed.bin", source, progress=change)
        assert not [info async for info in client.list("cu/")]
    seen = calls(logged)
    assert ("CancelResumableUpload", "OK", 0) in seen
    assert "CompleteDirectUpload" not in methods(logged)


async def test_urls_that_live_a_second_are_signed_again_as_needed(
    moto_endpoint: str, bucket: str, logged: pytest.LogCaptureFixture
) -> None:
    """A server whose part URLs live one second: the client uses each while
    it has most of that second left, signs again past it, and the upload
    goes through with at most one call a part."""
    blob = payload(SIZE, seed=47)
    settings = gateway_settings(moto_endpoint, bucket, direct_transfers=True, direct_url_lifetime=1)
    async with running_gateway(settings) as (gw, _, _), Client(f"127.0.0.1:{gw.port}") as client:
        assert (await client.upload("cu/short-lived.bin", blob)).size == len(blob)
        assert b"".join([c async for c in client.download("cu/short-lived.bin")]) == blob
    seen = methods(logged)
    assert 1 <= seen.count("PresignUploadParts") <= 4 and "Upload" not in seen
