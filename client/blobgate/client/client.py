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
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, Self, Unpack

from blobgate.client.atomic_file import write_atomically, write_chunks
from blobgate.client.connect_problems import hinted
from blobgate.client.download import DownloadOpener, DownloadStream, range_size
from blobgate.client.models import Deleted, DeleteResult, ListPage, ObjectInfo, PresignedURL
from blobgate.client.options import ClientOptions, OptionKeywords
from blobgate.client.progress import Progress
from blobgate.client.resumable import RESUMABLE_THRESHOLD, ResumableUpload
from blobgate.client.retry import CallBudget, retry_unary
from blobgate.client.sources import UploadSource, close_chunks, prepare_source
from blobgate.client.targets import open_transport
from blobgate.client.transport import Transport
from blobgate.client.upload import upload_once, upload_spec
from blobgate.client.wire import proto_duration
from blobgate.shared.tls import TLSConfig
from blobgate.v1 import storage_pb2

BATCH_DELETE_LIMIT = 1000  # keys per BatchDelete call
DeleteResults = list[DeleteResult]  # spelt here: Client.list hides the builtin in the class
_HTTP_METHODS_BY_NAME = {"GET": storage_pb2.HTTP_METHOD_GET, "PUT": storage_pb2.HTTP_METHOD_PUT}


class Client:
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
        with self._explained():
            prepared = await prepare_source(source, self.options.chunk_size)
            spec = upload_spec(
                key,
                prepared,
                bucket=bucket or self.options.bucket,
                content_type=content_type,
                metadata=metadata,
                if_none_match=if_none_match,
                if_match=if_match,
                size=size,
            )
            if resumable is None:
                resumable = prepared.reread is not None and spec.size >= RESUMABLE_THRESHOLD
            if resumable:
                await close_chunks(prepared.chunks)
                if prepared.reread is None:
                    raise ValueError(
                        "a resumable upload reads its source again: give bytes or a path"
                    )
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
            version_id=version_id,
        )
        budget = CallBudget.start(self.options.stream_timeout, self.options.max_attempts)
        opener = DownloadOpener(self.transport, request, budget)
        with self._explained():
            opened = await opener.open()
        try:
            return DownloadStream(
                opened,
                opener,
                whole=offset == 0 and limit == 0,
                progress=progress,
                total=range_size(opened.info.size, offset, limit),
            )
        except BaseException:  # the progress callback failed
            opened.call.cancel()
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
        is renamed over ``path`` only once the
        download succeeded (and, for a whole object, its sha256 matched).
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

    async def stat(self, key: str, *, bucket: str = "", version_id: str = "") -> ObjectInfo:
        """Describe ``key`` (``version_id``: that version), with its metadata and checksums."""
        request = storage_pb2.StatRequest(
            bucket=bucket or self.options.bucket, key=key, version_id=version_id
        )
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
        versions: bool = False,
    ) -> ListPage:
        """One page of the listing under ``prefix`` (``page_size`` 0: the
        server's 1000). Pass ``next_page_token`` back to get the next.
        ``versions``: every version and delete marker of each key."""
        request = storage_pb2.ListRequest(
            bucket=bucket or self.options.bucket,
            prefix=prefix,
            delimiter=delimiter,
            page_size=page_size,
            page_token=page_token,
            versions=versions,
        )
        response: storage_pb2.ListResponse = await self._unary("List", request)
        return ListPage.from_proto(response)

    async def list(
        self,
        prefix: str = "",
        *,
        bucket: str = "",
        delimiter: str = "",
        page_size: int = 0,
        versions: bool = False,
    ) -> AsyncIterator[ObjectInfo]:
        """Every object (``versions``: every version) under ``prefix``, page
        after page. With a ``delimiter``, the common prefixes are only in
        ``list_page``."""
        token = ""
        while True:
            page = await self.list_page(
                prefix,
                bucket=bucket,
                delimiter=delimiter,
                page_size=page_size,
                page_token=token,
                versions=versions,
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
        version_id: str = "",
    ) -> PresignedURL:
        """A URL to GET or PUT ``key`` over plain HTTP, valid for
        ``expires_in`` seconds (None: the server's 15 minutes). For PUT,
        ``content_type`` is signed and must be sent as given; for GET,
        ``version_id`` names a version."""
        http_method = _HTTP_METHODS_BY_NAME.get(method.upper())
        if http_method is None:
            raise ValueError(f"method must be GET or PUT, not {method!r}")
        request = storage_pb2.PresignRequest(
            bucket=bucket or self.options.bucket,
            key=key,
            method=http_method,
            content_type=content_type,
            version_id=version_id,
        )
        if expires_in is not None:
            request.expires_in.CopyFrom(proto_duration(expires_in))
        response: storage_pb2.PresignResponse = await self._unary("Presign", request)
        return PresignedURL.from_proto(response)

    async def delete(
        self, key: str, *, bucket: str = "", if_match: str = "", version_id: str = ""
    ) -> Deleted:
        """Remove ``key``; a missing key is not an error unless ``if_match`` is
        given. On a versioned bucket that leaves a delete marker (restorable);
        ``version_id`` removes that version for good (the ``purge`` right)."""
        request = storage_pb2.DeleteRequest(
            bucket=bucket or self.options.bucket, key=key, if_match=if_match, version_id=version_id
        )
        response: storage_pb2.DeleteResponse = await self._unary("Delete", request)
        return Deleted(response.version_id, response.delete_marker)

    async def restore(self, key: str, version_id: str, *, bucket: str = "") -> ObjectInfo:
        """Make version ``version_id`` of ``key`` its current one again: a
        copy of it onto the key (checksums, content type and metadata kept),
        which a versioned bucket keeps as a new version."""
        return await self.copy(key, key, bucket=bucket, source_version_id=version_id)

    async def copy(
        self,
        source_key: str,
        destination_key: str,
        *,
        bucket: str = "",
        to_bucket: str = "",
        source_if_match: str = "",
        if_none_match: bool = False,
        if_match: str = "",
        replace_metadata: bool = False,
        content_type: str = "",
        metadata: Mapping[str, str] | None = None,
        source_version_id: str = "",
    ) -> ObjectInfo:
        """Copy ``source_key`` (``source_version_id``: that version of it; in
        ``bucket``) to ``destination_key`` (in
        ``to_bucket``, default: the source's bucket) inside S3, and return the
        new object. The copy keeps the source's content type, metadata and
        checksums; ``replace_metadata`` replaces the first two with
        ``content_type`` (empty: guessed from the destination key) and
        ``metadata``. ``source_if_match`` pins the source's version;
        ``if_none_match`` and ``if_match`` guard the destination. A retry
        after a lost reply can report FAILED_PRECONDITION for a copy that
        ``if_none_match`` let through the first time."""
        if not replace_metadata and (content_type or metadata):
            raise ValueError("content_type and metadata need replace_metadata=True")
        source_bucket = bucket or self.options.bucket
        request = storage_pb2.CopyRequest(
            source_bucket=source_bucket,
            source_key=source_key,
            source_if_match=source_if_match,
            destination_bucket=to_bucket or source_bucket,
            destination_key=destination_key,
            if_none_match=if_none_match,
            if_match=if_match,
            replace_metadata=replace_metadata,
            content_type=content_type,
            metadata=dict(metadata or {}),
            source_version_id=source_version_id,
        )
        response: storage_pb2.CopyResponse = await self._unary("Copy", request)
        return ObjectInfo.from_proto(response.object)

    async def batch_delete(
        self,
        keys: Iterable[str],
        *,
        bucket: str = "",
        if_match: Mapping[str, str] | None = None,
        version_ids: Mapping[str, str] | None = None,
    ) -> DeleteResults:
        """Delete ``keys`` of one bucket, in calls of up to 1000 keys, and
        say what became of each distinct key (in order): deleted (or already missing), or
        the status that refused it. ``if_match`` maps keys to the ETag each
        must still have; ``version_ids`` keys to the version of each to
        remove for good (the ``purge`` right). A failure of a whole call raises ``BlobgateError``;
        the calls before it took effect."""
        conditions = dict(if_match or {})
        versions = dict(version_ids or {})
        names = list(dict.fromkeys(keys))
        results: DeleteResults = []
        for start in range(0, len(names), BATCH_DELETE_LIMIT):
            entries = [
                storage_pb2.BatchDeleteEntry(
                    key=key, if_match=conditions.get(key, ""), version_id=versions.get(key, "")
                )
                for key in names[start : start + BATCH_DELETE_LIMIT]
            ]
            request = storage_pb2.BatchDeleteRequest(
                bucket=bucket or self.options.bucket, entries=entries
            )
            response: storage_pb2.BatchDeleteResponse = await self._unary("BatchDelete", request)
            results += [DeleteResult.from_proto(result) for result in response.results]
        return results

    async def _unary(self, method: str, request: Any) -> Any:
        budget = CallBudget.start(self.options.timeout, self.options.max_attempts)
        with self._explained():
            return await retry_unary(self.transport, budget, method, request)
