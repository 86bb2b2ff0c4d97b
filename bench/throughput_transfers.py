"""The throughput benchmark's four transfers: an object up and down through
the gateway and directly to S3, every received byte checked as it arrives."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from bench import MiB
from bench.errors import BenchError
from blobgate.v1 import storage_pb2 as pb

BUCKET = "blobgate-bench"


class Transfers:
    def __init__(self, stub: Any, s3: Any, args: argparse.Namespace, notes: list[str]) -> None:
        self.stub, self.s3, self.timeout, self.notes = stub, s3, args.op_timeout, notes
        self.part_size, self.in_flight = args.part_size, args.parts_in_flight

    async def gateway_upload(self, key: str, data: bytes, digest: bytes) -> None:
        async def requests() -> AsyncIterator[pb.UploadRequest]:
            expected = pb.Checksums(sha256=digest)
            yield pb.UploadRequest(spec=pb.UploadSpec(key=key, size=len(data), expected=expected))
            view = memoryview(data)
            for offset in range(0, len(data), MiB):  # protobuf wants bytes: one 1 MiB copy each
                yield pb.UploadRequest(data=bytes(view[offset : offset + MiB]))

        reply = await self.stub.Upload(requests(), timeout=self.timeout)
        if reply.object.size != len(data) or reply.object.checksums.sha256 != digest:
            self.notes.append(f"Upload {key}: reply size/sha256 differ from what was sent")

    async def gateway_download(self, key: str, expect: bytes) -> None:
        offset = 0
        call = self.stub.Download(pb.DownloadRequest(key=key), timeout=self.timeout)
        async for message in call:
            if message.WhichOneof("message") == "data":
                data = message.data  # each access copies the field: read it once
                if len(data) > MiB:
                    self.notes.append(f"Download {key}: a data message above 1 MiB")
                offset = check(key, expect, offset, data)
            elif offset:
                self.notes.append(f"Download {key}: an Object message after data")
        check_end(key, expect, offset)

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


def check(key: str, expect: bytes, offset: int, chunk: bytes) -> int:
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
