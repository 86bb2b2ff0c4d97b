"""Reading a file that may be rewritten in place: never between two of its
writer's pieces.

A file is read only once it has been left alone for a settle time (its
mtime that old, or, when its clock runs ahead of ours, its stamp unchanged
that long in our own looks), and the read counts only if the file's stamp
(device, inode, size, mtime) is the same after it as before. A writer that
pauses longer than the settle time between pieces can still be read
between them: what is read must then be refused by its own format.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

Stamp = tuple[int, int, int, int]
"""A file's device, inode, size and mtime (ns)."""


class Unsettled(Exception):
    """The file changed while it was read: read it again later."""


def stamp_of(info: os.stat_result) -> Stamp:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def read_whole(path: Path, stamp: Stamp, limit: int) -> bytes:
    """The file's bytes (at most ``limit + 1``), read from a file whose
    stamp was ``stamp`` before the read; Unsettled when it is not that
    after it; OSError when it cannot be read."""
    with path.open("rb") as file:
        data = file.read(limit + 1)
        after = stamp_of(os.fstat(file.fileno()))
    if after != stamp or (len(data) <= limit and len(data) != stamp[2]):
        raise Unsettled(f"{path} changed while it was read")
    return data


class Settling:
    """Whether a file has been left alone long enough to be read."""

    def __init__(self) -> None:
        self._seen: tuple[Stamp, float] | None = None  # a stamp, and since when we see it

    def settled(self, stamp: Stamp, seconds: float) -> bool:
        """Whether the file of ``stamp`` has not changed for ``seconds``."""
        if time.time_ns() - stamp[3] >= seconds * 1e9:
            return True
        now = time.monotonic()
        if self._seen is None or self._seen[0] != stamp:
            self._seen = (stamp, now)
        return now - self._seen[1] >= seconds


__all__ = ["Settling", "Stamp", "Unsettled", "read_whole", "stamp_of"]
