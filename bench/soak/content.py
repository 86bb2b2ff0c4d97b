"""Soak objects' content: a header naming the object, then a seeded random
block repeated from an offset of the object's own, cheap to make and to check."""

from __future__ import annotations

import random
from dataclasses import dataclass

from bench import MiB

HEADER_SIZE = 64
BLOCK_SIZE = MiB + 4087  # a prime: no shift by whole MiB (messages, parts) matches


@dataclass
class SoakObject:
    """One uploaded object, and what may be done with it."""

    index: int
    key: str
    size: int
    rotation: int  # where in the block the body starts
    header: bytes
    metadata: dict[str, str]
    sha256: bytes | None = None
    etag: str = ""
    committed: bool = False  # the upload returned
    readers: int = 0  # downloads and stats in flight
    reads: int = 0
    retired: bool = False  # no new reads; delete once readers == 0
    deleting: bool = False


class Corpus:
    """The seeded block, and each object's bytes made from it."""

    def __init__(self, seed: int, prefix: str) -> None:
        rng = random.Random(seed)
        self.block = rng.randbytes(BLOCK_SIZE)
        self.seed = seed
        self.prefix = prefix
        self._rotations = random.Random(seed + 1)

    def new(self, index: int, size: int) -> SoakObject:
        key = f"{self.prefix}{index:06d}.bin"
        header = f"blobgate soak seed={self.seed} object={index} size={size}\n".encode()
        header = header.ljust(HEADER_SIZE, b".")[:HEADER_SIZE]
        metadata = {"soak-seed": str(self.seed), "soak-index": str(index)}
        rotation = self._rotations.randrange(BLOCK_SIZE)
        return SoakObject(index, key, size, rotation, header, metadata)

    def content(self, obj: SoakObject, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of ``obj``."""
        end = obj.size if end is None else min(end, obj.size)
        if start >= end:
            return b""
        out = bytearray()
        if start < HEADER_SIZE:
            out += obj.header[start : min(end, HEADER_SIZE)]
            start = HEADER_SIZE
        if start < end:
            at = (obj.rotation + start - HEADER_SIZE) % BLOCK_SIZE
            rotated = self.block[at:] + self.block[:at]
            count = end - start
            out += memoryview(rotated * (count // BLOCK_SIZE + 1))[:count]
        return bytes(out)
