"""Writing a download to a local file: atomically for a path, as the bytes
arrive for a file object. Files are written in worker threads so the event
loop keeps serving other calls."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterable
from pathlib import Path
from typing import BinaryIO


async def write_atomically(target: Path, chunks: AsyncIterable[bytes | memoryview]) -> None:
    """Write ``chunks`` to a temporary file beside ``target`` and rename it
    over ``target`` only once they all arrived and are on disk; on any
    failure the temporary file is removed and ``target`` left as it was."""
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.blobgate-part")
    try:
        file: BinaryIO = await asyncio.to_thread(temp.open, "xb")
    except OSError as exc:
        # Name what the caller asked for, not the temporary file.
        folder = target.parent
        reason = (
            f"the folder {folder} does not exist"
            if isinstance(exc, FileNotFoundError)
            else f"cannot write in {folder}: {exc.strerror}"
        )
        raise OSError(exc.errno, reason, str(target)) from exc
    try:
        try:
            async for chunk in chunks:
                await asyncio.to_thread(file.write, chunk)
            await asyncio.to_thread(_flush_and_sync, file)
        finally:
            await asyncio.to_thread(file.close)
        await asyncio.to_thread(os.replace, temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(temp.unlink)
        raise


async def write_chunks(file: BinaryIO, chunks: AsyncIterable[bytes | memoryview]) -> None:
    """Write ``chunks`` to ``file`` as they arrive (on failure it holds a prefix)."""
    async for chunk in chunks:
        await asyncio.to_thread(file.write, chunk)


def _flush_and_sync(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())
