"""Ranged reads: an open GetObject streamed in bounded chunks.

The body is read from aiohttp's stream as the pieces the connection
delivered (``readchunk``: no join, no copy), cut at the message size with
memoryviews. aiohttp re-arms its read timeout on every piece it receives;
for a download that timer is replaced by one watchdog per read, which fires
at most once per ``s3_read_timeout`` and ends a body that S3 stalls (the
call gets UNAVAILABLE, as before)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

from aiohttp import ClientPayloadError

from blobgate.server.storage.protocols import ByteRange, ObjectRef, StoredObject
from blobgate.server.storage.s3.errors import s3_errors


def range_header(byte_range: ByteRange) -> str | None:
    """The HTTP Range header for ``byte_range``; None for the whole object."""
    offset, limit = byte_range.offset, byte_range.limit
    if offset < 0:
        return f"bytes={offset}"  # suffix range; a limit is applied while reading
    if limit > 0:
        return f"bytes={offset}-{offset + limit - 1}"
    return f"bytes={offset}-" if offset > 0 else None


def total_size(response: Mapping[str, Any]) -> int:
    """The whole object's size, from a ranged or plain GetObject response."""
    content_range = str(response.get("ContentRange", ""))
    total = content_range.rpartition("/")[2]
    return int(total) if total.isdigit() else int(response.get("ContentLength", 0))


class _Body:
    """A GetObject body read piece by piece as aiohttp received it, under an
    idle timeout of our own. Falls back to the StreamingBody's ``read``
    where its aiohttp stream is not reachable."""

    def __init__(self, body: Any, read_timeout: float | None) -> None:
        self._body = body
        self._content = getattr(body, "content", None)  # aiohttp's StreamReader
        if not callable(getattr(self._content, "readchunk", None)):
            self._content = None
        self._expected = getattr(body, "content_length", None)
        self._received = 0
        self._carry: bytes | memoryview = b""
        self._timeout = read_timeout
        self._waiting_since: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        if self._content is not None and read_timeout and self._take_over_timeout():
            self._arm(read_timeout)

    def _take_over_timeout(self) -> bool:
        """Switch off aiohttp's per-piece read timer for this response (it
        is set again for the connection's next request)."""
        connection = getattr(self._body, "connection", None)
        protocol = getattr(connection, "protocol", None)
        if protocol is None or not hasattr(protocol, "read_timeout"):
            return False  # the whole body is already buffered, or not aiohttp's
        protocol.read_timeout = None
        return True

    def _arm(self, delay: float) -> None:
        self._watchdog = asyncio.get_running_loop().call_later(delay, self._check)

    def _check(self) -> None:
        """The watchdog: a read that has waited ``read_timeout`` for S3 fails;
        otherwise look again when the current wait would reach it."""
        assert self._timeout is not None and self._content is not None
        self._watchdog = None
        if self._content.at_eof() or self._content.exception() is not None:
            return  # nothing more to wait for
        waited = 0.0
        if self._waiting_since is not None:
            waited = asyncio.get_running_loop().time() - self._waiting_since
            if waited >= self._timeout:
                self._content.set_exception(TimeoutError(f"S3 sent nothing for {self._timeout:g}s"))
                return
        self._arm(self._timeout - waited)

    def prepare(self, size: int) -> None:
        """Let aiohttp buffer up to two messages of ``size`` ahead."""
        if self._content is not None:
            self._content.set_read_chunk_size(size)

    async def read(self, limit: int) -> bytes | memoryview:
        """Up to ``limit`` bytes, as received; empty at the end."""
        if self._content is None:
            return cast(bytes, await self._body.read(limit))
        piece = self._carry
        if not piece:
            piece = await self._next()
        if len(piece) > limit:
            view = memoryview(piece)
            self._carry = view[limit:]
            return view[:limit]
        self._carry = b""
        return piece

    async def _next(self) -> bytes:
        assert self._content is not None
        piece: bytes
        self._waiting_since = asyncio.get_running_loop().time()
        try:
            while True:
                piece, end_of_http_chunk = await self._content.readchunk()
                if piece or not end_of_http_chunk:
                    break
        finally:
            self._waiting_since = None
        self._received += len(piece)
        if not piece and self._expected is not None and self._received != self._expected:
            raise ClientPayloadError(
                f"S3 ended the body after {self._received} of {self._expected} bytes"
            )
        return piece

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._carry = b""
        self._body.close()


class S3Reader:
    """An open GetObject: its description and a bounded stream of its bytes."""

    def __init__(
        self,
        info: StoredObject,
        body: Any,
        limit: int,
        ref: ObjectRef,
        *,
        read_timeout: float | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.info = info
        self._on_close = on_close  # gives the GET's place on the pool back
        self._raw_body = body
        self._read_timeout = read_timeout
        self._body: _Body | None = None
        self._closed = False
        self._remaining = limit  # -1: no limit beyond the requested range
        self._ref = ref

    async def chunks(self, size: int) -> AsyncIterator[list[bytes]]:
        """Chunks of at most ``size`` bytes, each as the pieces received (a
        piece cut at a chunk's end is a memoryview: the pieces are measured
        and joined once, never used as bytes otherwise)."""
        if self._closed:
            return
        if self._body is None:
            self._body = _Body(self._raw_body, self._read_timeout)
        body = self._body
        body.prepare(size)
        while self._remaining != 0:
            want = size if self._remaining < 0 else min(size, self._remaining)
            pieces: list[bytes | memoryview] = []
            got = 0
            while got < want:
                with s3_errors(self._ref):
                    piece = await body.read(want - got)
                if not piece:
                    break
                pieces.append(piece)
                got += len(piece)
            if not got:
                return
            if self._remaining > 0:
                self._remaining -= got
            yield cast(list[bytes], pieces)
            if got < want:
                return

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._body is not None:
                self._body.close()
            else:
                self._raw_body.close()
            self._raw_body = None
        finally:
            if self._on_close is not None:
                self._on_close()


class EmptyReader:
    """A read that selects no bytes (at the very end, or of an empty object)."""

    def __init__(self, info: StoredObject) -> None:
        self.info = info

    async def chunks(self, size: int) -> AsyncIterator[list[bytes]]:
        return
        yield []  # pragma: no cover - makes this an async generator

    async def close(self) -> None:
        return None
