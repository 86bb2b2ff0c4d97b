"""The throughput benchmark's transfers: an object up through the gateway
(with and without a declared size and sha256) and directly to S3, and down
through the gateway (the client's raw Download deserializer, the project's
Client with its whole-object check, or protobuf objects as a generated stub
makes them), with the Client sent straight to S3 by the gateway (a direct
download: a presigned GET; a direct upload: presigned part PUTs), and
directly; every received byte checked as it
arrives."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from bench import MiB
from bench.common.errors import BenchError
from blobgate.client import Client
from blobgate.client.wire import StorageStub, download_payload
from blobgate.v1 import storage_pb2 as pb
from blobgate.v1 import storage_pb2_grpc

BUCKET = "blobgate-bench"


class Transfers:
    """The transfers through one gateway (on ``channel``) and directly to ``s3``."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        client: Client,
        s3: Any,
        args: argparse.Namespace,
        notes: list[str],
        *,
        direct_client: Client | None = None,
    ) -> None:
        self.client = client  # the project's Python client, on its own channel
        self.direct_client = direct_client or client  # the same, asking for direct downloads
        self.stub = StorageStub(channel)  # the Python client's: Download data raw
        self.generated_stub = storage_pb2_grpc.StorageServiceStub(channel)
        self.s3, self.timeout, self.notes = s3, args.op_timeout, notes
        self.part_size, self.in_flight = args.part_size, args.parts_in_flight

    async def gateway_upload(
        self, key: str, data: bytes, digest: bytes, *, declare: bool = True
    ) -> None:
        """Upload ``data`` (whose sha256 is ``digest``), declaring its size and
        sha256, or, unless ``declare``, neither: a client streaming from a
        source. The reply's sha256, when it has one, must be ``digest``."""

        async def requests() -> AsyncIterator[pb.UploadRequest]:
            if not declare:
                yield pb.UploadRequest(spec=pb.UploadSpec(key=key))
            else:
                expected = pb.Checksums(sha256=digest)
                spec = pb.UploadSpec(key=key, size=len(data), expected=expected)
                yield pb.UploadRequest(spec=spec)
            view = memoryview(data)
            for offset in range(0, len(data), MiB):  # protobuf wants bytes: one 1 MiB copy each
                yield pb.UploadRequest(data=bytes(view[offset : offset + MiB]))

        reply = await self.stub.Upload(requests(), timeout=self.timeout)
        if reply.object.size != len(data) or reply.object.checksums.sha256 not in (digest, b""):
            self.notes.append(f"Upload {key}: reply size/sha256 differ from what was sent")

    async def gateway_download(self, key: str, expect: bytes, *, parsed: bool = False) -> None:
        """Download ``key`` as the Python client does (data messages as views
        of the received bytes), or ``parsed`` into protobuf objects."""
        offset = 0
        stub = self.generated_stub if parsed else self.stub
        call = stub.Download(pb.DownloadRequest(key=key), timeout=self.timeout)
        async for message in call:
            data = download_payload(message)
            if data is not None:
                if len(data) > MiB:
                    self.notes.append(f"Download {key}: a data message above 1 MiB")
                offset = check(key, expect, offset, data)
            elif offset:
                self.notes.append(f"Download {key}: an Object message after data")
        check_end(key, expect, offset)

    async def client_download(self, key: str, expect: bytes, *, direct: bool = False) -> None:
        """Download ``key`` with the project's Client (its whole-object check
        included), taking the chunks as views (``DownloadStream.views``, as
        download_to does); ``direct``: the Client that reads from S3."""
        offset = 0
        client = self.direct_client if direct else self.client
        async with await client.open_download(key) as stream:
            async for chunk in stream.views():
                offset = check(key, expect, offset, chunk)
        check_end(key, expect, offset)

    async def client_upload_direct(self, key: str, data: bytes) -> None:
        """Upload ``data`` with the Client, which takes a direct session for an
        object this big (the gateway runs with --direct-transfers): the
        gateway checks, presigns each part and commits; the Client PUTs the
        parts to S3 with aiohttp."""
        info = await self.direct_client.upload(key, data, resumable=True)
        if info.size != len(data):
            self.notes.append(f"Client direct upload {key}: reply size differs from what was sent")

    async def direct_answers(self, key: str, calls: int) -> None:
        """Ask ``calls`` times for a direct download of ``key`` and take the
        answer (the object, the URL) without the GET: the gateway's part of
        a direct download, too small to time from one transfer."""
        request = pb.DownloadRequest(key=key, direct=True)
        for _ in range(calls):
            kinds = [
                message.WhichOneof("message")
                async for message in self.generated_stub.Download(request, timeout=self.timeout)
            ]
            if kinds != ["object", "direct"]:
                self.notes.append(f"Download {key} (direct): answered {kinds}")
                return

    async def direct_upload(self, key: str, data: bytes) -> None:
        s3 = self.s3
        if len(data) <= self.part_size:
            await s3.put_object(Bucket=BUCKET, Key=key, Body=data)
            return
        upload_id = (await s3.create_multipart_upload(Bucket=BUCKET, Key=key))["UploadId"]
        budget = asyncio.Semaphore(self.in_flight)

        async def part(number: int, offset: int) -> dict[str, Any]:
            async with budget:  # slice inside: at most in_flight parts in memory
                body = data[offset : offset + self.part_size]
                reply = await s3.upload_part(
                    Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                )
                return {"PartNumber": number, "ETag": reply["ETag"]}

        try:
            async with asyncio.TaskGroup() as group:
                offsets = range(0, len(data), self.part_size)
                tasks = [group.create_task(part(n, off)) for n, off in enumerate(offsets, 1)]
            parts = [task.result() for task in tasks]
            await s3.complete_multipart_upload(
                Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)
            raise

    async def direct_download(self, key: str, expect: bytes) -> None:
        offset = 0
        body = (await self.s3.get_object(Bucket=BUCKET, Key=key))["Body"]
        async with body:  # entering yields aiohttp's response; read through the StreamingBody
            while chunk := await body.read(MiB):
                offset = check(key, expect, offset, chunk)
        check_end(key, expect, offset)


def check(key: str, expect: bytes, offset: int, chunk: bytes | memoryview) -> int:
    """Compare a received chunk with the source in place and return the next offset.
    Done while timing, at ~13 GB/s: keeping the chunks to compare later was
    measured to slow the direct download ~30% (every chunk page-faults fresh
    memory) and so to flatter the gateway's ratio."""
    if not expect.startswith(chunk, offset):
        raise BenchError(
            f"{key}: received bytes differ from the source in [{offset}, +{len(chunk)})"
        )
    return offset + len(chunk)


def check_end(key: str, expect: bytes, offset: int) -> None:
    if offset != len(expect):
        raise BenchError(f"{key}: received {offset} bytes, sent {len(expect)}")
