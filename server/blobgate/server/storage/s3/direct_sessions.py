"""The SessionStore calls of a direct session on S3 (``presign_part``,
``complete_direct``), as a base of ``S3Sessions``: they read the session's
record, check that it is direct, and hand over to ``direct_upload``. A
commit that can never succeed ends the session, as a proxied one's does;
parts still missing leave it open."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from blobgate.server.core.errors import FailedPrecondition, InvalidArgument
from blobgate.server.storage.protocols import (
    NOT_DIRECT,
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
    presign_part,
)

if TYPE_CHECKING:
    from blobgate.server.storage.s3.checkpoint import Checkpoint
    from blobgate.server.storage.s3.connection import S3Connection

log = logging.getLogger(__name__)


class DirectSessionCalls:
    """What ``S3Sessions`` provides (its connection, its record calls) and
    the two direct session calls made of them."""

    _connection: S3Connection

    async def _read_checkpoint(self, bucket: str, session_id: str) -> tuple[Checkpoint, str]:
        raise NotImplementedError

    async def _delete_checkpoint(self, bucket: str, session_id: str) -> None:
        raise NotImplementedError

    async def _end(self, bucket: str, session_id: str, checkpoint: Checkpoint) -> None:
        raise NotImplementedError

    async def _direct(self, session: Session) -> Checkpoint:
        checkpoint, _ = await self._read_checkpoint(session.bucket, session.session_id)
        if not checkpoint.direct:
            raise FailedPrecondition(NOT_DIRECT)
        return checkpoint

    async def presign_part(self, session: Session, part: PartSpec, expires_in: int) -> DirectPart:
        checkpoint = await self._direct(session)
        check_part(checkpoint, part)
        return await presign_part(
            self._connection, session.spec.ref, checkpoint.upload_id, part, expires_in
        )

    async def complete_direct(
        self, session: Session, size: int, sums: ContentChecksums
    ) -> StoredObject:
        checkpoint = await self._direct(session)
        try:
            stored = await commit_direct(self._connection, session.spec, checkpoint, size, sums)
        except PartsMissing:
            raise  # the session stays: the caller PUTs the rest
        except (InvalidArgument, FailedPrecondition):
            # The parts can never make up the object declared, or it can
            # never be written: no object, and the session ends.
            await self._end(session.bucket, session.session_id, checkpoint)
            raise
        try:
            await self._delete_checkpoint(session.bucket, session.session_id)
        except Exception:
            log.warning("could not delete a finished session's record", exc_info=True)
        return stored


__all__ = ["DirectSessionCalls"]
