"""Direct uploads from the client's side: a resumable upload whose parts go
straight to S3 when the server offers it (StartResumableUploadRequest.direct).

The client starts a direct session and reads its source (bytes or a file:
it can be read again) twice. A first pass computes each part's CRC32C (for
the session's part_size) and the whole object's (~10-20 GB/s, no copy
kept). The second cuts the same parts again, checks each against its
first-pass CRC32C (a source that changed in between fails the upload, and
the session is cancelled), hashes it (sha256, in a worker thread, unless
the spec declares it) and PUTs it to S3, ``PARTS_IN_FLIGHT`` parts at once,
through URLs pinning its CRC32C that the server signs in batches of up to
``PRESIGN_BATCH`` parts (PresignUploadParts), asked for just before they
are needed: a URL that would expire within ``FRESH_SECONDS`` (or a
quarter of its lifetime) is signed again, in smaller batches from then on. A server without
PresignUploadParts (UNIMPLEMENTED) gets one PresignUploadPart per part.
Then the client commits with the whole object's size, CRC32C and sha256
(CompleteDirectUpload): the server checks the parts S3 holds against the
size and CRC32C, S3 the assembled object, and the sha256 is recorded.

The sha256 is not computed in the first pass, to be declared at the start
(which would spare the gateway its sha256 record and a HEAD at the commit,
~2 of its S3 requests): SHA-256 runs at ~1-2 GB/s, and hashing before the
first PUT would put that time in front of the whole transfer, where
hashing during it costs no time on a link slower than the hash.

Fallback: the data goes through the gateway, in a proxied session whose
spec declares the sha256 (hashed first, if it was not yet), when the server
answers a proxied session, or when S3 cannot be used from here (a
connection failure, a timeout, an HTTP error): the direct session is then
cancelled, since a server does not let one session mix direct parts and
proxied data. Part URLs are bearer credentials: never put in an error or a
log."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import crc32c
import grpc

from blobgate.client.direct import DirectFetcher, DirectUnavailable
from blobgate.client.errors import BlobgateError
from blobgate.client.models import ObjectInfo
from blobgate.client.options import ClientOptions
from blobgate.client.progress import Progress
from blobgate.client.resumable import ResumableUpload
from blobgate.client.retry import CallBudget, retry_unary
from blobgate.client.transport import Transport
from blobgate.v1 import storage_pb2

log = logging.getLogger(__name__)

PARTS_IN_FLIGHT = 4  # parts read ahead and PUT at once (memory: this many parts)
PRESIGN_BATCH = 64  # parts signed per PresignUploadParts call, at most
# A part URL is signed again once it has less than this left (or less than a
# quarter of its lifetime, if that is shorter).
FRESH_SECONDS = 10.0


@dataclass(frozen=True)
class _SignedPart:
    url: str
    headers: dict[str, str]
    fresh_until: datetime  # signed again past this


class _PartUrls:
    """The URLs of a direct session's parts, whose sizes and CRC32Cs are
    known up front, signed in batches as they are needed."""

    def __init__(
        self,
        upload_id: str,
        sizes: list[int],
        crcs: list[int],
        unary: Callable[[str, Any], Any],
    ) -> None:
        self._upload_id = upload_id
        self._sizes = sizes
        self._crcs = crcs
        self._unary = unary
        self._signed: dict[int, _SignedPart] = {}
        self._batch = PRESIGN_BATCH
        self._single = False  # the server has no PresignUploadParts
        self._lock = asyncio.Lock()

    def _fresh(self, number: int) -> _SignedPart | None:
        signed = self._signed.get(number)
        if signed is None or datetime.now(UTC) > signed.fresh_until:
            return None
        return signed

    async def get(self, number: int) -> _SignedPart:
        """Part ``number``'s URL and headers, fresh."""
        async with self._lock:  # parts in flight ask in turn: one batch call at a time
            signed = self._fresh(number)
            if signed is None:
                if number in self._signed:  # expired before its turn: smaller batches
                    self._batch = max(PARTS_IN_FLIGHT, self._batch // 2)
                await self._sign(number)
                signed = self._signed[number]
            del self._signed[number]
            return signed

    async def _sign(self, first: int) -> None:
        if not self._single:
            last = min(first + self._batch - 1, len(self._sizes))
            request = storage_pb2.PresignUploadPartsRequest(
                upload_id=self._upload_id,
                parts=[
                    storage_pb2.UploadPart(
                        part_number=n, size=self._sizes[n - 1], crc32c=self._crcs[n - 1]
                    )
                    for n in range(first, last + 1)
                ],
            )
            try:
                response = await self._unary("PresignUploadParts", request)
            except BlobgateError as exc:
                if exc.code != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                self._single = True  # an older server: one part a call
            else:
                for part in response.parts:
                    self._signed[part.part_number] = _signed_part(part)
                if first not in self._signed:
                    raise BlobgateError(
                        grpc.StatusCode.INTERNAL, f"the server signed no URL for part {first}"
                    )
                return
        single = storage_pb2.PresignUploadPartRequest(
            upload_id=self._upload_id,
            part_number=first,
            size=self._sizes[first - 1],
            crc32c=self._crcs[first - 1],
        )
        self._signed[first] = _signed_part(await self._unary("PresignUploadPart", single))


def _signed_part(answer: Any) -> _SignedPart:
    """A part URL from the server's answer: fresh until FRESH_SECONDS before
    it expires, or a quarter of its lifetime before, if that is shorter (a
    server whose URLs live only seconds)."""
    expires_at = answer.expires_at.ToDatetime(tzinfo=UTC)
    lifetime = max(timedelta(0), expires_at - datetime.now(UTC))
    margin = min(timedelta(seconds=FRESH_SECONDS), lifetime / 4)
    return _SignedPart(
        url=answer.url, headers=dict(answer.headers), fresh_until=expires_at - margin
    )


class DirectUpload:
    """One upload of ``spec`` (whose size is known) through a direct session
    when the server offers one; ``reread(offset)`` gives the source's bytes
    from ``offset`` on."""

    def __init__(
        self,
        transport: Transport,
        options: ClientOptions,
        spec: storage_pb2.UploadSpec,
        reread: Callable[[int], AsyncIterator[bytes]],
        progress: Progress | None,
        http: DirectFetcher,
    ) -> None:
        self._transport = transport
        self._options = options
        self._spec = spec
        self._reread = reread
        self._progress = progress
        self._http = http
        self._sent = 0
        self.declined = False  # the server answered a proxied session

    async def run(self) -> ObjectInfo:
        request = storage_pb2.StartResumableUploadRequest(spec=self._spec, direct=True)
        started = await self._unary("StartResumableUpload", request)
        if not started.direct:  # the server sends the data through itself
            self.declined = True
            if self._spec.expected.sha256:
                return await self._proxied(upload_id=started.upload_id)
            await self._cancel(started.upload_id)  # for one that declares the sha256
            return await self._proxied()
        try:
            return await self._direct(started.upload_id, int(started.part_size))
        except DirectUnavailable as exc:
            log.info("S3 cannot be used from here (%s): uploading through the gateway", exc)
            await self._cancel(started.upload_id)
            self._sent = 0
            return await self._proxied()
        except BaseException:
            await self._cancel(started.upload_id)
            raise

    async def _proxied(self, upload_id: str = "") -> ObjectInfo:
        spec = self._spec
        if not spec.expected.sha256:  # the gateway checks the whole object against it
            spec = storage_pb2.UploadSpec()
            spec.CopyFrom(self._spec)
            spec.expected.sha256 = await _sha256(self._reread(0))
        session = ResumableUpload(
            self._transport, self._options, spec, self._reread, self._progress
        )
        return await session.run(upload_id)

    async def _direct(self, upload_id: str, part_size: int) -> ObjectInfo:
        total = self._spec.size
        scan = await _scan(self._reread(0), part_size)
        if scan.size != total:
            raise ValueError(f"the source holds {scan.size} bytes, not the {total} declared")
        sizes, crcs = scan.sizes, scan.crcs
        urls = _PartUrls(upload_id, sizes, crcs, self._unary)
        digest = None if self._spec.expected.sha256 else hashlib.sha256()
        in_flight: set[asyncio.Task[None]] = set()
        try:
            number = 0
            async for part in _parts(self._reread(0), part_size):
                number += 1
                if (
                    number > len(crcs)
                    or len(part) != sizes[number - 1]
                    or crc32c.crc32c(part) != crcs[number - 1]
                ):
                    raise ValueError("the source changed during the upload")
                if digest is not None:  # hashlib lets go of the GIL: the PUTs go on
                    await asyncio.to_thread(digest.update, part)
                while len(in_flight) >= PARTS_IN_FLIGHT:
                    done, in_flight = await asyncio.wait(
                        in_flight, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in done:
                        task.result()  # the first failure ends the upload
                in_flight.add(asyncio.create_task(self._put(urls, number, part, total)))
            if number == 0:  # an empty object: one empty part
                in_flight.add(asyncio.create_task(self._put(urls, 1, b"", total)))
            elif number != len(sizes):
                raise ValueError("the source changed during the upload")
            await asyncio.gather(*in_flight)
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
        whole = scan.crc32c
        sha256 = self._spec.expected.sha256 if digest is None else digest.digest()
        request = storage_pb2.CompleteDirectUploadRequest(
            upload_id=upload_id, size=total, crc32c=whole, sha256=sha256
        )
        try:
            response = await self._unary("CompleteDirectUpload", request)
        except BlobgateError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            return await self._committed(exc, whole, sha256)
        return ObjectInfo.from_proto(response.object)

    async def _committed(self, failure: BlobgateError, crc: int, sha256: bytes) -> ObjectInfo:
        """The object a retried commit found already committed (its first
        reply was lost): the key holds exactly these bytes, else ``failure``."""
        spec = self._spec
        try:
            response = await self._unary(
                "Stat", storage_pb2.StatRequest(bucket=spec.bucket, key=spec.key)
            )
        except BlobgateError:
            raise failure from None
        info = ObjectInfo.from_proto(response.object)
        if info.size == spec.size and info.crc32c == crc and info.sha256 == sha256:
            return info
        raise failure

    async def _put(self, urls: _PartUrls, number: int, part: bytes, total: int) -> None:
        signed = await urls.get(number)
        await self._http.put(signed.url, signed.headers, part)
        self._sent += len(part)
        if self._progress is not None:
            self._progress(self._sent, total)

    async def _cancel(self, upload_id: str) -> None:
        await ResumableUpload(
            self._transport, self._options, self._spec, self._reread, None
        ).cancel(upload_id)

    async def _unary(self, method: str, request: Any) -> Any:
        budget = CallBudget.start(self._options.timeout, self._options.max_attempts)
        return await retry_unary(self._transport, budget, method, request)


async def _sha256(chunks: AsyncIterator[bytes]) -> bytes:
    """The sha256 of everything ``chunks`` yields, hashed in a worker thread."""
    digest = hashlib.sha256()
    try:
        async for chunk in chunks:
            await asyncio.to_thread(digest.update, chunk)
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
    return digest.digest()


@dataclass(frozen=True)
class _Scan:
    """What the first pass learnt of the source: the size and CRC32C of each
    part of ``part_size`` bytes (one empty part for no bytes), and the whole
    size and CRC32C."""

    sizes: list[int]
    crcs: list[int]
    crc32c: int

    @property
    def size(self) -> int:
        return sum(self.sizes)


async def _scan(chunks: AsyncIterator[bytes], part_size: int) -> _Scan:
    """Read ``chunks`` once, keeping none of them (see ``_Scan``)."""
    sizes: list[int] = []
    crcs: list[int] = []
    size = crc = whole = 0
    try:
        async for chunk in chunks:
            whole = crc32c.crc32c(chunk, value=whole)
            view = memoryview(chunk)
            while view:
                take = min(len(view), part_size - size)
                crc = crc32c.crc32c(view[:take], value=crc)
                size += take
                view = view[take:]
                if size == part_size:
                    sizes.append(size)
                    crcs.append(crc)
                    size = crc = 0
        if size or not sizes:
            sizes.append(size)
            crcs.append(crc)
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
    return _Scan(sizes, crcs, whole)


async def _parts(chunks: AsyncIterator[bytes], part_size: int) -> AsyncIterator[bytes]:
    """``chunks`` regrouped into parts of ``part_size`` bytes (the last may
    be shorter; none for no bytes)."""
    buffer = bytearray()
    try:
        async for chunk in chunks:
            buffer += chunk
            while len(buffer) >= part_size:
                yield bytes(buffer[:part_size])
                del buffer[:part_size]
        if buffer:
            yield bytes(buffer)
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


__all__ = ["FRESH_SECONDS", "PARTS_IN_FLIGHT", "PRESIGN_BATCH", "DirectUpload"]
