"""Progress reporting of transfers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from blobgate.client.sources import close_chunks

Progress = Callable[[int, int | None], None]
"""Called as data moves with (bytes done so far, total bytes or None if unknown)."""


async def counted(
    chunks: AsyncIterator[bytes], progress: Progress, total: int | None, done: int = 0
) -> AsyncIterator[bytes]:
    """``chunks``, reporting to ``progress`` before the first and after each
    one is taken (the upload takes the next only once the last was sent);
    ``done`` bytes were sent before."""
    progress(done, total)
    try:
        async for chunk in chunks:
            yield chunk
            done += len(chunk)
            progress(done, total)
    finally:
        await close_chunks(chunks)
