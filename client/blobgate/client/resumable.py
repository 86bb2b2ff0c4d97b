"""Resumable uploads: an upload session that survives a broken stream.

After a retryable failure the client asks the session how much it holds and
sends only the rest, on another instance if need be. Attempts that moved the
session forward are refunded, so ``max_attempts`` bounds the failures in a
row without progress; ``stream_timeout`` bounds the whole upload.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from blobgate.client.errors import BlobgateError
from blobgate.client.models import ObjectInfo
from blobgate.client.options import ClientOptions
from blobgate.client.progress import Progress, counted
from blobgate.client.retry import CallBudget, GiveUp, on_endpoint, retry_call, retry_unary
from blobgate.client.transport import Endpoint, Transport
from blobgate.client.upload import send_upload
from blobgate.v1 import storage_pb2

log = logging.getLogger(__name__)

# Bytes and paths at least this big go through a resumable upload session.
RESUMABLE_THRESHOLD = 16 * 1024 * 1024
# The deadline of the one try to cancel a failed upload's session.
CANCEL_TIMEOUT = 5.0


class ResumableUpload:
    """One upload of ``spec`` through a session; ``reread(offset)`` gives the
    source's bytes from ``offset`` on, as often as needed."""

    def __init__(
        self,
        transport: Transport,
        options: ClientOptions,
        spec: storage_pb2.UploadSpec,
        reread: Callable[[int], AsyncIterator[bytes]],
        progress: Progress | None,
    ) -> None:
        self._transport = transport
        self._options = options
        self._spec = spec
        self._reread = reread
        self._progress = progress
        self._total = spec.size if spec.HasField("size") else None
        self._budget = CallBudget.start(options.stream_timeout, options.max_attempts)
        self._upload_id = ""
        self._offset = 0
        self._failure: BlobgateError | None = None  # that of the last stream

    async def run(self, upload_id: str = "") -> ObjectInfo:
        """Upload through a session (``upload_id``: one already started, else
        a new one), resuming from its persisted size after each retryable
        failure (``BlobgateError.retryable``); cancel the session if the
        upload fails for good."""
        if not upload_id:
            request = storage_pb2.StartResumableUploadRequest(spec=self._spec)
            upload_id = (await self._unary("StartResumableUpload", request)).upload_id
        self._upload_id = upload_id
        try:
            return await retry_call(self._budget, self._attempt, target=self._transport.target)
        except BlobgateError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                await self._cancel_session()
            raise
        except BaseException:
            await self._cancel_session()
            raise

    async def _attempt(self) -> ObjectInfo:
        failure = self._failure
        if failure is not None:  # after a broken stream: where does the session stand?
            persisted = await self._persisted(failure)
            if persisted is None:  # the session ended: committed by the last try?
                return await self._committed(failure)
            if persisted > self._offset:
                self._budget.attempts += 1  # progress was made: not a wasted attempt
            self._offset = persisted
        try:
            return await on_endpoint(self._transport, self._budget, self._send)
        except BlobgateError as exc:
            self._failure = exc
            raise

    async def _send(self, endpoint: Endpoint, time_left: float | None) -> ObjectInfo:
        resume = storage_pb2.UploadResume(upload_id=self._upload_id, write_offset=self._offset)
        chunks = self._reread(self._offset)
        if self._progress is not None:
            chunks = counted(chunks, self._progress, self._total, done=self._offset)
        first = storage_pb2.UploadRequest(resume=resume)
        return await send_upload(endpoint, first, chunks, time_left)

    async def _persisted(self, failure: BlobgateError) -> int | None:
        """Where the session resumes; None once it is over."""
        request = storage_pb2.QueryUploadStatusRequest(upload_id=self._upload_id)
        try:
            response = await self._unary("QueryUploadStatus", request)
        except BlobgateError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                return None
            failure.__cause__ = exc
            raise GiveUp(failure) from exc
        return int(response.persisted_size)

    async def _committed(self, failure: BlobgateError) -> ObjectInfo:
        """The object a session's last Upload committed even though its reply
        was lost: the key now holds exactly the bytes sent (same sha256)."""
        spec = self._spec
        request = storage_pb2.StatRequest(bucket=spec.bucket, key=spec.key)
        try:
            response = await self._unary("Stat", request)
        except BlobgateError:
            failure.__cause__ = None
            raise GiveUp(failure) from None
        info = ObjectInfo.from_proto(response.object)
        if spec.expected.sha256 and info.sha256 == spec.expected.sha256:
            return info
        raise GiveUp(failure)

    async def _cancel_session(self) -> None:
        await self.cancel(self._upload_id)

    async def cancel(self, upload_id: str) -> None:
        """Cancel session ``upload_id``; best effort: the server's janitor
        aborts sessions left idle anyway."""
        request = storage_pb2.CancelResumableUploadRequest(upload_id=upload_id)
        try:
            budget = CallBudget.start(CANCEL_TIMEOUT, attempts=2)
            await retry_unary(self._transport, budget, "CancelResumableUpload", request)
        except Exception:
            log.debug("could not cancel an upload session; it expires on its own", exc_info=True)

    async def _unary(self, method: str, request: Any) -> Any:
        budget = CallBudget.start(self._options.timeout, self._options.max_attempts)
        return await retry_unary(self._transport, budget, method, request)
