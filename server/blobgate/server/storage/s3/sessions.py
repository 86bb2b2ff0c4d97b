"""Resumable upload sessions on S3.

A session is an S3 multipart upload plus a checkpoint object beside it, under
the reserved prefix ``.blobgate/uploads/`` of the same bucket. The checkpoint
holds what the multipart upload cannot: the session's spec (declared size,
expected checksums, preconditions), how many whole parts are stored, the
running SHA-256 and CRC32C of those parts, and how the multipart upload was
created (with S3's full-object CRC32C or not; the sha256 record's tag), so
that every instance sends its parts and commits it alike. Nothing lives in an
instance's memory, so any instance can continue a session, including after
the one that started it was killed.

Whole parts are persisted as S3 stores them; the checkpoint advances over the
parts stored without a gap, so the persisted size is a multiple of the part
size. Each checkpoint write is conditional on the version it replaces: a stale
stream can never move a session back. It carries its Content-MD5, so S3
refuses a record damaged on the way; one that S3 holds damaged anyway is a
DamagedSession, ended by Cancel or the janitor (``damaged_sessions``). The
checkpoint's key is a hash of the session id, so listing the bucket does not
reveal ids.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
from collections.abc import AsyncIterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from blobgate.server.core.errors import FailedPrecondition, InvalidArgument, NotFound, UploadGone
from blobgate.server.core.identity import current_principal
from blobgate.server.storage.byte_budget import ByteBudget
from blobgate.server.storage.checksums import Hasher, crc32c_to_s3, verify
from blobgate.server.storage.protocols import (
    PROXIED_ONLY,
    SESSION_GONE,
    Chunk,
    ContentChecksums,
    DamagedSession,
    ObjectRef,
    Session,
    SessionSpec,
    StoredObject,
)
from blobgate.server.storage.s3.checkpoint import (
    CHECKPOINT_PREFIX,
    Checkpoint,
    checkpoint_key,
    content_md5,
)
from blobgate.server.storage.s3.commit import (
    FULL_OBJECT,
    abort_multipart,
    complete_multipart,
    create_multipart,
)
from blobgate.server.storage.s3.connection import S3Connection, get_whole
from blobgate.server.storage.s3.damaged_sessions import damaged_session, end_damaged
from blobgate.server.storage.s3.direct_sessions import DirectSessionCalls
from blobgate.server.storage.s3.errors import s3_errors
from blobgate.server.storage.s3.janitor import sweep
from blobgate.server.storage.s3.metadata import quoted_etag
from blobgate.server.storage.s3.parts import PartUploader, cut_parts
from blobgate.server.storage.s3.preconditions import check_preconditions
from blobgate.server.storage.s3.session_progress import SessionProgress
from blobgate.server.storage.s3.sha256_records import new_tag
from blobgate.server.storage.s3.versions import delete_record, record_written

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

# When a session's stream fails, how long the parts already sent get to land.
SETTLE_SECONDS = 10.0


def _session(bucket: str, session_id: str, checkpoint: Checkpoint, revision: str) -> Session:
    return Session(
        bucket=bucket,
        session_id=session_id,
        spec=checkpoint.spec(bucket),
        persisted_size=checkpoint.persisted_size,
        part_size=checkpoint.part_size,
        revision=revision,
        direct=checkpoint.direct,
    )


class S3Sessions(DirectSessionCalls):
    """SessionStore on an S3Connection; upload buffers share ``budget``."""

    def __init__(self, connection: S3Connection, budget: ByteBudget) -> None:
        self._connection = connection
        config = connection.config
        self._budget = budget
        self._part_size = config.part_size
        self._in_flight = config.parts_in_flight
        self.expiry = timedelta(seconds=config.session_expiry)
        # What the janitor aborted, by kind, since start-up (storage.metrics).
        self.swept: collections.Counter[str] = collections.Counter()
        self._known_direct: collections.OrderedDict[tuple[str, str], tuple[Checkpoint, str]] = (
            collections.OrderedDict()
        )

    @property
    def _client(self) -> S3Client:
        return self._connection.client

    # --- the checkpoint ----------------------------------------------------

    async def _read_checkpoint(self, bucket: str, session_id: str) -> tuple[Checkpoint, str]:
        """The session's record and its revision; DamagedSession if it does not parse."""
        ref = ObjectRef(bucket, checkpoint_key(session_id))
        try:
            with s3_errors(ref):
                raw, etag = await get_whole(self._client, bucket, ref.key)
                try:
                    return Checkpoint.from_json(raw), etag
                except ValueError:
                    log.warning("a session record in %s does not parse: %s", bucket, ref.key)
                    raise await damaged_session(self._client, ref) from None
        except NotFound:
            raise NotFound(SESSION_GONE) from None

    async def _put_checkpoint(
        self, bucket: str, session_id: str, checkpoint: Checkpoint, **condition: str
    ) -> str:
        """Write a session's record under ``condition``; its new revision."""
        key = checkpoint_key(session_id)
        body = checkpoint.to_json()
        with s3_errors(ObjectRef(bucket, key)):
            response = await self._client.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                ContentMD5=content_md5(body),  # S3 refuses a body damaged on the way
                ContentType="application/json",
                Metadata=checkpoint.metadata_fields(),
                **condition,  # type: ignore[arg-type]
            )
        await record_written(self._client, bucket, key, response)
        return str(response["ETag"])

    async def write_checkpoint(
        self, session: Session, checkpoint: Checkpoint, revision: str
    ) -> str:
        """Replace the checkpoint if it is still at ``revision``; the new revision."""
        try:
            return await self._put_checkpoint(
                session.bucket, session.session_id, checkpoint, IfMatch=quoted_etag(revision)
            )
        except FailedPrecondition:
            raise FailedPrecondition(
                "another Upload continued this session meanwhile: "
                "query its status and resume from the persisted size"
            ) from None

    async def _delete_checkpoint(self, bucket: str, session_id: str) -> None:
        await delete_record(self._client, bucket, checkpoint_key(session_id))

    # --- SessionStore --------------------------------------------------------

    async def start_session(self, spec: SessionSpec) -> Session:
        ref, options = spec.ref, spec.options
        if options.if_none_match or options.if_match:
            await check_preconditions(self._client, ref, options)
        full_object = self._connection.full_object_checksums
        # A direct session needs S3's full-object CRC32C: S3 checks what it
        # assembled from parts the gateway never saw.
        direct = spec.direct and full_object
        record_tag = new_tag() if full_object and options.known.sha256 is None else ""
        upload_id = await create_multipart(
            self._client, ref, options, full_object=full_object, record_tag=record_tag
        )
        session_id = secrets.token_urlsafe(32)
        sha256_state, crc32c = Hasher(resumable=True).state()
        checkpoint = Checkpoint(
            key=ref.key,
            upload_id=upload_id,
            part_size=self._part_size,
            content_type=options.content_type,
            metadata=dict(options.metadata),
            if_none_match=options.if_none_match,
            if_match=options.if_match,
            size=spec.size,
            expected_sha256=options.known.sha256.hex() if options.known.sha256 else "",
            expected_crc32c=options.known.crc32c,
            parts=0,
            sha256_state=sha256_state,
            crc32c=crc32c,
            owner=spec.owner,
            checksum_type=FULL_OBJECT if full_object else "",
            record_tag=record_tag,
            tags=dict(options.tags),
            storage_class=options.storage_class,
            expire_days=options.expire_days,
            direct=direct,
        )
        try:
            revision = await self._put_checkpoint(
                ref.bucket, session_id, checkpoint, IfNoneMatch="*"
            )
        except BaseException:
            await asyncio.shield(abort_multipart(self._client, ref, upload_id))
            raise
        if direct:
            self._remember(ref.bucket, session_id, checkpoint, revision)
        return _session(ref.bucket, session_id, checkpoint, revision)

    async def open_session(self, bucket: str, session_id: str) -> Session:
        known = self._recall(bucket, session_id)  # a direct session's record never changes
        if known is not None:
            return _session(bucket, session_id, *known)
        checkpoint, revision = await self._read_checkpoint(bucket, session_id)
        ref = ObjectRef(bucket, checkpoint.key)
        try:
            with s3_errors(ref):
                await self._client.list_parts(
                    Bucket=bucket, Key=checkpoint.key, UploadId=checkpoint.upload_id, MaxParts=1
                )
        except UploadGone:
            # Aborted behind the gateway's back (a lifecycle rule) or completed
            # by a call whose reply was lost: either way the session is over.
            await self._delete_checkpoint(bucket, session_id)
            raise NotFound("no such upload session: S3 no longer holds its parts") from None
        if checkpoint.direct:
            self._remember(bucket, session_id, checkpoint, revision)
        return _session(bucket, session_id, checkpoint, revision)

    async def cancel_session(self, bucket: str, session_id: str) -> None:
        self._forget(bucket, session_id)
        try:
            checkpoint, _ = await self._read_checkpoint(bucket, session_id)
        except DamagedSession as exc:
            record = ObjectRef(bucket, checkpoint_key(session_id))
            await end_damaged(self._client, record, exc.upload_id)
            return
        await self._end(bucket, session_id, checkpoint)

    async def _end(self, bucket: str, session_id: str, checkpoint: Checkpoint) -> None:
        """Abort the multipart upload, then drop the checkpoint."""
        ref = ObjectRef(bucket, checkpoint.key)
        try:
            with s3_errors(ref):
                await self._client.abort_multipart_upload(
                    Bucket=bucket, Key=checkpoint.key, UploadId=checkpoint.upload_id
                )
        except (UploadGone, NotFound):
            pass  # already gone
        await self._delete_checkpoint(bucket, session_id)

    async def resume_session(self, session: Session, body: AsyncIterable[Chunk]) -> StoredObject:
        start, _ = await self._read_checkpoint(session.bucket, session.session_id)
        if start.direct:
            raise FailedPrecondition(PROXIED_ONLY)
        if start.persisted_size != session.persisted_size:
            raise FailedPrecondition(
                "another Upload continued this session meanwhile: "
                "query its status and resume from the persisted size"
            )
        progress = SessionProgress(self, session, start)
        uploader = PartUploader(
            self._connection.transfers,
            session.spec.ref,
            start.upload_id,
            self._in_flight,
            first_part=start.parts + 1,
            on_uploaded=progress.stored,
            shares=self._connection.shares,
        )
        hasher = Hasher(start.sha256_state, start.crc32c, resumable=True)
        full_object = start.checksum_type == FULL_OBJECT  # as the upload was created
        cut = cut_parts(body, start.part_size, self._budget, current_principal())
        try:
            async for part, reserved in cut:
                if not part.tell():
                    reserved.release()
                    continue
                crc = hasher.update_part(part.views)
                if part.tell() == start.part_size:
                    progress.cut(start.parts + uploader.submitted + 1, hasher.state())
                await uploader.submit(part, reserved, crc if full_object else None)
            stored = await uploader.finish()
        except BaseException:
            # The session stays: parts already sent may still land and count.
            await progress.abandon()
            await uploader.settle(SETTLE_SECONDS)
            raise
        sums = hasher.checksums()
        await progress.claim()  # a stale stream fails here and leaves the session as it is
        try:
            verify(session.spec.options.known, sums)
            size = start.persisted_size + uploader.size
            return await self._commit(session, start, stored, size, sums)
        except (InvalidArgument, FailedPrecondition):
            # The whole object is wrong, or can never be written: no resume helps.
            await self._end(session.bucket, session.session_id, progress.checkpoint)
            raise

    async def _commit(
        self,
        session: Session,
        start: Checkpoint,
        stored: list[dict[str, Any]],
        size: int,
        sums: ContentChecksums,
    ) -> StoredObject:
        """Complete the multipart upload from the parts the session held when
        this stream started and the ones it stored, then drop the checkpoint."""
        ref, options = session.spec.ref, session.spec.options
        parts = await self._earlier_parts(ref, start) + stored
        if not parts:  # an empty object: S3 wants at least one part
            parts = [await self._empty_part(ref, start)]
        committed = await complete_multipart(
            self._connection.transfers,
            ref,
            start.upload_id,
            parts,
            options,
            sums,
            size,
            full_object=start.checksum_type == FULL_OBJECT,
            record_tag=start.record_tag,
            control=self._client,
            deletes=self._connection.conditional_deletes,
        )
        try:
            await self._delete_checkpoint(session.bucket, session.session_id)
        except Exception:
            log.warning("could not delete a finished session's record", exc_info=True)
        return committed

    async def _earlier_parts(self, ref: ObjectRef, checkpoint: Checkpoint) -> list[dict[str, Any]]:
        """The parts a checkpoint counts, as S3 lists them (with their sizes)."""
        parts: list[dict[str, Any]] = []
        sizes: list[int] = []
        marker = 0
        while len(parts) < checkpoint.parts:
            with s3_errors(ref):
                response = await self._client.list_parts(
                    Bucket=ref.bucket,
                    Key=ref.key,
                    UploadId=checkpoint.upload_id,
                    PartNumberMarker=marker,
                )
            listed = response.get("Parts", [])
            for part in listed:
                number = int(part["PartNumber"])
                if number <= checkpoint.parts:
                    entry = {"PartNumber": number, "ETag": part["ETag"]}
                    if part.get("ChecksumCRC32C"):  # S3 lists it for checksummed uploads
                        entry["ChecksumCRC32C"] = part["ChecksumCRC32C"]
                    parts.append(entry)
                    sizes.append(int(part["Size"]))
            if not response.get("IsTruncated") or not listed:
                break
            marker = int(response.get("NextPartNumberMarker", listed[-1]["PartNumber"]))
        numbers = [int(p["PartNumber"]) for p in parts]
        if numbers != list(range(1, checkpoint.parts + 1)) or any(
            size != checkpoint.part_size for size in sizes
        ):
            raise UploadGone(f"S3 no longer holds every stored part of {ref.key!r}")
        return parts

    async def _empty_part(self, ref: ObjectRef, checkpoint: Checkpoint) -> dict[str, Any]:
        checksum: dict[str, Any] = {}
        if checkpoint.checksum_type == FULL_OBJECT:
            checksum["ChecksumCRC32C"] = crc32c_to_s3(0)  # of no bytes
        with s3_errors(ref):
            response = await self._connection.transfers.upload_part(
                Bucket=ref.bucket,
                Key=ref.key,
                UploadId=checkpoint.upload_id,
                PartNumber=1,
                Body=b"",
                **checksum,
            )
        return {"PartNumber": 1, "ETag": response["ETag"], **checksum}

    # --- the janitor -----------------------------------------------------------

    async def sweep(self, buckets: list[str]) -> int:
        return await sweep(self._connection, buckets, self.expiry, self.swept)


__all__ = ["CHECKPOINT_PREFIX", "S3Sessions"]
