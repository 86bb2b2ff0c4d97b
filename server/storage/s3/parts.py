"""A body cut into multipart parts under the server-wide memory budget, and
the parts uploaded with a bounded number in flight."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from blobgate.server.storage.limits import ByteBudget
from blobgate.server.storage.protocols import Chunk, ObjectRef
from blobgate.server.storage.s3.errors import s3_errors

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


async def cut_parts(
    body: AsyncIterable[Chunk], part_size: int, budget: ByteBudget
) -> AsyncIterator[tuple[io.BytesIO, int]]:
    """Cut ``body`` into parts of ``part_size`` bytes, then one last part
    shorter than that (possibly empty) once ``body`` ends.

    Bytes collect in a BytesIO (aiohttp sends one in small writes, where a
    large bytes body would be copied whole into the socket buffer). A part
    takes a whole part's worth of ``budget`` when its first bytes arrive,
    and comes with it: the receiver hands both to ``PartUploader.submit`` or
    releases the budget itself (a last part with no bytes comes with none).
    Taking budget bit by bit would let two half-filled parts wait on each
    other forever; this way a part being filled waits only on its client.

    Budget is taken when data needs it, so a stream that sends nothing holds
    none, however long it stays open. While a stream waits for budget it
    holds the one message in hand (and what gRPC's flow-control window lets
    its client send ahead); the budget serves waiters in order. A chunk is
    referenced only while bytes of it are unwritten: not while its part
    waits for an upload slot, nor while the next chunk is awaited."""
    part = io.BytesIO()
    reserved = 0  # budget held for the part being filled
    try:
        async for chunk in body:
            rest: memoryview | None = memoryview(chunk) if len(chunk) else None
            del chunk
            while rest is not None:
                if not reserved:
                    await budget.acquire(part_size)
                    reserved = part_size
                room = part_size - part.tell()
                part.write(rest[:room])
                rest = rest[room:] if room < len(rest) else None
                if part.tell() == part_size:
                    handed, reserved = reserved, 0
                    yield part, handed
                    part = io.BytesIO()
        handed, reserved = reserved, 0
        yield part, handed
    finally:
        await budget.release(reserved)


class PartUploader:
    """One multipart upload's parts, at most ``in_flight`` uploading at once.
    ``submit`` waits for a free slot, which is what stops the caller from
    reading more of its stream: the backpressure that bounds memory."""

    def __init__(
        self,
        client: S3Client,
        ref: ObjectRef,
        upload_id: str,
        in_flight: int,
        budget: ByteBudget,
        *,
        first_part: int = 1,
        on_uploaded: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._first_part = first_part
        self._on_uploaded = on_uploaded
        self._budget = budget
        self._ref = ref
        self.upload_id = upload_id
        self._slots = asyncio.Semaphore(in_flight)
        self._tasks: list[asyncio.Task[dict[str, Any]]] = []
        self.submitted = 0
        self.size = 0

    def _raise_if_failed(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def submit(self, part: io.BytesIO, reserved: int) -> None:
        """Upload ``part`` once a slot is free; ``reserved`` bytes of budget
        go back when S3 has it, or at once if it is never sent."""
        try:
            self._raise_if_failed()
            await self._slots.acquire()
        except BaseException:
            await self._budget.release(reserved)
            raise
        try:
            self._raise_if_failed()
        except BaseException:
            self._slots.release()
            await self._budget.release(reserved)
            raise
        self.submitted += 1
        self.size += part.tell()
        part.seek(0)
        number = self._first_part + len(self._tasks)
        self._tasks.append(asyncio.create_task(self._upload(number, part, reserved)))

    async def _upload(self, number: int, part: io.BytesIO, reserved: int) -> dict[str, Any]:
        try:
            with s3_errors(self._ref):
                response = await self._client.upload_part(
                    Bucket=self._ref.bucket,
                    Key=self._ref.key,
                    UploadId=self.upload_id,
                    PartNumber=number,
                    Body=part,
                )
            if self._on_uploaded is not None:
                await self._on_uploaded(number)
            return {"PartNumber": number, "ETag": response["ETag"]}
        finally:
            await self._budget.release(reserved)
            part.close()
            self._slots.release()

    async def finish(self) -> list[dict[str, Any]]:
        """Wait for every submitted part; their numbers and ETags."""
        return list(await asyncio.gather(*self._tasks))

    async def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def settle(self, within: float) -> None:
        """Give the parts already on their way ``within`` seconds to land
        (what they store still counts), then cancel whatever is left."""
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=within)
        await self.cancel()
