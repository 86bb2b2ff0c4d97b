"""A body cut into multipart parts under the server-wide memory budget, and
the parts uploaded with a bounded number in flight."""

from __future__ import annotations

import asyncio
import bisect
import io
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp.payload
from aiohttp.abc import AbstractStreamWriter

from blobgate.server.storage.byte_budget import ByteBudget, Claim
from blobgate.server.storage.checksums import crc32c_to_s3
from blobgate.server.storage.protocols import Chunk, ObjectRef
from blobgate.server.storage.s3.connection_shares import ConnectionShares
from blobgate.server.storage.s3.errors import s3_errors

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


class PartBody:
    """One part's bytes as the views of the received messages that hold
    them, never assembled: a read-only, seekable file-like body.

    botocore measures it (``len``, or ``seek``/``tell``), may read it to sign
    or checksum the payload (``read`` then ``seek`` back) and rewinds it
    before a retry (``seek(0)``); aiohttp sends it through ``_PartPayload``,
    which writes the views themselves, so the bytes go from the gRPC message
    to the socket without a copy in Python. Not an ``io.IOBase``: aiohttp
    would then read it in a thread, 64 KiB at a time.

    Like a BytesIO just written, a part comes from ``cut_parts`` positioned
    at its end (``tell()`` is its size); ``PartUploader.submit`` rewinds it.
    """

    def __init__(self, views: list[memoryview]) -> None:
        self._views = views
        self._starts: list[int] = []  # where each view starts in the part
        size = 0
        for view in views:
            self._starts.append(size)
            size += len(view)
        self._size = size
        self._position = size

    @property
    def views(self) -> list[memoryview]:
        """The part's bytes, in order (for hashing)."""
        return self._views

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def _pieces(self, limit: int) -> list[memoryview]:
        """Views of up to ``limit`` bytes (-1: all) from the position on,
        advancing it."""
        pieces: list[memoryview] = []
        at = self._at()
        wanted = self._size - self._position if limit < 0 else limit
        while wanted > 0 and 0 <= at < len(self._views) and self._position < self._size:
            view = self._views[at]
            inside = self._position - self._starts[at]
            piece = view[inside : inside + wanted]
            pieces.append(piece)
            self._position += len(piece)
            wanted -= len(piece)
            at += 1
        return pieces

    def _next_piece(self) -> memoryview | None:
        """The rest of the view at the position (None at the end), advancing
        the position past it."""
        if self._position >= self._size:
            return None
        at = self._at()
        piece = self._views[at][self._position - self._starts[at] :]
        self._position += len(piece)
        return piece

    def _at(self) -> int:
        return bisect.bisect_right(self._starts, self._position) - 1

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all by default) as bytes: a copy, made only
        where botocore reads the body itself (payload signing, a checksum it
        computes); sending uses the views."""
        return b"".join(self._pieces(-1 if size is None else size))

    def close(self) -> None:
        """Let go of the views (and so of the messages they point into)."""
        self._views = []
        self._starts = []
        self._size = self._position = 0


@aiohttp.payload.payload_type(PartBody)
class _PartPayload(aiohttp.payload.Payload):
    """How aiohttp sends a PartBody (its payload registry picks this class for
    one): the views as they are, from where the body stood when the request
    was made (botocore rewinds it for each of its attempts). Replayable, like
    a file: aiohttp itself sends a PUT again, from the same start, when a
    kept-alive connection turns out dead. Never closes the body: the
    PartUploader does, once S3 has the part."""

    _autoclose = True  # nothing of its own to close

    def __init__(self, value: PartBody, *args: Any, **kwargs: Any) -> None:
        super().__init__(value, *args, **kwargs)
        self._start = value.tell()
        self._size = len(value) - self._start

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        body: PartBody = self._value
        body.seek(self._start)
        remaining = content_length
        while (piece := body._next_piece()) is not None:
            if remaining is not None:
                if remaining <= 0:
                    break
                piece = piece[:remaining]
                remaining -= len(piece)
            await writer.write(piece)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        body: PartBody = self._value
        body.seek(self._start)
        return body.read().decode(encoding, errors)


async def cut_parts(
    body: AsyncIterable[Chunk], part_size: int, budget: ByteBudget, principal: str | None
) -> AsyncIterator[tuple[PartBody, Claim]]:
    """Cut ``body`` into parts of ``part_size`` bytes, then one last part
    shorter than that (possibly empty) once ``body`` ends.

    A part is the received chunks themselves (views, no copy), except a
    chunk that spans two parts: each part keeps a copy of its own share of
    it, so that no part holds bytes another part's budget counts, or bytes
    of a part already sent. Each part comes with its claim on ``budget``,
    charged to ``principal``: the claim covers the part's bytes as they
    arrive (a step at a time, ``byte_budget``), before they are kept, and
    the receiver hands it to ``PartUploader.submit`` or releases it itself
    (a last part's claim comes sealed; an empty last part's holds nothing).
    The budget's invariants let a part already begun always be covered to
    its end, so a part being filled waits only on its client and on parts
    that will finish.

    Budget is taken when data needs it, so a stream that sends nothing holds
    none, however long it stays open, and one that trickles holds about what
    it sent. While a stream waits for budget it holds the one message in
    hand (and what gRPC's flow-control window lets its client send ahead);
    the budget serves waiters in turn by principal. A chunk is referenced by
    the part that holds its bytes until that part is sent (``PartUploader``)
    or dropped, and by nothing else."""
    views: list[memoryview] = []
    filled = 0
    claim: Claim | None = None  # the budget of the part being filled
    try:
        async for chunk in body:
            rest: memoryview | None = memoryview(chunk) if len(chunk) else None
            del chunk
            spans = False  # the chunk spans a part boundary
            while rest is not None:
                if claim is None:
                    claim = budget.claim(part_size, principal)
                room = part_size - filled
                await claim.cover(filled + min(room, len(rest)))
                if not spans and len(rest) <= room:
                    piece, rest = rest, None
                else:
                    spans = True
                    piece = memoryview(bytes(rest[:room]))
                    rest = rest[room:] if room < len(rest) else None
                views.append(piece)
                filled += len(piece)
                del piece
                if filled == part_size:
                    handed, claim = claim, None
                    part, views, filled = PartBody(views), [], 0
                    yield part, handed
                    del part
        handed, claim = claim or budget.claim(part_size, principal), None
        handed.seal()
        yield PartBody(views), handed
    finally:
        views = []
        if claim is not None:
            claim.release()


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
        *,
        first_part: int = 1,
        on_uploaded: Callable[[int], Awaitable[None]] | None = None,
        shares: ConnectionShares | None = None,
    ) -> None:
        self._client = client
        self._shares = shares or ConnectionShares(in_flight)
        self._first_part = first_part
        self._on_uploaded = on_uploaded
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

    async def submit(self, part: PartBody, reserved: Claim, crc32c: int | None = None) -> None:
        """Upload ``part`` once a slot is free; its ``reserved`` budget goes
        back when S3 has it, or at once if it is never sent. With its
        ``crc32c`` (``Hasher.update_part``), S3 verifies the part's bytes."""
        try:
            self._raise_if_failed()
            await self._slots.acquire()
        except BaseException:
            reserved.release()
            raise
        try:
            self._raise_if_failed()
        except BaseException:
            self._slots.release()
            reserved.release()
            raise
        self.submitted += 1
        self.size += part.tell()
        part.seek(0)
        number = self._first_part + len(self._tasks)
        self._tasks.append(asyncio.create_task(self._upload(number, part, reserved, crc32c)))

    async def _upload(
        self, number: int, part: PartBody, reserved: Claim, crc32c: int | None
    ) -> dict[str, Any]:
        checksum = {} if crc32c is None else {"ChecksumCRC32C": crc32c_to_s3(crc32c)}
        try:
            with s3_errors(self._ref):
                async with self._shares.holding():
                    response = await self._client.upload_part(
                        Bucket=self._ref.bucket,
                        Key=self._ref.key,
                        UploadId=self.upload_id,
                        PartNumber=number,
                        Body=part,  # type: ignore[arg-type]  # file-like: read, seek, tell
                        **checksum,  # type: ignore[arg-type]
                    )
            if self._on_uploaded is not None:
                await self._on_uploaded(number)
            # CompleteMultipartUpload names each part's checksum too.
            return {"PartNumber": number, "ETag": response["ETag"], **checksum}
        finally:
            part.close()  # the bytes go before their budget does
            reserved.release()
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
