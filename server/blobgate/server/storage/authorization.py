"""Rights on the stores: each call is checked against the access policy
(``core.access_policy``) for the current principal before it reaches the
store, and resumable sessions are bound to the principal that started them.

Denials are PermissionDenied saying what was refused ("caller X may not
write this key"), never which buckets or grants exist. A session of another
principal is NotFound with the message of a session that does not exist.

Under a policy file, a bucket the gateway does not serve reaches this layer
(``rpc.validation.BucketPolicy`` lets it through) and is refused here as a
bucket where the caller has no grant: the same status and words, per key in
a BatchDelete, NotFound for a session in it, so that a caller cannot tell
served buckets from the others. Nothing under this layer (metrics, limits,
the store) ever sees such a bucket.

Which right each call needs:

    put, the session calls      write            on the key
    open, head, get_tags,       read             on the key (a direct read
    direct_read                                  is a read: no presign right)
    set_tags                    write            on the key
    list_page, list_versions    list             on the prefix
    delete, batch_delete        delete           on each key (a BatchDelete
                                                 answers per key: refused keys
                                                 get PERMISSION_DENIED, the
                                                 rest are deleted); purge, not
                                                 delete, for a version id
    copy                        read on the source, write on the destination
    presign                     presign, and read (GET) or write (PUT), with
                                expires_in at most the grant's maximum
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, Mapping, Sequence
from dataclasses import replace

from blobgate.server.core.access_policy import AccessPolicy, Action
from blobgate.server.core.errors import NotFound, PermissionDenied, ServiceError
from blobgate.server.core.identity import current_principal
from blobgate.server.storage.decorators import ObjectStoreDecorator, SessionStoreDecorator
from blobgate.server.storage.protocols import (
    SESSION_GONE,
    ByteRange,
    Chunk,
    ContentChecksums,
    CopySpec,
    DamagedSession,
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


def _caller(principal: str | None) -> str:
    return "this caller" if principal is None else f"caller {principal!r}"


def _refusal(principal: str | None, action: Action, what: str) -> PermissionDenied:
    return PermissionDenied(f"{_caller(principal)} may not {action.value} {what}")


class _Rights:
    """The policy, narrowed to the buckets the gateway serves."""

    def __init__(self, policy: AccessPolicy, served: frozenset[str] | None) -> None:
        self.policy = policy
        self.served = served

    def serves(self, bucket: str) -> bool:
        return self.served is None or bucket in self.served

    def allows(self, principal: str | None, action: Action, bucket: str, key: str) -> bool:
        return self.serves(bucket) and self.policy.allows(principal, action, bucket, key)

    def presign_limit(self, principal: str | None, bucket: str, key: str) -> int | None:
        if not self.serves(bucket):
            return None
        return self.policy.presign_limit(principal, bucket, key)


def _check(policy: _Rights, action: Action, bucket: str, key: str, what: str) -> None:
    """PermissionDenied unless the current principal may do ``action``."""
    principal = current_principal()
    if not policy.allows(principal, action, bucket, key):
        raise _refusal(principal, action, what)


class AuthorizedStore(ObjectStoreDecorator):
    """An ObjectStore that refuses what the policy does not grant, and any
    bucket outside ``served`` (None: the caller checks buckets itself)."""

    def __init__(
        self, inner: ObjectStore, policy: AccessPolicy, served: frozenset[str] | None = None
    ) -> None:
        super().__init__(inner)
        self._policy = _Rights(policy, served)

    def _key(self, action: Action, ref: ObjectRef) -> None:
        _check(self._policy, action, ref.bucket, ref.key, "this key")

    async def put(
        self, ref: ObjectRef, body: AsyncIterable[Chunk], options: PutOptions
    ) -> StoredObject:
        self._key(Action.WRITE, ref)
        return await self._inner.put(ref, body, options)

    async def open(self, ref: ObjectRef, byte_range: ByteRange, if_match: str) -> ObjectReader:
        self._key(Action.READ, ref)
        return await self._inner.open(ref, byte_range, if_match)

    async def head(self, ref: ObjectRef) -> StoredObject:
        self._key(Action.READ, ref)
        return await self._inner.head(ref)

    async def direct_read(
        self, ref: ObjectRef, byte_range: ByteRange, if_match: str, expires_in: int
    ) -> DirectRead | None:
        self._key(Action.READ, ref)
        return await self._inner.direct_read(ref, byte_range, if_match, expires_in)

    async def get_tags(self, ref: ObjectRef) -> dict[str, str]:
        self._key(Action.READ, ref)
        return await self._inner.get_tags(ref)

    async def set_tags(
        self, ref: ObjectRef, tags: Mapping[str, str], if_match: str
    ) -> StoredObject:
        self._key(Action.WRITE, ref)
        return await self._inner.set_tags(ref, tags, if_match)

    async def list_page(
        self, bucket: str, prefix: str, delimiter: str, page_size: int, token: str
    ) -> ListPage:
        _check(self._policy, Action.LIST, bucket, prefix, "under this prefix")
        return await self._inner.list_page(bucket, prefix, delimiter, page_size, token)

    async def list_versions(
        self, bucket: str, prefix: str, delimiter: str, page_size: int, token: str
    ) -> ListPage:
        _check(self._policy, Action.LIST, bucket, prefix, "under this prefix")
        return await self._inner.list_versions(bucket, prefix, delimiter, page_size, token)

    async def delete(self, ref: ObjectRef, if_match: str) -> DeleteResult:
        # Removing a version is for good: its own right, never implied by delete.
        self._key(Action.PURGE if ref.version_id else Action.DELETE, ref)
        return await self._inner.delete(ref, if_match)

    async def copy(self, spec: CopySpec) -> StoredObject:
        principal = current_principal()
        if not self._policy.allows(principal, Action.READ, spec.source.bucket, spec.source.key):
            raise _refusal(principal, Action.READ, "the source key")
        if not self._policy.allows(
            principal, Action.WRITE, spec.destination.bucket, spec.destination.key
        ):
            raise _refusal(principal, Action.WRITE, "the destination key")
        return await self._inner.copy(spec)

    async def batch_delete(
        self, bucket: str, entries: Sequence[DeleteEntry]
    ) -> list[ServiceError | None]:
        """Refused keys get PermissionDenied in their result; the others go
        to the store in one request."""
        principal = current_principal()
        results: list[ServiceError | None] = []
        allowed: list[DeleteEntry] = []
        for entry in entries:
            action = Action.PURGE if entry.version_id else Action.DELETE
            if self._policy.allows(principal, action, bucket, entry.key):
                allowed.append(entry)
                results.append(None)  # replaced by the store's result below
            else:
                results.append(_refusal(principal, action, "this key"))
        if not allowed:
            return results
        done = iter(await self._inner.batch_delete(bucket, allowed))
        return [next(done) if result is None else result for result in results]

    async def presign(
        self, ref: ObjectRef, method: PresignMethod, expires_in: int, content_type: str
    ) -> PresignedRequest:
        principal = current_principal()
        self._key(Action.READ if method is PresignMethod.GET else Action.WRITE, ref)
        limit = self._policy.presign_limit(principal, ref.bucket, ref.key)
        if limit is None:
            raise _refusal(principal, Action.PRESIGN, "this key")
        if expires_in > limit:
            raise PermissionDenied(
                f"{_caller(principal)} may presign this key for at most {limit}s, "
                f"not {expires_in}s: ask for expires_in of {limit}s or less"
            )
        return await self._inner.presign(ref, method, expires_in, content_type)


class AuthorizedSessions(SessionStoreDecorator):
    """A SessionStore whose sessions belong to the principal that started
    them: to any other caller they do not exist. Every session call needs
    the write right on the session's key. A session in a bucket outside
    ``served`` does not exist either, and is not looked for."""

    def __init__(
        self, inner: SessionStore, policy: AccessPolicy, served: frozenset[str] | None = None
    ) -> None:
        super().__init__(inner)
        self._policy = _Rights(policy, served)

    def _owned(self, session: Session) -> Session:
        """``session`` if the current principal started it and may still write it."""
        if session.spec.owner != current_principal():
            raise NotFound(SESSION_GONE)
        ref = session.spec.ref
        _check(self._policy, Action.WRITE, ref.bucket, ref.key, "this key")
        return session

    async def start_session(self, spec: SessionSpec) -> Session:
        _check(self._policy, Action.WRITE, spec.ref.bucket, spec.ref.key, "this key")
        return await self._inner.start_session(replace(spec, owner=current_principal()))

    async def open_session(self, bucket: str, session_id: str) -> Session:
        if not self._policy.serves(bucket):
            raise NotFound(SESSION_GONE)
        try:
            session = await self._inner.open_session(bucket, session_id)
        except DamagedSession as exc:
            # Its key is unknown, so no right can be checked: only its owner
            # learns that it is damaged, and may cancel it.
            if not exc.belongs_to(current_principal()):
                raise NotFound(SESSION_GONE) from None
            raise
        return self._owned(session)

    async def resume_session(self, session: Session, body: AsyncIterable[Chunk]) -> StoredObject:
        return await self._inner.resume_session(self._owned(session), body)

    async def progress(self, session: Session) -> int:
        return await self._inner.progress(self._owned(session))

    async def presign_parts(
        self, session: Session, parts: Sequence[PartSpec], expires_in: int
    ) -> list[DirectPart]:
        return await self._inner.presign_parts(self._owned(session), parts, expires_in)

    async def complete_direct(
        self, session: Session, size: int, sums: ContentChecksums
    ) -> StoredObject:
        return await self._inner.complete_direct(self._owned(session), size, sums)

    async def cancel_session(self, bucket: str, session_id: str) -> None:
        with contextlib.suppress(DamagedSession):  # its owner's: it may end it
            await self.open_session(bucket, session_id)
        await self._inner.cancel_session(bucket, session_id)


__all__ = ["AuthorizedSessions", "AuthorizedStore"]
