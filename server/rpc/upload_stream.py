"""The Upload stream adapter: the first message is the spec, every later one
is data. It counts and hashes the bytes as they pass and checks them against
what the client declared, raising before the store can commit.

Data messages usually arrive as the payload alone (bytes or a memoryview of
the received message; see ``service._upload_request``), other messages as an
UploadRequest, and undecodable ones as the InvalidArgument to raise. Nothing
here keeps a message once its bytes are passed on: a stream that waits (for
budget, for S3, for its client) holds at most the one message in hand.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

import google_crc32c

from blobgate.server.errors import InvalidArgument, OutOfRange, ResourceExhausted, ServiceError
from blobgate.server.rpc import stream_end
from blobgate.server.storage.protocols import Chunk, ContentChecksums, verify_checksums
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
    own task: it watches that task for a failed receive (blobgate.server.rpc.stream_end)."""

    def __init__(
        self,
        requests: AsyncIterable[UploadMessage],
        max_size: int,
        on_accepted: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._requests = aiter(requests)
        stream_end.watch()
        self._on_accepted = on_accepted
        self._max_size = max_size
        self._sha256 = hashlib.sha256()
        self._crc32c = google_crc32c.Checksum()
        self.size = 0
        self.spec = storage_pb2.UploadSpec()
        self._declared: int | None = None
        self._hashing = True

    async def read_first(self) -> storage_pb2.UploadSpec | storage_pb2.UploadResume:
        """Read the first message: a spec (checked here) or a session's resume."""
        try:
            first = await anext(self._requests)
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
        check_spec(first.spec, self._max_size)
        self.spec = first.spec
        self._declared = self.spec.size if self.spec.HasField("size") else None
        return self.spec

    def resume_at(self, offset: int, declared: int | None) -> None:
        """Count from ``offset`` (the bytes a session already holds) against
        the session's declared size; the session's store does the hashing."""
        self.size = offset
        self._declared = declared
        self._hashing = False

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Yield the data; on the stream's end, verify size and checksums.
        ``on_accepted`` runs first: the consumer has accepted the spec."""
        declared = self._declared
        if self._on_accepted is not None:
            await self._on_accepted()
        async for message in self._requests:
            data = _data(message)
            del message  # an UploadRequest would hold a second copy of the bytes
            self.size += len(data)
            if declared is not None and self.size > declared:
                raise OutOfRange(f"received more than the declared size of {declared} bytes")
            if self.size > self._max_size:
                raise ResourceExhausted(
                    f"object is over the server's limit of {self._max_size} bytes"
                )
            if self._hashing:
                self._sha256.update(data)
                # google_crc32c takes only bytes: a memoryview costs a passing copy.
                self._crc32c.update(data if isinstance(data, bytes) else bytes(data))
            yield data
            del data  # not kept while the next message is awaited
        # grpc.aio ends the iterator on a failed receive too: never commit then.
        stream_end.ensure_clean_end()
        if declared is not None and self.size != declared:
            raise OutOfRange(f"received {self.size} bytes but the declared size is {declared}")
        if self._hashing:
            verify_checksums(expected_checksums(self.spec.expected), self.checksums())

    def checksums(self) -> ContentChecksums:
        """The checksums of everything received (complete once chunks() ended)."""
        return ContentChecksums(
            sha256=self._sha256.digest(),
            crc32c=int.from_bytes(self._crc32c.digest(), "big"),
        )


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
