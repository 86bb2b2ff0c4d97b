"""Direct uploads: PresignUploadPart, PresignUploadParts and
CompleteDirectUpload on a direct session (StartResumableUploadRequest.direct,
on a server with ``direct_transfers`` on).

Every call opens the session first, through the store decorators: the
authorization layer makes another principal's session NotFound and checks
the write right on its key again, the quota layer frees the session's slot
when the commit ends it, the metrics count it. The object size limit
applies to every part's end and to the commit. The call's record names the
session's bucket and key and says it was direct, with the bytes and, for a
part, the URL's expiry, for the access and audit logs; the URL and the
upload id are never recorded or logged."""

from __future__ import annotations

from collections.abc import Callable

from blobgate.server.core.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from blobgate.server.rpc import upload_id as upload_id_codec
from blobgate.server.rpc.access_log import CallRecord
from blobgate.server.rpc.codecs import object_message
from blobgate.server.storage.protocols import ContentChecksums, PartSpec, Session, SessionStore
from blobgate.v1 import storage_pb2

pb = storage_pb2
OFF = "this server does not offer direct transfers: send the data with Upload"
MAX_PARTS_PER_CALL = 1000  # PresignUploadParts


class DirectUploads:
    """Answers the direct session calls over ``sessions``; part URLs are
    valid for ``lifetime`` seconds; ``enabled``: the direct_transfers
    setting (off: every call is FAILED_PRECONDITION)."""

    def __init__(
        self,
        sessions: SessionStore,
        resolve: Callable[[str], str],
        max_size: int,
        lifetime: int,
        *,
        enabled: bool,
    ) -> None:
        self._sessions = sessions
        self._resolve = resolve
        self._max_size = max_size
        self._lifetime = lifetime
        self._enabled = enabled

    async def _open(self, upload_id: str, record: CallRecord) -> Session:
        if not self._enabled:
            raise FailedPrecondition(OFF)
        bucket, session_id = upload_id_codec.decode(upload_id)
        session = await self._sessions.open_session(self._resolve(bucket), session_id)
        record.bucket, record.key = session.spec.ref.bucket, session.spec.ref.key
        record.direct = True
        return session

    def _check_end(self, session: Session, part: PartSpec) -> None:
        """ResourceExhausted when ``part`` ends past the object size limit."""
        if part.number >= 1 and part.size >= 0:
            end = (part.number - 1) * session.part_size + part.size
            if end > self._max_size:
                raise ResourceExhausted(
                    f"part {part.number} ends at byte {end}, over the server's limit "
                    f"of {self._max_size} bytes"
                )

    async def presign(
        self, request: storage_pb2.PresignUploadPartRequest, record: CallRecord
    ) -> storage_pb2.PresignUploadPartResponse:
        session = await self._open(request.upload_id, record)
        part = PartSpec(number=request.part_number, size=request.size, crc32c=request.crc32c)
        self._check_end(session, part)
        (signed,) = await self._sessions.presign_parts(session, [part], self._lifetime)
        record.direct_bytes = part.size
        record.direct_parts = 1
        record.direct_expires_at = signed.expires_at.isoformat(timespec="seconds")
        response = pb.PresignUploadPartResponse(
            url=signed.request.url, headers=signed.request.headers
        )
        response.expires_at.FromDatetime(signed.expires_at)
        return response

    async def presign_many(
        self, request: storage_pb2.PresignUploadPartsRequest, record: CallRecord
    ) -> storage_pb2.PresignUploadPartsResponse:
        count = len(request.parts)
        if not 1 <= count <= MAX_PARTS_PER_CALL:
            raise InvalidArgument(
                f"a PresignUploadParts call signs 1 to {MAX_PARTS_PER_CALL} parts, got {count}: "
                "split the parts over several calls"
            )
        session = await self._open(request.upload_id, record)
        parts = [
            PartSpec(number=p.part_number, size=p.size, crc32c=p.crc32c) for p in request.parts
        ]
        for part in parts:
            self._check_end(session, part)
        signed = await self._sessions.presign_parts(session, parts, self._lifetime)
        record.direct_bytes = sum(part.size for part in parts)
        record.direct_parts = count
        record.direct_expires_at = min(s.expires_at for s in signed).isoformat(timespec="seconds")
        response = pb.PresignUploadPartsResponse()
        for part, one in zip(parts, signed, strict=True):
            entry = response.parts.add(
                part_number=part.number, url=one.request.url, headers=one.request.headers
            )
            entry.expires_at.FromDatetime(one.expires_at)
        return response

    async def complete(
        self, request: storage_pb2.CompleteDirectUploadRequest, record: CallRecord
    ) -> storage_pb2.CompleteDirectUploadResponse:
        session = await self._open(request.upload_id, record)
        if request.size < 0:
            raise InvalidArgument(f"size {request.size} is negative")
        if request.size > self._max_size:
            raise ResourceExhausted(
                f"size {request.size} is over the server's limit of {self._max_size} bytes"
            )
        if request.sha256 and len(request.sha256) != 32:
            raise InvalidArgument(f"sha256 must be 32 bytes, got {len(request.sha256)}")
        sums = ContentChecksums(sha256=request.sha256 or None, crc32c=request.crc32c)
        info = await self._sessions.complete_direct(session, request.size, sums)
        record.direct_bytes = info.size
        record.version_id = info.version_id
        return pb.CompleteDirectUploadResponse(object=object_message(info))


__all__ = ["MAX_PARTS_PER_CALL", "DirectUploads"]
