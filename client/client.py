"""The asyncio client of the blobgate StorageService.

A ``Client`` talks to one server (``host:port``: one channel) or to the
passing instances of a Consul service (``consul://NAME``: one channel per
instance, calls spread round-robin, the set followed by ``blobgate.client.discovery``).
Idempotent calls (stat, list, presign, delete, and a download until its first
bytes reach the caller) are retried on UNAVAILABLE, on another instance when
there is one; uploads are not. Every public method translates gRPC failures
into ``BlobgateError`` (``blobgate.client.errors``), including those raised while a
download is iterated.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import mimetypes
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, Self, TypeVar

import grpc
from google.protobuf import duration_pb2

from blobgate.client.backoff import Backoff
from blobgate.client.discovery import ConsulConfig, ConsulTarget, ConsulWatcher, Instance
from blobgate.client.errors import BlobgateError, translate_errors
from blobgate.client.models import ListPage, ObjectInfo, PresignedURL
from blobgate.client.pool import Endpoint, Pool
from blobgate.client.sources import UploadSource, prepare_source
from blobgate.client.tls import ChannelOption, TLSConfig
from blobgate.v1 import storage_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_MESSAGE_SIZE = 8 * 1024 * 1024
_CHANNEL_OPTIONS: list[ChannelOption] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
]
# Pauses between attempts of an idempotent call: about 0.1, 0.2, 0.4 s.
RETRY_BACKOFF = Backoff(0.1, 2.0)
# How long a call waits for Consul's first answer (at most its own deadline).
RESOLVE_WAIT = 10.0
# Bytes and paths at least this big go through a resumable upload session.
RESUMABLE_THRESHOLD = 16 * 1024 * 1024
# The deadline of the one try to cancel a failed upload's session.
CANCEL_TIMEOUT = 5.0

_METHODS = {"GET": storage_pb2.HTTP_METHOD_GET, "PUT": storage_pb2.HTTP_METHOD_PUT}


Progress = Callable[[int, int | None], None]
"""Called as data moves with (bytes done so far, total bytes or None if unknown)."""

# Initial metadata by which the server accepts an upload's spec (see Upload
# in protos/blobgate/v1/storage.proto).
UPLOAD_ACCEPTED_KEY = "blobgate-upload"


class _Refused(Exception):
    """The server ended an upload without accepting its spec."""


@dataclass
class _Budget:
    """What the attempts of one call may still use."""

    attempts: int
    deadline: float | None  # time.monotonic() value
    tried: set[str] = field(default_factory=set)  # addresses that failed
    failures: int = 0

    def remaining(self) -> float | None:
        """Seconds left until the deadline (None: no deadline)."""
        return None if self.deadline is None else max(self.deadline - time.monotonic(), 0.0)


@dataclass
class _Opened:
    """A download call whose first message (the object) has arrived."""

    call: Any
    info: ObjectInfo
    endpoint: Endpoint | None = None


class DownloadStream:
    """An open download: ``info`` describes the object, iterating yields its
    bytes. When the whole object is read and the server knows its sha256, the
    end of the iteration checks it (DATA_LOSS on a mismatch). Close it (or use
    ``async with``) to cancel a download that is not read to the end.

    If the instance fails (UNAVAILABLE) before any bytes were yielded, the
    download starts again on another instance, pinned to ``info.etag``. A
    whole object whose bytes all arrived and match the stored sha256 is
    complete even if the connection drops before the server's final status.
    """

    def __init__(
        self,
        call: Any,
        info: ObjectInfo,
        *,
        whole: bool,
        opener: _DownloadOpener | None = None,
        endpoint: Endpoint | None = None,
        progress: Progress | None = None,
        total: int | None = None,
    ) -> None:
        self._call = call
        self.info = info
        self._digest = hashlib.sha256() if whole else None
        self._received = 0
        self._yielded = False
        self._finished = False
        self._opener = opener
        self._endpoint = endpoint
        self._progress = progress
        self._total = total
        if progress is not None:
            progress(0, total)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._finished:
                raise StopAsyncIteration
            try:
                with translate_errors():
                    message = await self._call.read()
            except BlobgateError as exc:
                if self._complete_despite(exc):
                    message = grpc.aio.EOF
                elif not self._yielded and self._opener is not None:
                    await self._reopen(exc)
                    continue
                else:
                    self._release()
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
        if message.WhichOneof("message") != "data":
            self.close()
            raise BlobgateError(grpc.StatusCode.INTERNAL, "server sent a second object message")
        data: bytes = message.data
        self._received += len(data)
        self._yielded = True
        if self._digest is not None:
            self._digest.update(data)
        if self._progress is not None:
            self._progress(self._received, self._total)
        return data

    def _complete_despite(self, exc: BlobgateError) -> bool:
        return (
            exc.retryable
            and self._digest is not None
            and self.info.sha256 is not None
            and self._received == self.info.size
            and self._digest.digest() == self.info.sha256
        )

    async def _reopen(self, exc: BlobgateError) -> None:
        """Start again elsewhere, or raise ``exc`` if no retry is left."""
        assert self._opener is not None
        failed = self._endpoint
        self._call.cancel()
        self._release()
        try:
            opened = await self._opener.reopen(exc, failed, self.info.etag)
        except BaseException:
            self._finished = True
            raise
        self._call, self._endpoint = opened.call, opened.endpoint

    def _release(self) -> None:
        """Tell the pool that this call no longer uses its instance (once)."""
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None and self._opener is not None:
            self._opener.client._pool.release(endpoint)

    def _verify(self) -> None:
        if self._digest is None:
            return
        key = self.info.key
        if self._received != self.info.size:
            raise BlobgateError(
                grpc.StatusCode.DATA_LOSS,
                f"{key}: received {self._received} bytes, the object has {self.info.size}",
            )
        if self.info.sha256 is not None and self._digest.digest() != self.info.sha256:
            raise BlobgateError(
                grpc.StatusCode.DATA_LOSS,
                f"{key}: sha256 of the received bytes {self._digest.hexdigest()} differs "
                f"from the stored {self.info.sha256.hex()}",
            )

    def close(self) -> None:
        """Cancel the call unless it already ended; safe to call more than once."""
        self._finished = True
        self._call.cancel()
        self._release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class Client:
    """A connection to blobgate: ``Client("127.0.0.1:50051")`` for one
    server, ``Client("consul://blobgate")`` (or ``consul://NAME?tag=TAG``)
    for the passing instances of a Consul service.

    ``timeout`` is the deadline in seconds of each unary call (stat, list,
    presign, delete), retries included; ``stream_timeout`` that of each
    upload and download, None by default since big objects take as long as
    they take. ``max_attempts`` bounds the tries of an idempotent call (1:
    no retries). The Consul agent is ``consul_addr`` (host:port or URL),
    else ``$CONSUL_HTTP_ADDR``, else 127.0.0.1:8500; its ACL token
    ``consul_token``, else ``$CONSUL_HTTP_TOKEN``. An empty ``bucket`` means
    the server's default bucket.

    ``tls=True`` makes every channel TLS (plaintext otherwise), verified
    against ``root_certificates`` (PEM; None: the system's roots);
    ``private_key`` and ``certificate_chain`` (PEM, both or neither) are the
    client's certificate for servers that ask for one; ``server_name_override``
    is the name the server's certificate must carry when it differs from the
    target's host (instances found through Consul are reached by address).
    Giving any of these four implies ``tls=True``.

    Raises ValueError for a malformed target or TLS settings.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = 60.0,
        stream_timeout: float | None = None,
        max_attempts: int = 4,
        consul_addr: str | None = None,
        consul_token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        server_name_override: str | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        self.target = target
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self.max_attempts = max_attempts
        self.tls: TLSConfig | None = None
        if tls or any(
            given is not None
            for given in (root_certificates, private_key, certificate_chain, server_name_override)
        ):
            self.tls = TLSConfig(
                root_certificates, private_key, certificate_chain, server_name_override
            )
        options = _CHANNEL_OPTIONS
        credentials = None
        if self.tls is not None:
            options = [*options, *self.tls.channel_options()]
            credentials = self.tls.credentials()
        service = ConsulTarget.parse(target)
        self._watcher: ConsulWatcher | None = None
        if service is None:
            self._pool = Pool([target], options, credentials=credentials)
            return
        self._pool = Pool([], options, credentials=credentials)
        config = ConsulConfig.from_environment(consul_addr, consul_token)
        self._watcher = ConsulWatcher(service, config, self._on_instances)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # the first call starts the watch
        self._watcher.start()

    @property
    def instances(self) -> tuple[str, ...]:
        """The addresses new calls go to: the target itself, or the passing
        instances Consul last reported."""
        return self._pool.addresses

    def call_counts(self) -> dict[str, int]:
        """Attempts started per instance address since the client was created."""
        return dict(self._pool.calls)

    def _on_instances(self, instances: tuple[Instance, ...]) -> None:
        self._pool.update(instance.address for instance in instances)

    async def __aenter__(self) -> Self:
        if self._watcher is not None:
            self._watcher.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop watching Consul and close the channels, cancelling calls still running."""
        if self._watcher is not None:
            await self._watcher.close()
        await self._pool.close()

    async def upload(
        self,
        key: str,
        source: UploadSource,
        *,
        bucket: str = "",
        content_type: str = "",
        metadata: Mapping[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str = "",
        size: int | None = None,
        progress: Progress | None = None,
        resumable: bool | None = None,
    ) -> ObjectInfo:
        """Store ``source`` as ``key`` and return the committed object.

        ``source`` is bytes, a path, a binary file object or an async iterable
        of bytes. For bytes and paths the size and sha256 go with the request so
        the server verifies them. ``size`` declares the byte count of the other
        kinds (the server checks it). ``content_type`` defaults to a guess
        from the key's extension. Nothing is stored if anything fails.
        ``progress`` is called with (bytes sent, declared size or None) after
        the server accepted the request and after each chunk sent.

        ``resumable`` uploads go through an upload session: when the stream
        breaks (an instance dies, S3 fails, UNAVAILABLE), the client asks how
        much the session holds and sends only the rest, on another instance if
        need be, within ``max_attempts`` failures without progress and
        ``stream_timeout``. None (the default) means resumable for bytes and
        paths of at least RESUMABLE_THRESHOLD bytes; True requires bytes or a
        path.
        """
        prepared = await prepare_source(source)
        spec = storage_pb2.UploadSpec(
            bucket=bucket,
            key=key,
            content_type=content_type or mimetypes.guess_type(key)[0] or "",
            metadata=metadata or {},
            if_none_match=if_none_match,
            if_match=if_match,
        )
        declared = size if size is not None else prepared.size
        if declared is not None:
            spec.size = declared
        if prepared.sha256 is not None:
            spec.expected.sha256 = prepared.sha256
        if resumable is None:
            resumable = prepared.reread is not None and (declared or 0) >= RESUMABLE_THRESHOLD
        if resumable:
            await _aclose(prepared.chunks)
            if prepared.reread is None:
                raise ValueError("a resumable upload reads its source again: give bytes or a path")
            return await self._upload_resumable(spec, prepared.reread, progress)
        budget = self._budget(self.stream_timeout, attempts=1)  # a stream is not replayed
        try:
            endpoint = await self._acquire(budget)
        except BaseException:
            await _aclose(prepared.chunks)
            raise
        try:
            chunks = prepared.chunks
            if progress is not None:
                chunks = _counted(chunks, progress, declared)
            first = storage_pb2.UploadRequest(spec=spec)
            return await self._upload(endpoint, first, chunks, budget.remaining())
        finally:
            self._pool.release(endpoint)

    async def _upload_resumable(
        self,
        spec: storage_pb2.UploadSpec,
        reread: Callable[[int], AsyncIterator[bytes]],
        progress: Progress | None,
    ) -> ObjectInfo:
        """Upload through a session, resuming from its persisted size after
        each retryable failure (``BlobgateError.retryable``); cancel the session
        if the upload fails for good."""
        request = storage_pb2.StartResumableUploadRequest(spec=spec)
        started = await self._unary("StartResumableUpload", request)
        upload_id = started.upload_id
        total = spec.size if spec.HasField("size") else None
        budget = self._budget(self.stream_timeout)
        offset = 0
        try:
            while True:
                endpoint: Endpoint | None = None
                try:
                    budget.attempts -= 1
                    endpoint = await self._acquire(budget)
                    resume = storage_pb2.UploadResume(upload_id=upload_id, write_offset=offset)
                    chunks = reread(offset)
                    if progress is not None:
                        chunks = _counted(chunks, progress, total, done=offset)
                    try:
                        first = storage_pb2.UploadRequest(resume=resume)
                        return await self._upload(endpoint, first, chunks, budget.remaining())
                    finally:
                        self._pool.release(endpoint)
                except BlobgateError as exc:
                    await self._before_retry(budget, exc, endpoint)
                    persisted = await self._persisted(upload_id, exc)
                    if persisted is None:  # the session ended: committed by the last try?
                        return await self._committed(spec, exc)
                    if persisted > offset:
                        budget.attempts += 1  # progress was made: not a wasted attempt
                    offset = persisted
        except BlobgateError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                await self._cancel_session(upload_id)
            raise
        except BaseException:
            await self._cancel_session(upload_id)
            raise

    async def _persisted(self, upload_id: str, failure: BlobgateError) -> int | None:
        """Where the session resumes; None once it is over."""
        request = storage_pb2.QueryUploadStatusRequest(upload_id=upload_id)
        try:
            response = await self._unary("QueryUploadStatus", request)
        except BlobgateError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                return None
            raise failure from exc
        return int(response.persisted_size)

    async def _committed(self, spec: storage_pb2.UploadSpec, failure: BlobgateError) -> ObjectInfo:
        """The object a session's last Upload committed even though its reply
        was lost: the key now holds exactly the bytes sent (same sha256)."""
        try:
            info = await self.stat(spec.key, bucket=spec.bucket)
        except BlobgateError:
            raise failure from None
        if spec.expected.sha256 and info.sha256 == spec.expected.sha256:
            return info
        raise failure

    async def _cancel_session(self, upload_id: str) -> None:
        """Best effort: the server's janitor aborts sessions left idle anyway."""
        request = storage_pb2.CancelResumableUploadRequest(upload_id=upload_id)

        async def attempt(endpoint: Endpoint, time_left: float | None) -> Any:
            return await endpoint.stub.CancelResumableUpload(request, timeout=time_left)

        try:
            await self._retrying(attempt, self._budget(CANCEL_TIMEOUT, attempts=2))
        except Exception:
            log.debug("could not cancel an upload session; it expires on its own", exc_info=True)

    async def _upload(
        self,
        endpoint: Endpoint,
        first: storage_pb2.UploadRequest,
        chunks: AsyncIterator[bytes],
        time_left: float | None,
    ) -> ObjectInfo:
        call = endpoint.stub.Upload(timeout=time_left)
        with translate_errors():
            try:
                await call.write(first)
                # Wait for the server to accept the spec before writing data: a
                # refused spec then ends the call with no write in flight (a
                # grpc.aio write that races the server's status replaces that
                # status with INTERNAL: grpc/grpc#36066).
                metadata = await call.initial_metadata()
                if dict(metadata or ()).get(UPLOAD_ACCEPTED_KEY) != "accepted":
                    raise _Refused
                async for chunk in chunks:
                    if call.done():
                        # The server ended the call early; awaiting it below says why.
                        break
                    await call.write(storage_pb2.UploadRequest(data=chunk))
                else:
                    await call.done_writing()
            except _Refused:
                pass  # the call is ending: awaiting it below gives the server's status
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                # A write found the call over; its status is the error to report.
                if not call.done():
                    raise
            except BaseException:
                # The source failed (or we were cancelled): abort, so nothing is committed.
                call.cancel()
                raise
            finally:
                await _aclose(chunks)
            response: storage_pb2.UploadResponse = await call
        return ObjectInfo.from_proto(response.object)

    async def open_download(
        self,
        key: str,
        *,
        bucket: str = "",
        offset: int = 0,
        limit: int = 0,
        if_match: str = "",
        progress: Progress | None = None,
    ) -> DownloadStream:
        """Start downloading ``key`` (or ``limit`` bytes from ``offset``; a
        negative offset counts from the end) and wait for the object's
        description, so a missing key or failed ``if_match`` raises here.
        ``progress`` is called with (bytes received, bytes of the range) once
        the object is described and after each chunk."""
        request = storage_pb2.DownloadRequest(
            bucket=bucket, key=key, offset=offset, limit=limit, if_match=if_match
        )
        opener = _DownloadOpener(self, request, self._budget(self.stream_timeout))
        opened = await opener.open()
        try:
            return DownloadStream(
                opened.call,
                opened.info,
                whole=offset == 0 and limit == 0,
                opener=opener,
                endpoint=opened.endpoint,
                progress=progress,
                total=_range_size(opened.info.size, offset, limit),
            )
        except BaseException:  # the progress callback failed
            opened.call.cancel()
            if opened.endpoint is not None:
                self._pool.release(opened.endpoint)
            raise

    async def download(
        self,
        key: str,
        *,
        bucket: str = "",
        offset: int = 0,
        limit: int = 0,
        if_match: str = "",
        progress: Progress | None = None,
    ) -> AsyncIterator[bytes]:
        """Yield the bytes of ``key`` (see ``open_download`` for the range
        and ``progress``), in chunks of at most 1 MiB."""
        stream = await self.open_download(
            key, bucket=bucket, offset=offset, limit=limit, if_match=if_match, progress=progress
        )
        async with stream:
            async for chunk in stream:
                yield chunk

    async def download_to(
        self,
        key: str,
        path: str | os.PathLike[str] | BinaryIO,
        *,
        bucket: str = "",
        offset: int = 0,
        limit: int = 0,
        if_match: str = "",
        progress: Progress | None = None,
    ) -> ObjectInfo:
        """Download ``key`` into the file ``path``, atomically: the bytes go to
        a temporary file beside it that is renamed over ``path`` only once the
        download succeeded (and, for a whole object, its sha256 matched).
        ``path`` may also be a binary file object, which is written as the
        bytes arrive (no rename is possible: on failure it holds a prefix).
        ``progress`` as in ``open_download``."""
        async with await self.open_download(
            key, bucket=bucket, offset=offset, limit=limit, if_match=if_match, progress=progress
        ) as stream:
            if not isinstance(path, str | os.PathLike):
                async for chunk in stream:
                    await asyncio.to_thread(path.write, chunk)
                return stream.info
            target = Path(path)
            temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.blobgate-part")
            file: BinaryIO = await asyncio.to_thread(temp.open, "xb")
            try:
                try:
                    async for chunk in stream:
                        await asyncio.to_thread(file.write, chunk)
                    await asyncio.to_thread(_flush_and_sync, file)
                finally:
                    await asyncio.to_thread(file.close)
                await asyncio.to_thread(os.replace, temp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(temp.unlink)
                raise
        return stream.info

    async def stat(self, key: str, *, bucket: str = "") -> ObjectInfo:
        """Describe ``key``, with its metadata and checksums."""
        request = storage_pb2.StatRequest(bucket=bucket, key=key)
        response: storage_pb2.StatResponse = await self._unary("Stat", request)
        return ObjectInfo.from_proto(response.object)

    async def list_page(
        self,
        prefix: str = "",
        *,
        bucket: str = "",
        delimiter: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> ListPage:
        """One page of the listing under ``prefix`` (``page_size`` 0: the
        server's 1000). Pass ``next_page_token`` back to get the next."""
        request = storage_pb2.ListRequest(
            bucket=bucket,
            prefix=prefix,
            delimiter=delimiter,
            page_size=page_size,
            page_token=page_token,
        )
        response: storage_pb2.ListResponse = await self._unary("List", request)
        return ListPage.from_proto(response)

    async def list(
        self, prefix: str = "", *, bucket: str = "", delimiter: str = "", page_size: int = 0
    ) -> AsyncIterator[ObjectInfo]:
        """Every object under ``prefix``, page after page. With a
        ``delimiter``, the common prefixes are only in ``list_page``."""
        token = ""
        while True:
            page = await self.list_page(
                prefix, bucket=bucket, delimiter=delimiter, page_size=page_size, page_token=token
            )
            for obj in page.objects:
                yield obj
            token = page.next_page_token
            if not token:
                return

    async def presign(
        self,
        key: str,
        *,
        method: Literal["GET", "PUT"] = "GET",
        expires_in: float | None = None,
        content_type: str = "",
        bucket: str = "",
    ) -> PresignedURL:
        """A URL to GET or PUT ``key`` over plain HTTP, valid for
        ``expires_in`` seconds (None: the server's 15 minutes). For PUT,
        ``content_type`` is signed and must be sent as given."""
        http_method = _METHODS.get(method.upper())
        if http_method is None:
            raise ValueError(f"method must be GET or PUT, not {method!r}")
        request = storage_pb2.PresignRequest(
            bucket=bucket, key=key, method=http_method, content_type=content_type
        )
        if expires_in is not None:
            request.expires_in.CopyFrom(_duration(expires_in))
        response: storage_pb2.PresignResponse = await self._unary("Presign", request)
        return PresignedURL.from_proto(response)

    async def delete(self, key: str, *, bucket: str = "", if_match: str = "") -> None:
        """Remove ``key``; a missing key is not an error unless ``if_match`` is given."""
        request = storage_pb2.DeleteRequest(bucket=bucket, key=key, if_match=if_match)
        await self._unary("Delete", request)

    async def _unary(self, method: str, request: Any) -> Any:
        """Call the unary ``method`` with retries (all of them are idempotent)."""

        async def attempt(endpoint: Endpoint, time_left: float | None) -> Any:
            return await getattr(endpoint.stub, method)(request, timeout=time_left)

        return await self._retrying(attempt, self._budget(self.timeout))

    def _budget(self, timeout: float | None, attempts: int | None = None) -> _Budget:
        deadline = None if timeout is None else time.monotonic() + timeout
        return _Budget(self.max_attempts if attempts is None else attempts, deadline)

    async def _acquire(self, budget: _Budget) -> Endpoint:
        """The instance for the next attempt (one not tried yet if possible);
        waits for Consul's first answer, within the call's deadline."""
        if self._pool.closed:
            raise BlobgateError(grpc.StatusCode.CANCELLED, "client is closed")
        watcher = self._watcher
        if watcher is not None and not watcher.resolved:
            watcher.start()
            remaining = budget.remaining()
            await watcher.wait_resolved(
                RESOLVE_WAIT if remaining is None else min(remaining, RESOLVE_WAIT)
            )
        endpoint = self._pool.acquire(budget.tried)
        if endpoint is not None:
            return endpoint
        if watcher is None or self._pool.closed:
            raise BlobgateError(grpc.StatusCode.CANCELLED, "client is closed")
        if not watcher.resolved:
            why = watcher.error or "no answer yet"
            message = f"Consul at {watcher.agent} did not list service {watcher.target}: {why}"
        else:
            message = f"Consul at {watcher.agent} lists no passing instance of {watcher.target}"
        raise BlobgateError(grpc.StatusCode.UNAVAILABLE, message)

    async def _retrying(
        self, attempt: Callable[[Endpoint, float | None], Awaitable[T]], budget: _Budget
    ) -> T:
        """Run ``attempt`` on an instance until it succeeds or fails for good."""
        while True:
            endpoint: Endpoint | None = None
            try:
                budget.attempts -= 1
                endpoint = await self._acquire(budget)
                try:
                    with translate_errors():
                        return await attempt(endpoint, budget.remaining())
                finally:
                    self._pool.release(endpoint)
            except BlobgateError as exc:
                await self._before_retry(budget, exc, endpoint)

    async def _before_retry(
        self, budget: _Budget, exc: BlobgateError, failed: Endpoint | None
    ) -> None:
        """Pause before the next attempt; raise ``exc`` if there is none:
        not retryable, no attempt left, or the deadline would pass."""
        if not exc.retryable or budget.attempts <= 0:
            raise exc
        if failed is not None:
            budget.tried.add(failed.address)
        budget.failures += 1
        delay = RETRY_BACKOFF.delay(budget.failures)
        remaining = budget.remaining()
        if remaining is not None and delay >= remaining:
            raise exc
        where = failed.address if failed is not None else self.target
        log.debug("%s: %s; retrying in %.2fs", where, exc, delay)
        await asyncio.sleep(delay)


class _DownloadOpener:
    """Opens a download on some instance, and again on another one when the
    first fails before the caller got any bytes."""

    def __init__(self, client: Client, request: storage_pb2.DownloadRequest, budget: _Budget):
        self.client = client
        self._request = request
        self._budget = budget

    async def open(self) -> _Opened:
        return await self.client._retrying(self._attempt, self._budget)

    async def _attempt(self, endpoint: Endpoint, time_left: float | None) -> _Opened:
        call = endpoint.stub.Download(self._request, timeout=time_left)
        try:
            first = await call.read()
        except BaseException:
            call.cancel()
            raise
        if first is grpc.aio.EOF or first.WhichOneof("message") != "object":
            call.cancel()
            raise BlobgateError(
                grpc.StatusCode.INTERNAL, "server did not describe the object first"
            )
        self.client._pool.hold(endpoint)  # until the stream ends
        return _Opened(call, ObjectInfo.from_proto(first.object), endpoint)

    async def reopen(self, exc: BlobgateError, failed: Endpoint | None, etag: str) -> _Opened:
        """After ``exc`` on ``failed``: pause, then open the same version
        (``etag``) elsewhere; raise ``exc`` if no retry is left or the object
        changed meanwhile."""
        await self.client._before_retry(self._budget, exc, failed)
        pinned_here = not self._request.if_match
        request = storage_pb2.DownloadRequest()
        request.CopyFrom(self._request)
        request.if_match = etag
        self._request = request
        try:
            return await self.open()
        except BlobgateError as again:
            if pinned_here and again.code == grpc.StatusCode.FAILED_PRECONDITION:
                # The version the caller was told of is gone: report the failure.
                raise exc from exc.__cause__
            raise


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration


def _flush_and_sync(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())


def _range_size(size: int, offset: int, limit: int) -> int:
    """The bytes a download of ``offset``/``limit`` from ``size`` returns."""
    start = offset if offset >= 0 else max(size + offset, 0)
    start = min(start, size)
    end = size if limit <= 0 else min(start + limit, size)
    return end - start


async def _counted(
    chunks: AsyncIterator[bytes], progress: Progress, total: int | None, done: int = 0
) -> AsyncIterator[bytes]:
    """``chunks``, reporting to ``progress`` before the first and after each
    one is taken (the upload takes the next only once the last was sent);
    ``done`` bytes were sent before."""
    progress(done, total)
    try:
        async for chunk in chunks:
            yield chunk
            done += len(chunk)
            progress(done, total)
    finally:
        await _aclose(chunks)


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
