"""The whole-object check of a download: the received bytes against the
checksum the server described the object with. CRC32C when the object has
one (hardware-accelerated, tens of GB/s), SHA-256 when asked for or when
the object has no CRC32C; with neither, only the size is checked."""

from __future__ import annotations

import hashlib

import crc32c
import grpc

from blobgate.client.errors import BlobgateError
from blobgate.client.models import ObjectInfo


class ContentCheck:
    """Hashes the bytes of a whole-object download as they arrive and
    checks them at the end (``verify``: DATA_LOSS on a mismatch)."""

    def __init__(self, info: ObjectInfo, *, sha256: bool = False) -> None:
        self.info = info
        self.received = 0
        self._crc: int | None = None
        self._sha: hashlib._Hash | None = None
        if info.crc32c is not None and not (sha256 and info.sha256 is not None):
            self._crc = 0
        elif info.sha256 is not None:
            self._sha = hashlib.sha256()

    @property
    def algorithm(self) -> str:
        """``crc32c``, ``sha256`` or ``size`` (the object has no checksum)."""
        return "crc32c" if self._crc is not None else "sha256" if self._sha else "size"

    def update(self, data: bytes | memoryview) -> None:
        self.received += len(data)
        if self._crc is not None:
            self._crc = crc32c.crc32c(data, self._crc)
        elif self._sha is not None:
            self._sha.update(data)

    def matches(self) -> bool:
        """Whether every byte arrived and, where known, the checksum agrees."""
        return self._problem() is None

    def verify(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise BlobgateError(grpc.StatusCode.DATA_LOSS, f"{self.info.key}: {problem}")

    def _problem(self) -> str | None:
        if self.received != self.info.size:
            return f"received {self.received} bytes, the object has {self.info.size}"
        if self._crc is not None and self._crc != self.info.crc32c:
            return (
                f"CRC32C of the received bytes {self._crc:08x} differs from the stored "
                f"{self.info.crc32c:08x}"
            )
        if self._sha is not None and self._sha.digest() != self.info.sha256:
            stored = self.info.sha256.hex() if self.info.sha256 else ""
            return (
                f"sha256 of the received bytes {self._sha.hexdigest()} differs from the "
                f"stored {stored}"
            )
        return None
