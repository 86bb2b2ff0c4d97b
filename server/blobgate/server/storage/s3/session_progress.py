"""How far a resumable session's stream has durably got: the checkpoint
advanced over the parts S3 has stored (``sessions``)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Protocol

from blobgate.server.storage.protocols import Session
from blobgate.server.storage.s3.checkpoint import Checkpoint


class CheckpointWriter(Protocol):
    async def write_checkpoint(
        self, session: Session, checkpoint: Checkpoint, revision: str
    ) -> str:
        """Replace the session's record if it is still at ``revision``
        (FailedPrecondition otherwise); the new revision."""
        ...


class SessionProgress:
    """Advances a session's checkpoint as its parts are stored: over parts
    stored without a gap, and only for whole parts, whose hash states were
    noted as they were cut.

    A stored part keeps its upload slot until the checkpoint counts it, so
    the parts past the checkpoint never outnumber the upload slots, even when
    an early part is slow (an S3 retry): what an instance killed mid-stream
    loses stays within the bound docs/api.md states."""

    def __init__(
        self, sessions: CheckpointWriter, session: Session, checkpoint: Checkpoint
    ) -> None:
        self._sessions = sessions
        self._session = session
        self.checkpoint = checkpoint
        self._revision = session.revision
        self._stored: set[int] = set()
        self._states: dict[int, tuple[str, int]] = {}
        self._lock = asyncio.Lock()
        self._moved = asyncio.Condition(self._lock)
        self._abandoned = False

    def cut(self, part: int, state: tuple[str, int]) -> None:
        """Part ``part`` is whole; after it the hashes stand at ``state``."""
        self._states[part] = state

    async def stored(self, part: int) -> None:
        """Part ``part`` is in S3: advance the checkpoint over the parts now
        stored without a gap, then wait until it counts ``part`` (or the
        stream is abandoned) before the part's slot goes back."""
        if part not in self._states:
            return  # the last, partial part: never persisted on its own
        self._stored.add(part)
        async with self._moved:
            parts = self.checkpoint.parts
            while parts + 1 in self._stored:
                parts += 1
            if parts > self.checkpoint.parts:
                state, crc = self._states[parts]
                advanced = replace(self.checkpoint, parts=parts, sha256_state=state, crc32c=crc)
                self._revision = await self._sessions.write_checkpoint(
                    self._session, advanced, self._revision
                )
                self.checkpoint = advanced
                for done in [n for n in self._states if n <= parts]:
                    del self._states[done]
                self._moved.notify_all()
            await self._moved.wait_for(lambda: self.checkpoint.parts >= part or self._abandoned)

    async def abandon(self) -> None:
        """The stream failed: no part waits for the checkpoint any more (a
        part landing later still advances it)."""
        async with self._moved:
            self._abandoned = True
            self._moved.notify_all()

    async def claim(self) -> None:
        """Before committing: raise FailedPrecondition if another stream moved
        the session since this one last wrote it, by rewriting the record
        under the same condition. Without this, a stale stream that stored
        no whole part would commit over the other stream's parts."""
        async with self._lock:
            self._revision = await self._sessions.write_checkpoint(
                self._session, self.checkpoint, self._revision
            )
