"""The client's resumable uploads: bytes and paths of 16 MiB or more go
through a session, and a broken stream resumes from the persisted size, on a
restarted instance too."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import grpc
import pytest

from blobgate.client import BlobgateError, Client
from blobgate.client.resumable import RESUMABLE_THRESHOLD
from blobgate.server.app import Gateway
from tests.support.helpers import (
    MiB,
    assert_exact,
    eventually,
    free_port,
    payload,
    sessions_left,
    sha256,
)
from tests.support.server_process import ServerProcess


async def test_big_uploads_go_through_a_session_and_leave_nothing_behind(
    gateway: Gateway, s3: Any, bucket: str, tmp_path: Path
) -> None:
    blob = payload(RESUMABLE_THRESHOLD + 3, seed=20)
    path = tmp_path / "big.bin"
    path.write_bytes(blob)
    async with Client(f"127.0.0.1:{gateway.port}") as client:
        info = await client.upload("from-bytes.bin", blob)
        assert info.sha256 == sha256(blob)
        info = await client.upload("from-path.bin", path)
        assert info.sha256 == sha256(blob)
    await assert_exact(s3, bucket, "from-bytes.bin", blob)
    await assert_exact(s3, bucket, "from-path.bin", blob)
    assert await sessions_left(s3, bucket) == ([], [])


async def test_resumable_needs_a_source_it_can_read_again(gateway: Gateway) -> None:
    async def stream() -> Any:
        yield b"once"

    async with Client(f"127.0.0.1:{gateway.port}") as client:
        with pytest.raises(ValueError, match="bytes or a path"):
            await client.upload("k", stream(), resumable=True)
        # Small bytes can be forced through a session too.
        info = await client.upload("small.txt", b"tiny", resumable=True)
        assert info.size == 4


async def test_a_refused_session_is_reported_and_leaves_nothing(
    gateway: Gateway, s3: Any, bucket: str
) -> None:
    await s3.put_object(Bucket=bucket, Key="taken.bin", Body=b"first")
    async with Client(f"127.0.0.1:{gateway.port}") as client:
        with pytest.raises(BlobgateError) as caught:
            await client.upload("taken.bin", payload(17 * MiB), if_none_match=True)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    body = await (await s3.get_object(Bucket=bucket, Key="taken.bin"))["Body"].read()
    assert body == b"first"
    assert await sessions_left(s3, bucket) == ([], [])


async def test_the_client_resumes_on_a_restarted_instance(
    moto_endpoint: str, s3: Any, bucket: str, processes: list[ServerProcess]
) -> None:
    """SIGKILL the only instance mid-upload and start another on its port:
    the client asks the new one where the session stands and sends the rest."""
    port = free_port()
    args = [
        "--listen", f"127.0.0.1:{port}",
        "--s3-endpoint", moto_endpoint,
        "--default-bucket", bucket,
        "--create-buckets",
        "--part-size", "5MiB",
    ]  # fmt: skip
    first = await ServerProcess.start(*args)
    processes.append(first)
    await first.wait_listening()
    blob = payload(40 * MiB, seed=21)
    reported: list[int] = []
    restart: asyncio.Task[None] | None = None

    async def kill_and_restart() -> None:
        async def two_parts_stored() -> None:
            uploads = (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", [])
            assert uploads, "no multipart upload yet"
            parts = await s3.list_parts(
                Bucket=bucket, Key="resumed.bin", UploadId=uploads[0]["UploadId"]
            )
            assert len(parts.get("Parts", [])) >= 2

        await eventually(two_parts_stored)
        await first.kill()
        second = await ServerProcess.start(*args)
        processes.append(second)
        await second.wait_listening()

    def progress(done: int, total: int | None) -> None:
        nonlocal restart
        reported.append(done)
        if restart is None and done >= 8 * MiB:
            restart = asyncio.create_task(kill_and_restart())

    async with Client(f"127.0.0.1:{port}", max_attempts=12) as client:
        info = await client.upload("resumed.bin", blob, progress=progress)
    assert restart is not None and restart.done()
    await restart
    assert info.sha256 == sha256(blob)
    await assert_exact(s3, bucket, "resumed.bin", blob)
    assert await sessions_left(s3, bucket) == ([], [])
    # The second stream started where the session stood, not from 0.
    drops = [(a, b) for a, b in itertools.pairwise(reported) if b < a]
    assert drops, "the upload was never interrupted"
    sent, resumed = drops[0]
    assert resumed > 0 and resumed % (5 * MiB) == 0
    # What the kill lost (docs/api.md, Resumable uploads): at most
    # (parts_in_flight + 1) parts of 5 MiB, plus the stream's 4 MiB receive
    # window and two of the client's 1 MiB messages.
    assert sent - resumed <= (4 + 1) * 5 * MiB + 4 * MiB + 2 * MiB, (sent, resumed)
