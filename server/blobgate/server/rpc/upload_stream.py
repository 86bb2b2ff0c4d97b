"""The Upload stream adapter: the first message is the spec, every later one
is data. It counts the bytes as they pass, checks them against the declared
size and the server's limit, and ends only if the stream ended cleanly,
raising before the store can commit (the store checks the checksums).

Data messages usually arrive as the payload alone (bytes or a memoryview of
the received message; see ``codecs.parse_upload_request``), other messages as an
UploadRequest, and undecodable ones as the InvalidArgument to raise. Nothing
here keeps a message once its bytes are passed on: a stream that waits (for
budget, for S3, for its client) holds at most the one message in hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

from blobgate.server.core.errors import (
    InvalidArgument,
    OutOfRange,
    ResourceExhausted,
    ServiceError,
    StreamIdle,
)
from blobgate.server.rpc import stream_end
from blobgate.server.rpc.access_log import CallRecord
from blobgate.server.storage.protocols import Chunk, ContentChecksums
from blobgate.v1 import storage_pb2

UploadMessage = storage_pb2.UploadRequest | Chunk | ServiceError
"""What the Upload deserializer hands over for one message."""


def _data(message: UploadMessage) -> Chunk:
    """The bytes of a data message; raise for anything else."""
    if isinstance(message, ServiceError):  # undecodable message
        raise message
    if isinstance(message, Chunk):
        return message
    if message.WhichOneof("message") != "data":
        raise InvalidArgument(
            "a second UploadSpec or UploadResume: only the first message may be one"
        )
    return message.data


class UploadStream:
    """Wraps the request iterator of one Upload call. Made inside the call's
    own task: it watches that task for a failed receive (blobgate.server.rpc.stream_end).
    It writes the spec's object and the bytes in to ``record``, the call's
    access record (none given: a record of no call)."""

    def __init__(
        self,
        requests: AsyncIterable[UploadMessage],
        max_size: int,
        on_accepted: Callable[[], Awaitable[None]] | None = None,
        *,
        idle_timeout: float | None = None,
        record: CallRecord | None = None,
    ) -> None:
        self._requests = aiter(requests)
        stream_end.watch()
        self._record = CallRecord() if record is None else record
        self._on_accepted = on_accepted
        self._max_size = max_size
        self._idle_timeout = idle_timeout
        self.size = 0
        self.spec = storage_pb2.UploadSpec()
        self._declared: int | None = None

    async def _next(self) -> UploadMessage:
        """The client's next message, if it sends one within the idle timeout
        (StopAsyncIteration at the end). Only waiting on the client counts:
        while the store is busy the stream is not read, and flow control
        holds the client back."""
        try:
            async with asyncio.timeout(self._idle_timeout):
                return await anext(self._requests)
        except TimeoutError:
            raise StreamIdle(
                f"the client sent nothing for {self._idle_timeout:g}s: the upload was ended "
                "and nothing was stored"
            ) from None

    async def read_first(self) -> storage_pb2.UploadSpec | storage_pb2.UploadResume:
        """Read the first message: a spec (checked here) or a session's resume."""
        try:
            first = await self._next()
        except StopAsyncIteration:
            raise InvalidArgument(
                "empty stream: send an UploadSpec or an UploadResume as the first message"
            ) from None
        if isinstance(first, ServiceError):  # undecodable message
            raise first
        if isinstance(first, Chunk):
            raise InvalidArgument("the first message must be an UploadSpec or an UploadResume")
        kind = first.WhichOneof("message")
        if kind == "resume":
            return first.resume
        if kind != "spec":
            raise InvalidArgument("the first message must be an UploadSpec or an UploadResume")
        self._record.bucket, self._record.key = first.spec.bucket, first.spec.key
        check_spec(first.spec, self._max_size)
        self.spec = first.spec
        self._declared = self.spec.size if self.spec.HasField("size") else None
        return self.spec

    def resume_at(self, offset: int, declared: int | None) -> None:
        """Count from ``offset`` (the bytes a session already holds) against
        the session's declared size."""
        self.size = offset
        self._declared = declared

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Yield the data; on the stream's end, verify its size and that it
        ended cleanly. ``on_accepted`` runs first: the consumer has accepted
        the spec."""
        declared = self._declared
        if self._on_accepted is not None:
            await self._on_accepted()
        while True:
            try:
                message = await self._next()
            except StopAsyncIteration:
                break
            data = _data(message)
            del message  # an UploadRequest would hold a second copy of the bytes
            self.size += len(data)
            self._record.bytes_in += len(data)
            if declared is not None and self.size > declared:
                raise OutOfRange(f"received more than the declared size of {declared} bytes")
            if self.size > self._max_size:
                raise ResourceExhausted(
                    f"object is over the server's limit of {self._max_size} bytes"
                )
            yield data
            del data  # not kept while the next message is awaited
        # grpc.aio ends the iterator on a failed receive too: never commit then.
        stream_end.ensure_clean_end()
        if declared is not None and self.size != declared:
            raise OutOfRange(f"received {self.size} bytes but the declared size is {declared}")


def check_spec(spec: storage_pb2.UploadSpec, max_size: int) -> None:
    """The spec's own checks on size and checksums, before any data."""
    if spec.HasField("size"):
        if spec.size < 0:
            raise InvalidArgument(f"declared size {spec.size} is negative")
        if spec.size > max_size:
            raise ResourceExhausted(
                f"declared size {spec.size} is over the server's limit of {max_size} bytes"
            )
    if spec.expected.sha256 and len(spec.expected.sha256) != 32:
        raise InvalidArgument(f"expected.sha256 must be 32 bytes, got {len(spec.expected.sha256)}")


def expected_checksums(expected: storage_pb2.Checksums) -> ContentChecksums:
    """What the client vouched for, unset fields as None."""
    return ContentChecksums(
        sha256=expected.sha256 or None,
        crc32c=expected.crc32c if expected.HasField("crc32c") else None,
    )
