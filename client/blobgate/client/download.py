"""Downloads: opening the stream (straight from S3 when the server offers
it: ``blobgate.client.direct``), reading it with the whole-object check
(``blobgate.client.verify``), and opening it again elsewhere when an
instance fails before any bytes reached the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Self

import grpc

from blobgate.client.direct import DirectFetcher, DirectUnavailable, ObjectChanged
from blobgate.client.errors import BlobgateError, translate_errors
from blobgate.client.models import ObjectInfo
from blobgate.client.progress import Progress
from blobgate.client.retry import CallBudget, on_endpoint, retry_call
from blobgate.client.transport import Endpoint, Transport
from blobgate.client.verify import ContentCheck
from blobgate.client.wire import call_metadata, download_payload
from blobgate.v1 import storage_pb2

# How often a direct download asks the server again when S3 no longer has
# the object it described (replaced or deleted meanwhile), before reading
# through the gateway.
DIRECT_RETRIES = 2


@dataclass
class OpenedDownload:
    """A download whose first message (the object) has arrived: a call on
    ``endpoint``, which the transport counts as busy until released, or the
    GET of a direct download (``endpoint`` None). ``direct``: the server's
    answer to a direct request, not yet fetched."""

    call: Any
    info: ObjectInfo
    endpoint: Endpoint | None
    direct: storage_pb2.DirectDownload | None = None


class _Prefetched:
    """A Download call whose next message (or the error reading it) was
    taken already."""

    def __init__(self, call: Any, message: Any) -> None:
        self._call = call
        self._message = message
        self._pending = True

    async def read(self) -> Any:
        if self._pending:
            self._pending = False
            if isinstance(self._message, BaseException):
                raise self._message
            return self._message
        return await self._call.read()

    def cancel(self) -> bool:
        return bool(self._call.cancel())


class DownloadOpener:
    """Opens a download on some endpoint, and again on another one when the
    first fails before the caller got any bytes; all within one budget."""

    def __init__(
        self,
        transport: Transport,
        request: storage_pb2.DownloadRequest,
        budget: CallBudget,
        fetcher: DirectFetcher | None = None,
    ) -> None:
        self.transport = transport
        self._request = request
        self._budget = budget
        self._fetcher = fetcher
        self._changes_left = DIRECT_RETRIES
        if fetcher is None:
            self._through_gateway()

    async def open(self, after: BlobgateError | None = None) -> OpenedDownload:
        """The download, opened with retries (after the failure ``after``, if
        given); a direct one with its GET started, or through the gateway
        when S3 cannot be read from here."""
        opened = await self._open_call(after)
        while opened.direct is not None:
            opened = await self._fetch(opened)
        return opened

    async def _open_call(self, after: BlobgateError | None = None) -> OpenedDownload:
        budget = self._budget
        return await retry_call(
            budget,
            lambda: on_endpoint(self.transport, budget, self._attempt, keep=True),
            target=self.transport.target,
            after=after,
        )

    async def _fetch(self, opened: OpenedDownload) -> OpenedDownload:
        """Start the GET of a direct answer; else ask again (the object
        changed since it was described) or read through the gateway."""
        assert opened.direct is not None and self._fetcher is not None
        opened.call.cancel()  # the server ended it after the DirectDownload
        if opened.endpoint is not None:
            self.transport.release(opened.endpoint)
        request = self._request
        expected = range_size(opened.info.size, request.offset, request.limit)
        try:
            body = await self._fetcher.get(opened.direct, expected, self._budget.deadline)
        except ObjectChanged:
            if self._changes_left <= 0:
                self._through_gateway()
            self._changes_left -= 1
            return await self._open_call()
        except DirectUnavailable:
            self._through_gateway()
            return await self._open_call()
        return OpenedDownload(body, opened.info, None)

    def _through_gateway(self) -> None:
        """Ask for the bytes through the gateway from now on."""
        if self._request.direct:
            request = storage_pb2.DownloadRequest()
            request.CopyFrom(self._request)
            request.direct = False
            self._request = request

    async def _attempt(self, endpoint: Endpoint, time_left: float | None) -> OpenedDownload:
        call = endpoint.stub.Download(self._request, timeout=time_left, metadata=call_metadata())
        try:
            first = await call.read()
        except BaseException:
            call.cancel()
            raise
        described = not isinstance(first, memoryview) and first is not grpc.aio.EOF
        if not described or first.WhichOneof("message") != "object":
            call.cancel()
            raise BlobgateError(
                grpc.StatusCode.INTERNAL, "server did not describe the object first"
            )
        info = ObjectInfo.from_proto(first.object)
        if not self._request.direct:
            return OpenedDownload(call, info, endpoint)
        try:
            second = await call.read()  # a DirectDownload, or the bytes
        except grpc.aio.AioRpcError as exc:
            # The object was described: the stream's failure is met where it
            # would have been without direct (pinned retries, see reopen).
            return OpenedDownload(_Prefetched(call, exc), info, endpoint)
        except BaseException:
            call.cancel()
            raise
        if isinstance(second, storage_pb2.DownloadResponse) and second.HasField("direct"):
            return OpenedDownload(call, info, endpoint, second.direct)
        return OpenedDownload(_Prefetched(call, second), info, endpoint)

    async def reopen(
        self, exc: BlobgateError, failed: Endpoint | None, etag: str
    ) -> OpenedDownload:
        """After ``exc`` on ``failed``: pause, then open the same version
        (``etag``) elsewhere; raise ``exc`` if no retry is left or the object
        changed meanwhile."""
        pinned_here = not self._request.if_match
        request = storage_pb2.DownloadRequest()
        request.CopyFrom(self._request)
        request.if_match = etag
        self._request = request
        self._budget.failed_at = failed.address if failed is not None else None
        try:
            return await self.open(after=exc)
        except BlobgateError as again:
            if pinned_here and again.code == grpc.StatusCode.FAILED_PRECONDITION:
                # The version the caller was told of is gone: report the failure.
                raise exc from exc.__cause__
            raise


class DownloadStream:
    """An open download: ``info`` describes the object, iterating yields its
    bytes (``views()`` yields them as memoryviews, without a copy), from
    the gateway or, for a direct download, from S3. When the whole object is
    read, the end of the iteration checks it against its CRC32C, or its
    sha256 when ``sha256`` or when it has no CRC32C (``ContentCheck``:
    DATA_LOSS on a mismatch). Close it (or use ``async with``) to cancel a
    download that is not read to the end.

    If the instance (or S3) fails (UNAVAILABLE) before any bytes were
    yielded, the download starts again on another instance, pinned to
    ``info.etag``. A whole object whose bytes all arrived and match its
    stored checksum is complete even if the connection drops before the
    server's final status.
    """

    def __init__(
        self,
        opened: OpenedDownload,
        opener: DownloadOpener,
        *,
        whole: bool,
        progress: Progress | None = None,
        total: int | None = None,
        sha256: bool = False,
    ) -> None:
        self._call = opened.call
        self.info = opened.info
        self._endpoint: Endpoint | None = opened.endpoint
        self._opener = opener
        self._check = ContentCheck(opened.info, sha256=sha256) if whole else None
        self._received = 0
        self._yielded = False
        self._finished = False
        self._progress = progress
        self._total = total
        if progress is not None:
            progress(0, total)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._next_chunk()
        return chunk if isinstance(chunk, bytes) else bytes(chunk)

    async def views(self) -> AsyncIterator[memoryview]:
        """The rest of the bytes, as iterating yields them, but each chunk a
        memoryview of the received message: no copy (a view keeps its whole
        message alive; copy what you keep)."""
        while True:
            try:
                chunk = await self._next_chunk()
            except StopAsyncIteration:
                return
            yield memoryview(chunk)

    async def _next_chunk(self) -> bytes | memoryview:
        """The next data message's payload (see parse_download_response);
        StopAsyncIteration at the end, after the checks."""
        while True:
            if self._finished:
                raise StopAsyncIteration
            try:
                with translate_errors():
                    message = await self._call.read()
            except BlobgateError as exc:
                if self._complete_despite(exc):
                    message = grpc.aio.EOF
                elif not self._yielded:
                    await self._reopen(exc)
                    continue
                else:
                    self._release(exc)
                    raise
            except BaseException:
                self._release()
                raise
            break
        if message is grpc.aio.EOF:
            self._finished = True
            self._release()
            self._verify()
            raise StopAsyncIteration
        data = download_payload(message)
        if data is None:
            self.close()
            raise BlobgateError(grpc.StatusCode.INTERNAL, "server sent a second object message")
        self._received += len(data)
        self._yielded = True
        if self._check is not None:
            self._check.update(data)
        if self._progress is not None:
            self._progress(self._received, self._total)
        return data

    def _complete_despite(self, exc: BlobgateError) -> bool:
        return (
            exc.retryable
            and self._check is not None
            and self._check.algorithm != "size"
            and self._check.matches()
        )

    async def _reopen(self, exc: BlobgateError) -> None:
        """Start again elsewhere, or raise ``exc`` if no retry is left."""
        failed = self._endpoint
        self._call.cancel()
        self._release(exc)
        try:
            opened = await self._opener.reopen(exc, failed, self.info.etag)
        except BaseException:
            self._finished = True
            raise
        self._call, self._endpoint = opened.call, opened.endpoint

    def _release(self, failure: BlobgateError | None = None) -> None:
        """Tell the transport that this call no longer uses its endpoint (once)."""
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            self._opener.transport.release(endpoint, failure)

    def _verify(self) -> None:
        if self._check is not None:
            self._check.verify()

    def close(self) -> None:
        """Cancel the call unless it already ended; safe to call more than once."""
        self._finished = True
        self._call.cancel()
        self._release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


def range_size(size: int, offset: int, limit: int) -> int:
    """The bytes a download of ``offset``/``limit`` from ``size`` returns."""
    start = offset if offset >= 0 else max(size + offset, 0)
    start = min(start, size)
    end = size if limit <= 0 else min(start + limit, size)
    return end - start
