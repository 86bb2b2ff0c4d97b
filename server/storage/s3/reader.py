"""Ranged reads: an open GetObject streamed in bounded chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

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


class S3Reader:
    """An open GetObject: its description and a bounded stream of its bytes."""

    def __init__(self, info: StoredObject, body: Any, limit: int, ref: ObjectRef) -> None:
        self.info = info
        self._body = body
        self._remaining = limit  # -1: no limit beyond the requested range
        self._ref = ref

    async def chunks(self, size: int) -> AsyncIterator[list[bytes]]:
        while self._remaining != 0:
            want = size if self._remaining < 0 else min(size, self._remaining)
            pieces: list[bytes] = []
            got = 0
            while got < want:
                with s3_errors(self._ref):
                    piece = await self._body.read(want - got)
                if not piece:
                    break
                pieces.append(piece)
                got += len(piece)
            if not got:
                return
            if self._remaining > 0:
                self._remaining -= got
            yield pieces
            if got < want:
                return

    async def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None


class EmptyReader:
    """A read that selects no bytes (at the very end, or of an empty object)."""

    def __init__(self, info: StoredObject) -> None:
        self.info = info

    async def chunks(self, size: int) -> AsyncIterator[list[bytes]]:
        return
        yield []  # pragma: no cover - makes this an async generator

    async def close(self) -> None:
        return None
