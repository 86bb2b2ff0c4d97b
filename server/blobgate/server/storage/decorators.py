"""Bases for store decorators: each forwards every protocol method to the
store (or reader) it wraps, so a decorator (limits, quotas, metrics,
authorization) overrides only the methods its concern touches, and a method
added to a protocol is forwarded by every decorator at once."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence

from blobgate.server.core.errors import ServiceError
from blobgate.server.storage.protocols import (
    ByteRange,
    Chunk,
    ContentChecksums,
    CopySpec,
    DeleteEntry,
    DeleteResult,
    DirectPart,
    DirectRead,
    ListPage,
    ObjectReader,
    ObjectRef,
    ObjectStore,
    PartSpec,
    PresignedRequest,
    PresignMethod,
    PutOptions,
    Session,
    SessionSpec,
    SessionStore,
    StoredObject,
)


class ObjectReaderDecorator:
    """An ObjectReader that forwards to ``inner``."""

    def __init__(self, inner: ObjectReader) -> None:
        self._inner = inner
        self.info = inner.info

    def chunks(self, size: int) -> AsyncIterator[list[bytes]]:
        return self._inner.chunks(size)

    async def close(self) -> None:
        await self._inner.close()


class ObjectStoreDecorator:
    """An ObjectStore that forwards every call to ``inner``."""

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner

    async def put(
        self, ref: ObjectRef, body: AsyncIterable[Chunk], options: PutOptions
    ) -> StoredObject:
        return await self._inner.put(ref, body, options)

    async def open(self, ref: ObjectRef, byte_range: ByteRange, if_match: str) -> ObjectReader:
        return await self._inner.open(ref, byte_range, if_match)

    async def head(self, ref: ObjectRef) -> StoredObject:
        return await self._inner.head(ref)

    async def list_page(
        self, bucket: str, prefix: str, delimiter: str, page_size: int, token: str
    ) -> ListPage:
        return await self._inner.list_page(bucket, prefix, delimiter, page_size, token)

    async def list_versions(
        self, bucket: str, prefix: str, delimiter: str, page_size: int, token: str
    ) -> ListPage:
        return await self._inner.list_versions(bucket, prefix, delimiter, page_size, token)

    async def delete(self, ref: ObjectRef, if_match: str) -> DeleteResult:
        return await self._inner.delete(ref, if_match)

    async def copy(self, spec: CopySpec) -> StoredObject:
        return await self._inner.copy(spec)

    async def batch_delete(
        self, bucket: str, entries: Sequence[DeleteEntry]
    ) -> list[ServiceError | None]:
        return await self._inner.batch_delete(bucket, entries)

    async def presign(
        self, ref: ObjectRef, method: PresignMethod, expires_in: int, content_type: str
    ) -> PresignedRequest:
        return await self._inner.presign(ref, method, expires_in, content_type)

    async def direct_read(
        self, ref: ObjectRef, byte_range: ByteRange, if_match: str, expires_in: int
    ) -> DirectRead | None:
        return await self._inner.direct_read(ref, byte_range, if_match, expires_in)

    async def get_tags(self, ref: ObjectRef) -> dict[str, str]:
        return await self._inner.get_tags(ref)

    async def set_tags(
        self, ref: ObjectRef, tags: Mapping[str, str], if_match: str
    ) -> StoredObject:
        return await self._inner.set_tags(ref, tags, if_match)

    async def check(self) -> None:
        await self._inner.check()


class SessionStoreDecorator:
    """A SessionStore that forwards every call to ``inner``."""

    def __init__(self, inner: SessionStore) -> None:
        self._inner = inner

    async def start_session(self, spec: SessionSpec) -> Session:
        return await self._inner.start_session(spec)

    async def open_session(self, bucket: str, session_id: str) -> Session:
        return await self._inner.open_session(bucket, session_id)

    async def resume_session(self, session: Session, body: AsyncIterable[Chunk]) -> StoredObject:
        return await self._inner.resume_session(session, body)

    async def cancel_session(self, bucket: str, session_id: str) -> None:
        await self._inner.cancel_session(bucket, session_id)

    async def progress(self, session: Session) -> int:
        return await self._inner.progress(session)

    async def presign_parts(
        self, session: Session, parts: Sequence[PartSpec], expires_in: int
    ) -> list[DirectPart]:
        return await self._inner.presign_parts(session, parts, expires_in)

    async def complete_direct(
        self, session: Session, size: int, sums: ContentChecksums
    ) -> StoredObject:
        return await self._inner.complete_direct(session, size, sums)

    async def sweep(self, buckets: list[str]) -> int:
        return await self._inner.sweep(buckets)
