"""The asyncio client of the blobgate StorageService.

A ``Client`` sends its calls through a transport (``blobgate.client.transport``):
one server (``host:port``: one channel), the passing instances of a Consul
service (``consul://NAME``: one channel per instance, calls spread
round-robin), or a transport object of the caller's own. Idempotent calls
(stat, list, presign, delete, copy, batch_delete, and a download until its
first bytes reach the caller) are retried on UNAVAILABLE, on another instance
when there is one (``blobgate.client.retry``); uploads are not, unless resumable
(``blobgate.client.resumable``). Every call, uploads included, is retried
after a failure that happened before it left the client: calls only start on
connected instances, and those that cannot be connected to are ejected
(``blobgate.client.pool``). Every public method translates gRPC failures
into ``BlobgateError`` (``blobgate.client.errors``), including those raised
while a download is iterated.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self, Unpack

from blobgate.client.atomic_file import write_atomically, write_chunks
from blobgate.client.connect_problems import hinted
from blobgate.client.direct import DirectFetcher
from blobgate.client.direct_upload import DirectUpload
from blobgate.client.download import DownloadOpener, DownloadStream, range_size
from blobgate.client.models import ObjectInfo
from blobgate.client.options import ClientOptions, OptionKeywords
from blobgate.client.progress import Progress
from blobgate.client.resumable import RESUMABLE_THRESHOLD, ResumableUpload
from blobgate.client.retry import CallBudget, retry_unary
from blobgate.client.sources import UploadSource, close_chunks, known_size, prepare_source
from blobgate.client.targets import open_transport
from blobgate.client.transport import Transport
from blobgate.client.unary_calls import UnaryCalls
from blobgate.client.upload import upload_once, upload_spec
from blobgate.shared.tls import TLSConfig
from blobgate.v1 import storage_pb2


class Client(UnaryCalls):
    """A connection to blobgate: ``Client("127.0.0.1:50051")`` for one
    server, ``Client("consul://blobgate")`` (or ``consul://NAME?tag=TAG``)
    for the passing instances of a Consul service, or ``Client(transport)``
    for a ``Transport`` of one's own (whose own settings then replace the
    TLS and Consul options).

    ``options`` (a ``ClientOptions``) sets timeouts, retries, TLS, Consul,
    the default bucket and the chunk size; the same settings may be given as
    keywords (``timeout=``, ``tls=True``, ``root_certificates=``, ...: see
    ``OptionKeywords``), which apply over ``options``.

    A ``host`` without a port means port 50051, the server's default.
    When a connection cannot be set up for a reason the client can tell
    (plaintext to a TLS server, no client certificate for an mTLS server, a
    certificate that does not name the server...), the ``BlobgateError``
    says so (its ``problem``).

    Raises ValueError for a malformed target or settings.
    """

    def __init__(
        self,
        target: str | Transport,
        *,
        options: ClientOptions | None = None,
        **keywords: Unpack[OptionKeywords],
    ) -> None:
        self.options = ClientOptions.build(options, keywords)
        self._explained: Callable[[], contextlib.AbstractContextManager[None]]
        if isinstance(target, str):
            target = open_transport(target, self.options)
            self._explained = partial(hinted, self.options.tls)
        else:  # a transport of the caller's own has TLS settings the client does not know
            self._explained = contextlib.nullcontext
        self.transport: Transport = target
        self._direct = DirectFetcher(self.options.connect_timeout)
        self._direct_offered = True  # until a server answers a direct session proxied

    @property
    def target(self) -> str:
        """What the client calls: ``host:port``, ``consul://...``, or the transport's target."""
        return self.transport.target

    @property
    def tls(self) -> TLSConfig | None:
        """The TLS settings of the channels (None: plaintext)."""
        return self.options.tls

    @property
    def timeout(self) -> float | None:
        """The deadline of each unary call, retries included."""
        return self.options.timeout

    @property
    def stream_timeout(self) -> float | None:
        """The deadline of each upload and download."""
        return self.options.stream_timeout

    @property
    def max_attempts(self) -> int:
        """The most tries of an idempotent call."""
        return self.options.max_attempts

    @property
    def instances(self) -> tuple[str, ...]:
        """The addresses new calls go to: the target itself, or the passing
        instances Consul last reported."""
        return self.transport.addresses

    def call_counts(self) -> dict[str, int]:
        """Calls started per instance address since the client was created
        (an attempt that could not connect started none)."""
        return self.transport.call_counts()

    async def __aenter__(self) -> Self:
        self.transport.start()
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
        await self._direct.close()
        await self.transport.close()

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
        tags: Mapping[str, str] | None = None,
        storage_class: str = "",
        expire_days: int = 0,
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
        path. With ``direct_uploads`` (the default) a resumable upload asks
        for a direct session: where the server offers one, the parts go
        straight to S3 (``direct_upload``), and through the gateway when S3
        cannot be reached from here.

        ``tags`` (at most 10), ``storage_class`` (an S3 class such as
        STANDARD_IA; empty: STANDARD) and ``expire_days`` (a lifetime the
        server allows, after which S3 deletes the object; 0: none) go with
        the object.
        """
        with self._explained():
            # A direct upload hashes its source as it sends it, not before.
            size_now = known_size(source) if resumable is not False else None
            direct = (
                self.options.direct_uploads
                and self._direct_offered
                and (resumable or (size_now is not None and size_now >= RESUMABLE_THRESHOLD))
            )
            prepared = await prepare_source(source, self.options.chunk_size, digest=not direct)
            spec = upload_spec(
                key,
                prepared,
                bucket=bucket or self.options.bucket,
                content_type=content_type,
                metadata=metadata,
                if_none_match=if_none_match,
                if_match=if_match,
                size=size,
                tags=tags,
                storage_class=storage_class,
                expire_days=expire_days,
            )
            if resumable is None:
                resumable = prepared.reread is not None and spec.size >= RESUMABLE_THRESHOLD
            if resumable:
                await close_chunks(prepared.chunks)
                if prepared.reread is None:
                    raise ValueError(
                        "a resumable upload reads its source again: give bytes or a path"
                    )
                if direct:  # straight to S3 where the server offers it
                    uploader = DirectUpload(
                        self.transport, self.options, spec, prepared.reread, progress, self._direct
                    )
                    try:
                        return await uploader.run()
                    finally:
                        # Servers that do not offer it: hash up front from now on.
                        self._direct_offered = not uploader.declined
                session = ResumableUpload(
                    self.transport, self.options, spec, prepared.reread, progress
                )
                return await session.run()
            # Attempts to connect: the upload itself is sent once.
            budget = CallBudget.start(self.options.stream_timeout, self.options.max_attempts)
            return await upload_once(self.transport, budget, spec, prepared.chunks, progress)

    async def open_download(
        self,
        key: str,
        *,
        bucket: str = "",
        offset: int = 0,
        limit: int = 0,
        if_match: str = "",
        progress: Progress | None = None,
        version_id: str = "",
    ) -> DownloadStream:
        """Start downloading ``key`` (or ``limit`` bytes from ``offset``; a
        negative offset counts from the end; ``version_id``: that version)
        and wait for the object's description, so a missing key or failed
        ``if_match`` raises here.
        ``progress`` is called with (bytes received, bytes of the range) once
        the object is described and after each chunk."""
        request = storage_pb2.DownloadRequest(
            bucket=bucket or self.options.bucket,
            key=key,
            offset=offset,
            limit=limit,
            if_match=if_match,
            direct=self.options.direct_downloads,
            version_id=version_id,
        )
        budget = CallBudget.start(self.options.stream_timeout, self.options.max_attempts)
        direct = self._direct if self.options.direct_downloads else None
        opener = DownloadOpener(self.transport, request, budget, direct)
        with self._explained():
            opened = await opener.open()
        try:
            return DownloadStream(
                opened,
                opener,
                whole=offset == 0 and limit == 0,
                progress=progress,
                total=range_size(opened.info.size, offset, limit),
                sha256=self.options.verify_sha256,
            )
        except BaseException:  # the progress callback failed
            opened.call.cancel()
            if opened.endpoint is not None:
                self.transport.release(opened.endpoint)
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
        version_id: str = "",
    ) -> AsyncIterator[bytes]:
        """Yield the bytes of ``key`` (see ``open_download`` for the range,
        ``progress`` and ``version_id``), in chunks of at most 1 MiB."""
        stream = await self.open_download(
            key,
            bucket=bucket,
            offset=offset,
            limit=limit,
            if_match=if_match,
            progress=progress,
            version_id=version_id,
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
        version_id: str = "",
    ) -> ObjectInfo:
        """Download ``key`` (``version_id``: that version) into the file
        ``path``, atomically: the bytes go to a temporary file beside it that
        is renamed over ``path`` only once the download succeeded (and, for a
        whole object, its checksum matched).
        ``path`` may also be a binary file object, which is written as the
        bytes arrive (no rename is possible: on failure it holds a prefix).
        ``progress`` as in ``open_download``."""
        async with await self.open_download(
            key,
            bucket=bucket,
            offset=offset,
            limit=limit,
            if_match=if_match,
            progress=progress,
            version_id=version_id,
        ) as stream:
            if isinstance(path, str | os.PathLike):  # views: no copy of the received bytes
                await write_atomically(Path(path), stream.views())
            else:
                await write_chunks(path, stream.views())
        return stream.info

    async def _unary(self, method: str, request: Any) -> Any:
        budget = CallBudget.start(self.options.timeout, self.options.max_attempts)
        with self._explained():
            return await retry_unary(self.transport, budget, method, request)
