"""The SessionStore calls of a direct session on S3 (``progress``,
``presign_parts``, ``complete_direct``), as a base of ``S3Sessions``: they
read the session's record, check that it is direct, and hand over to
``direct_upload``. A commit that can never succeed ends the session, as a
proxied one's does; parts still missing leave it open.

A direct session's record is written once, at its start, and never
changes, so each instance keeps the records of the direct sessions it saw
(``KNOWN_DIRECT`` at most, the least recently used dropped first): opening
one again for a part URL costs no S3 request. One that ended elsewhere
meanwhile still signs URLs here, for a multipart upload S3 no longer has
(its PUTs are refused: NoSuchUpload), and its progress and commit read S3
and answer NOT_FOUND."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from blobgate.server.core.errors import FailedPrecondition, InvalidArgument, NotFound, UploadGone
from blobgate.server.storage.protocols import (
    NOT_DIRECT,
    SESSION_GONE,
    ContentChecksums,
    DirectPart,
    PartSpec,
    Session,
    StoredObject,
)
from blobgate.server.storage.s3.direct_upload import (
    PartsMissing,
    check_part,
    commit_direct,
    list_all_parts,
    persisted,
    presign_parts,
)

if TYPE_CHECKING:
    from blobgate.server.storage.s3.checkpoint import Checkpoint
    from blobgate.server.storage.s3.connection import S3Connection

log = logging.getLogger(__name__)

KNOWN_DIRECT = 4096  # direct session records an instance keeps (about 1 KB each)


class DirectSessionCalls:
    """What ``S3Sessions`` provides (its connection, its record calls) and
    the two direct session calls made of them."""

    _connection: S3Connection
    _known_direct: OrderedDict[tuple[str, str], tuple[Checkpoint, str]]

    async def _read_checkpoint(self, bucket: str, session_id: str) -> tuple[Checkpoint, str]:
        raise NotImplementedError

    async def _delete_checkpoint(self, bucket: str, session_id: str) -> None:
        raise NotImplementedError

    async def _end(self, bucket: str, session_id: str, checkpoint: Checkpoint) -> None:
        raise NotImplementedError

    def _remember(
        self, bucket: str, session_id: str, checkpoint: Checkpoint, revision: str
    ) -> None:
        self._known_direct[bucket, session_id] = (checkpoint, revision)
        self._known_direct.move_to_end((bucket, session_id))
        while len(self._known_direct) > KNOWN_DIRECT:
            self._known_direct.popitem(last=False)

    def _recall(self, bucket: str, session_id: str) -> tuple[Checkpoint, str] | None:
        known = self._known_direct.get((bucket, session_id))
        if known is not None:
            self._known_direct.move_to_end((bucket, session_id))
        return known

    def _forget(self, bucket: str, session_id: str) -> None:
        self._known_direct.pop((bucket, session_id), None)

    async def _direct(self, session: Session) -> Checkpoint:
        known = self._recall(session.bucket, session.session_id)
        checkpoint = known[0] if known else None
        if checkpoint is None:
            checkpoint, _ = await self._read_checkpoint(session.bucket, session.session_id)
        if not checkpoint.direct:
            raise FailedPrecondition(NOT_DIRECT)
        return checkpoint

    async def _gone(self, session: Session) -> NotFound:
        """The session's multipart upload is gone (ended elsewhere, or by a
        lifecycle rule): drop what is left of it."""
        self._forget(session.bucket, session.session_id)
        await self._delete_checkpoint(session.bucket, session.session_id)
        return NotFound(SESSION_GONE)

    async def progress(self, session: Session) -> int:
        if not session.direct:
            return session.persisted_size
        checkpoint = await self._direct(session)
        client = self._connection.client
        try:
            parts = await list_all_parts(client, session.spec.ref, checkpoint.upload_id)
        except UploadGone:
            raise await self._gone(session) from None
        return persisted(parts, checkpoint.part_size)

    async def presign_parts(
        self, session: Session, parts: Sequence[PartSpec], expires_in: int
    ) -> list[DirectPart]:
        checkpoint = await self._direct(session)
        for part in parts:  # every part first: one the layout refuses signs none
            check_part(checkpoint, part)
        return await presign_parts(
            self._connection, session.spec.ref, checkpoint.upload_id, list(parts), expires_in
        )

    async def complete_direct(
        self, session: Session, size: int, sums: ContentChecksums
    ) -> StoredObject:
        checkpoint = await self._direct(session)
        try:
            stored = await commit_direct(self._connection, session.spec, checkpoint, size, sums)
        except PartsMissing:
            raise  # the session stays: the caller PUTs the rest
        except UploadGone:
            raise await self._gone(session) from None
        except (InvalidArgument, FailedPrecondition):
            self._forget(session.bucket, session.session_id)
            # The parts can never make up the object declared, or it can
            # never be written: no object, and the session ends.
            await self._end(session.bucket, session.session_id, checkpoint)
            raise
        self._forget(session.bucket, session.session_id)
        try:
            await self._delete_checkpoint(session.bucket, session.session_id)
        except Exception:
            log.warning("could not delete a finished session's record", exc_info=True)
        return stored


__all__ = ["DirectSessionCalls"]
