"""The Upload stream adapter: the first message is the spec, every later one
is data. It counts and hashes the bytes as they pass and checks them against
what the client declared, raising before the store can commit."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

import google_crc32c

from blobgate.v1 import storage_pb2
from server.errors import BlobgateError, InvalidArgument, OutOfRange, ResourceExhausted
from server.store import ContentChecksums


class UploadStream:
    """Wraps the request iterator of one Upload call."""

    def __init__(
        self,
        requests: AsyncIterable[storage_pb2.UploadRequest],
        max_size: int,
        on_accepted: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._requests = aiter(requests)
        self._on_accepted = on_accepted
        self._max_size = max_size
        self._sha256 = hashlib.sha256()
        self._crc32c = google_crc32c.Checksum()
        self.size = 0
        self.spec = storage_pb2.UploadSpec()

    async def read_spec(self) -> storage_pb2.UploadSpec:
        """Read the first message, which must be the spec."""
        try:
            first = await anext(self._requests)
        except StopAsyncIteration:
            raise InvalidArgument("empty stream: send an UploadSpec as the first message") from None
        if isinstance(first, BlobgateError):  # undecodable message
            raise first
        if first.WhichOneof("message") != "spec":
            raise InvalidArgument("the first message must be an UploadSpec, not data")
        self.spec = first.spec
        if self.spec.HasField("size"):
            if self.spec.size < 0:
                raise InvalidArgument(f"declared size {self.spec.size} is negative")
            if self.spec.size > self._max_size:
                raise ResourceExhausted(
                    f"declared size {self.spec.size} is over the server's limit of "
                    f"{self._max_size} bytes"
                )
        expected = self.spec.expected
        if expected.sha256 and len(expected.sha256) != 32:
            raise InvalidArgument(f"expected.sha256 must be 32 bytes, got {len(expected.sha256)}")
        return self.spec

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the data; on the stream's end, verify size and checksums.
        ``on_accepted`` runs first: the consumer has accepted the spec."""
        declared = self.spec.size if self.spec.HasField("size") else None
        if self._on_accepted is not None:
            await self._on_accepted()
        async for request in self._requests:
            if isinstance(request, BlobgateError):  # undecodable message
                raise request
            if request.WhichOneof("message") != "data":
                raise InvalidArgument("UploadSpec sent twice: only the first message is a spec")
            data = request.data
            self.size += len(data)
            if declared is not None and self.size > declared:
                raise OutOfRange(f"received more than the declared size of {declared} bytes")
            if self.size > self._max_size:
                raise ResourceExhausted(
                    f"object is over the server's limit of {self._max_size} bytes"
                )
            self._sha256.update(data)
            self._crc32c.update(data)
            yield data
        if declared is not None and self.size != declared:
            raise OutOfRange(f"received {self.size} bytes but the declared size is {declared}")
        self._verify()

    def checksums(self) -> ContentChecksums:
        """The checksums of everything received (complete once chunks() ended)."""
        return ContentChecksums(
            sha256=self._sha256.digest(),
            crc32c=int.from_bytes(self._crc32c.digest(), "big"),
        )

    def _verify(self) -> None:
        expected = self.spec.expected
        actual = self.checksums()
        if expected.sha256 and expected.sha256 != actual.sha256:
            assert actual.sha256 is not None
            raise InvalidArgument(
                f"sha256 mismatch: expected {expected.sha256.hex()}, "
                f"received data hashes to {actual.sha256.hex()}; nothing was stored"
            )
        if expected.HasField("crc32c") and expected.crc32c != actual.crc32c:
            raise InvalidArgument(
                f"crc32c mismatch: expected {expected.crc32c:#010x}, "
                f"received data has {actual.crc32c:#010x}; nothing was stored"
            )
