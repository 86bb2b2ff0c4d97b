"""The asyncio client of the blobgate StorageService.

One ``Client`` owns one gRPC channel; every public method translates gRPC
failures into ``BlobgateError`` (``client.errors``), including those raised
while a download is iterated. Unary calls share ``_unary``, the place for
retries later; the channel is built in one place, the place for discovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mimetypes
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, Self

import grpc
from google.protobuf import duration_pb2

from blobgate.v1 import storage_pb2, storage_pb2_grpc
from client.errors import BlobgateError, translate_errors
from client.models import ListPage, ObjectInfo, PresignedURL
from client.sources import UploadSource, prepare_source

MAX_MESSAGE_SIZE = 8 * 1024 * 1024

_METHODS = {"GET": storage_pb2.HTTP_METHOD_GET, "PUT": storage_pb2.HTTP_METHOD_PUT}


# Initial metadata by which the server accepts an upload's spec (see Upload
# in protos/blobgate/v1/storage.proto).
UPLOAD_ACCEPTED_KEY = "blobgate-upload"


class _Refused(Exception):
    """The server ended an upload without accepting its spec."""


class DownloadStream:
    """An open download: ``info`` describes the object, iterating yields its
    bytes. When the whole object is read and the server knows its sha256, the
    end of the iteration checks it (DATA_LOSS on a mismatch). Close it (or use
    ``async with``) to cancel a download that is not read to the end."""

    def __init__(self, call: Any, info: ObjectInfo, *, whole: bool) -> None:
        self._call = call
        self.info = info
        self._digest = hashlib.sha256() if whole else None
        self._received = 0
        self._finished = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        if self._finished:
            raise StopAsyncIteration
        with translate_errors():
            message = await self._call.read()
        if message is grpc.aio.EOF:
            self._finished = True
            self._verify()
            raise StopAsyncIteration
        if message.WhichOneof("message") != "data":
            self.close()
            raise BlobgateError(grpc.StatusCode.INTERNAL, "server sent a second object message")
        data: bytes = message.data
        self._received += len(data)
        if self._digest is not None:
            self._digest.update(data)
        return data

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

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class Client:
    """A connection to one blobgate server, e.g. ``Client("127.0.0.1:50051")``.

    ``timeout`` is the deadline in seconds of each unary call (stat, list,
    presign, delete); ``stream_timeout`` that of each upload and download,
    None by default since big objects take as long as they take. An empty
    ``bucket`` means the server's default bucket.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = 60.0,
        stream_timeout: float | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self._channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
                ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
            ],
        )
        self._stub = storage_pb2_grpc.StorageServiceStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel, cancelling calls still running."""
        await self._channel.close()

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
    ) -> ObjectInfo:
        """Store ``source`` as ``key`` and return the committed object.

        ``source`` is bytes, a path, a binary file object or an async iterable
        of bytes. For bytes and paths the size and sha256 go with the request so
        the server verifies them. ``size`` declares the byte count of the other
        kinds (the server checks it). ``content_type`` defaults to a guess
        from the key's extension. Nothing is stored if anything fails.
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
        call = self._stub.Upload(timeout=self.stream_timeout)
        with translate_errors():
            try:
                await call.write(storage_pb2.UploadRequest(spec=spec))
                # Wait for the server to accept the spec before writing data: a
                # refused spec then ends the call with no write in flight (a
                # grpc.aio write that races the server's status replaces that
                # status with INTERNAL: grpc/grpc#36066).
                metadata = await call.initial_metadata()
                if dict(metadata or ()).get(UPLOAD_ACCEPTED_KEY) != "accepted":
                    raise _Refused
                async for chunk in prepared.chunks:
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
                await _aclose(prepared.chunks)
            response: storage_pb2.UploadResponse = await call
        return ObjectInfo.from_proto(response.object)

    async def open_download(
        self, key: str, *, bucket: str = "", offset: int = 0, limit: int = 0, if_match: str = ""
    ) -> DownloadStream:
        """Start downloading ``key`` (or ``limit`` bytes from ``offset``; a
        negative offset counts from the end) and wait for the object's
        description, so a missing key or failed ``if_match`` raises here."""
        request = storage_pb2.DownloadRequest(
            bucket=bucket, key=key, offset=offset, limit=limit, if_match=if_match
        )
        call = self._stub.Download(request, timeout=self.stream_timeout)
        try:
            with translate_errors():
                first = await call.read()
        except BaseException:
            call.cancel()
            raise
        if first is grpc.aio.EOF or first.WhichOneof("message") != "object":
            call.cancel()
            raise BlobgateError(
                grpc.StatusCode.INTERNAL, "server did not describe the object first"
            )
        return DownloadStream(
            call, ObjectInfo.from_proto(first.object), whole=offset == 0 and limit == 0
        )

    async def download(
        self, key: str, *, bucket: str = "", offset: int = 0, limit: int = 0, if_match: str = ""
    ) -> AsyncIterator[bytes]:
        """Yield the bytes of ``key`` (see ``open_download`` for the range),
        in chunks of at most 1 MiB."""
        stream = await self.open_download(
            key, bucket=bucket, offset=offset, limit=limit, if_match=if_match
        )
        async with stream:
            async for chunk in stream:
                yield chunk

    async def download_to(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        bucket: str = "",
        offset: int = 0,
        limit: int = 0,
        if_match: str = "",
    ) -> ObjectInfo:
        """Download ``key`` into the file ``path``, atomically: the bytes go to
        a temporary file beside it that is renamed over ``path`` only once the
        download succeeded (and, for a whole object, its sha256 matched)."""
        target = Path(path)
        async with await self.open_download(
            key, bucket=bucket, offset=offset, limit=limit, if_match=if_match
        ) as stream:
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
        response: storage_pb2.StatResponse = await self._unary(self._stub.Stat, request)
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
        response: storage_pb2.ListResponse = await self._unary(self._stub.List, request)
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
        response: storage_pb2.PresignResponse = await self._unary(self._stub.Presign, request)
        return PresignedURL.from_proto(response)

    async def delete(self, key: str, *, bucket: str = "", if_match: str = "") -> None:
        """Remove ``key``; a missing key is not an error unless ``if_match`` is given."""
        request = storage_pb2.DeleteRequest(bucket=bucket, key=key, if_match=if_match)
        await self._unary(self._stub.Delete, request)

    async def _unary(self, method: Any, request: Any) -> Any:
        with translate_errors():
            return await method(request, timeout=self.timeout)


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration


def _flush_and_sync(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
