"""The content checksums, computed in one place for every store and path.

A store hashes what it reads from an upload's body with a ``Hasher`` and
checks the result against what the client vouched for (``verify``) before it
commits. Sessions save the running state between calls (``Hasher.state``)
so that any instance can continue them. A multipart upload hashes each part
once (``Hasher.update_part``): the part's CRC32C goes to S3 with the part,
and the whole object's CRC32C is combined from the parts' without a second
pass over the bytes (``crc32c_combine``). S3 writes a CRC32C as base64 of
its four big-endian bytes (``crc32c_to_s3``, ``crc32c_from_s3``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable

import crc32c

from blobgate.server.core.errors import InvalidArgument
from blobgate.server.storage.protocols import Chunk, ContentChecksums
from blobgate.server.storage.sha256_state import Sha256State


def crc32c_extend(crc: int, data: Chunk) -> int:
    """``crc`` extended over ``data``: any buffer, a memoryview without a copy."""
    return int(crc32c.crc32c(data, crc))


class Hasher:
    """SHA-256 and CRC32C of a byte stream. A ``resumable`` one (a session's)
    can save its state and be continued from it elsewhere; the others use
    hashlib, measured ~12% faster than OpenSSL's exportable SHA-256 here."""

    def __init__(self, sha256_state: str = "", crc32c: int = 0, *, resumable: bool = False) -> None:
        self._sha256: Sha256State | hashlib._Hash
        if resumable or sha256_state:
            self._sha256 = Sha256State(base64.b64decode(sha256_state) if sha256_state else None)
        else:
            self._sha256 = hashlib.sha256()
        self._crc32c = crc32c

    def update(self, data: Chunk) -> None:
        self._sha256.update(data)
        self._crc32c = crc32c_extend(self._crc32c, data)

    def update_part(self, data: Chunk | Iterable[Chunk]) -> int:
        """Hash ``data`` (bytes, or the pieces of it in order) as one whole
        multipart part; the part's own CRC32C. The running CRC32C is extended
        from it, not from a second pass over the bytes."""
        pieces = [data] if isinstance(data, bytes | memoryview) else data
        crc = 0
        size = 0
        for piece in pieces:
            self._sha256.update(piece)
            crc = crc32c_extend(crc, piece)
            size += len(piece)
        self._crc32c = crc32c_combine(self._crc32c, crc, size)
        return int(crc)

    def state(self) -> tuple[str, int]:
        """The running state to save: base64 SHA-256 state and the CRC32C."""
        if not isinstance(self._sha256, Sha256State):
            raise TypeError("only a resumable Hasher has a state to save")
        return base64.b64encode(self._sha256.state()).decode(), self._crc32c

    def checksums(self) -> ContentChecksums:
        """The checksums of everything hashed so far."""
        return ContentChecksums(sha256=self._sha256.digest(), crc32c=self._crc32c)

    async def hashed(self, body: AsyncIterable[Chunk]) -> AsyncIterator[Chunk]:
        """``body``, hashing each chunk as it passes."""
        async for chunk in body:
            self.update(chunk)
            yield chunk


# CRC32C (Castagnoli), reflected: the polynomial and x^0 as zlib writes them.
_POLY = 0x82F63B78
_ONE = 1 << 31


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial (zlib's multmodp); ``a`` is not 0."""
    m = _ONE
    p = 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _x2n_table() -> list[int]:
    table = [_ONE >> 1]  # x^1
    for _ in range(31):
        table.append(_multmodp(table[-1], table[-1]))
    return table


_X2N = _x2n_table()  # x^(2^n) modulo the polynomial


@functools.lru_cache(maxsize=64)
def _xpow8n(length: int) -> int:
    """x^(8 * length) modulo the polynomial: shifts a CRC past ``length`` bytes."""
    p, k = _ONE, 3
    while length:
        if length & 1:
            p = _multmodp(_X2N[k & 31], p)
        length >>= 1
        k += 1
    return p


def crc32c_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC32C of A + B from that of A, that of B and B's length (zlib's
    crc32_combine for the Castagnoli polynomial): a few hundred operations,
    whatever the lengths."""
    return _multmodp(_xpow8n(length2), crc1) ^ crc2


def crc32c_to_s3(crc: int) -> str:
    """A CRC32C as S3's ``ChecksumCRC32C`` fields write it."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def crc32c_from_s3(value: str) -> int | None:
    """An S3 ``ChecksumCRC32C`` as an int; None for a composite checksum
    (``...-N``: a checksum of the parts' checksums, not of the bytes) or
    anything unreadable."""
    if not value or "-" in value:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return int.from_bytes(raw, "big") if len(raw) == 4 else None


def verify(expected: ContentChecksums, actual: ContentChecksums) -> None:
    """Raise InvalidArgument unless the data matches what the client vouched for."""
    if expected.sha256 is not None and expected.sha256 != actual.sha256:
        received = actual.sha256.hex() if actual.sha256 else "unknown"
        raise InvalidArgument(
            f"sha256 mismatch: expected {expected.sha256.hex()}, "
            f"received data hashes to {received}; nothing was stored"
        )
    if expected.crc32c is not None and expected.crc32c != actual.crc32c:
        received = f"{actual.crc32c:#010x}" if actual.crc32c is not None else "unknown"
        raise InvalidArgument(
            f"crc32c mismatch: expected {expected.crc32c:#010x}, "
            f"received data has {received}; nothing was stored"
        )
