"""What ``Client.upload`` accepts, turned into chunks (1 MiB by default) plus
whatever is known before sending (size and sha256 for bytes and files; nothing for
streams). Local files are read in a worker thread so the event loop keeps
serving other calls."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

CHUNK_SIZE = 1024 * 1024


@runtime_checkable
class BinaryReader(Protocol):
    """A binary file object: ``read(n)`` returns up to n bytes, b"" at the end."""

    def read(self, size: int, /) -> bytes: ...


UploadSource = (
    bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryReader | AsyncIterable[bytes]
)
"""Bytes in memory, a path (``str`` is always a path), a binary file object, or
an async iterable of byte chunks."""


@dataclass(frozen=True)
class PreparedSource:
    """The chunks to send, and the size and sha256 when known up front.
    ``reread`` gives the chunks again from an offset, for sources that can be
    read twice (bytes and paths): what a resumed upload sends."""

    chunks: AsyncIterator[bytes]
    size: int | None = None
    sha256: bytes | None = None
    reread: Callable[[int], AsyncIterator[bytes]] | None = None


async def prepare_source(
    source: UploadSource, chunk_size: int = CHUNK_SIZE, *, digest: bool = True
) -> PreparedSource:
    """Chunks of ``chunk_size`` bytes and up-front facts for one upload
    source. A path is read twice: once to hash it, once to send it, never
    held whole in memory. Without ``digest`` the sha256 of bytes and paths
    is left to the upload (a direct one hashes as it sends)."""
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source).cast("B")
        sha256 = await asyncio.to_thread(lambda: hashlib.sha256(view).digest()) if digest else None
        return PreparedSource(
            _memory_chunks(view, chunk_size),
            len(view),
            sha256,
            lambda offset: _memory_chunks(view[offset:], chunk_size),
        )
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if digest:
            size, sha256 = await asyncio.to_thread(_hash_file, path)
        else:
            size, sha256 = (await asyncio.to_thread(path.stat)).st_size, None
        return PreparedSource(
            _file_chunks(path, chunk_size),
            size,
            sha256,
            lambda offset: _file_chunks(path, chunk_size, offset),
        )
    if isinstance(source, AsyncIterable):
        return PreparedSource(_rechunk(source, chunk_size))
    if isinstance(source, BinaryReader):
        return PreparedSource(_reader_chunks(source, chunk_size))
    raise TypeError(
        f"cannot upload {type(source).__name__}: give bytes, a path, a binary file "
        "object or an async iterable of bytes"
    )


def known_size(source: UploadSource) -> int | None:
    """The size of bytes and of a path's file, without reading it; None for
    a stream (or a path that cannot be stat'ed: its upload says why)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return memoryview(source).nbytes
    if isinstance(source, str | os.PathLike):
        try:
            return Path(source).stat().st_size
        except OSError:
            return None
    return None


def _hash_file(path: Path) -> tuple[int, bytes]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.digest()


async def _memory_chunks(view: memoryview, chunk_size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(view), chunk_size):
        yield bytes(view[start : start + chunk_size])


async def _file_chunks(path: Path, chunk_size: int, offset: int = 0) -> AsyncIterator[bytes]:
    file: BinaryIO = await asyncio.to_thread(path.open, "rb")
    try:
        if offset:
            await asyncio.to_thread(file.seek, offset)
        async for chunk in _reader_chunks(file, chunk_size):
            yield chunk
    finally:
        await asyncio.to_thread(file.close)


async def _reader_chunks(reader: BinaryReader, chunk_size: int) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(reader.read, chunk_size):
        yield chunk


async def _rechunk(chunks: AsyncIterable[bytes], chunk_size: int) -> AsyncIterator[bytes]:
    """Chunks of exactly ``chunk_size`` (the last may be shorter), whatever the
    caller's sizes: big ones would pass the message limit, tiny ones cost a
    message each."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= chunk_size:
            yield bytes(buffer[:chunk_size])
            # Deleting from the front of a bytearray is O(1) in CPython.
            del buffer[:chunk_size]
    if buffer:
        yield bytes(buffer)


async def close_chunks(chunks: AsyncIterator[bytes]) -> None:
    """Close ``chunks`` if it is an async generator (or has ``aclose``)."""
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()
