"""The storage protocols: what the service needs from an object store
(``ObjectStore``) and from resumable upload sessions (``SessionStore``), and
what the factory needs from a backend (``Backend``): its two stores, the
gateway's own records (``storage.records.Records``), instrumentation and a
lifecycle. The
values the object store takes and returns are in ``storage.object_values``,
re-exported here.

The RPC layer talks only to these; implementations are ``storage.s3`` and
``storage.memory``, and decorators (``storage.limits``) wrap them. Failures
are raised as ``blobgate.server.core.errors`` types.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from blobgate.server.core.errors import DataLoss, ServiceError
from blobgate.server.core.lifecycle import PrefixRule
from blobgate.server.core.reserved_keys import RESERVED_PREFIX as RESERVED_PREFIX

# The object store's values, re-exported: the code imports them from here.
from blobgate.server.storage.object_values import NULL_VERSION as NULL_VERSION
from blobgate.server.storage.object_values import ByteRange as ByteRange
from blobgate.server.storage.object_values import ContentChecksums as ContentChecksums
from blobgate.server.storage.object_values import CopySpec as CopySpec
from blobgate.server.storage.object_values import DeleteEntry as DeleteEntry
from blobgate.server.storage.object_values import DeleteResult as DeleteResult
from blobgate.server.storage.object_values import DirectRead as DirectRead
from blobgate.server.storage.object_values import ListPage as ListPage
from blobgate.server.storage.object_values import ObjectRef as ObjectRef
from blobgate.server.storage.object_values import PresignedRequest as PresignedRequest
from blobgate.server.storage.object_values import PresignMethod as PresignMethod
from blobgate.server.storage.object_values import PutOptions as PutOptions
from blobgate.server.storage.object_values import StoredObject as StoredObject
from blobgate.server.storage.records import Records

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# User-metadata keys under which stores keep an object's checksums; callers
# may not set them.
SHA256_KEY = "sha256"
CRC32C_KEY = "crc32c"
# Marks an object whose sha256 is in a record beside it (storage.s3.sha256_records).
SHA256_RECORD_KEY = "sha256-record"
RESERVED_METADATA = frozenset({SHA256_KEY, CRC32C_KEY, SHA256_RECORD_KEY})
# What every SessionStore says of a session that does not exist (any more),
# and what the authorization decorator says of another principal's session.
SESSION_GONE = (
    "no such upload session: it finished, was cancelled or expired (or the upload_id is wrong)"
)
# What a SessionStore says of a direct call on a proxied session, and of an
# Upload continuing a direct one.
NOT_DIRECT = "this is a proxied session: send its data with Upload (UploadResume)"
PROXIED_ONLY = (
    "this is a direct session: PUT its parts through PresignUploadPart's URLs and commit it "
    "with CompleteDirectUpload (or cancel it and start a proxied one)"
)
# What a SessionStore says of a session whose record no longer parses.
SESSION_DAMAGED = (
    "the upload session's record in S3 is damaged (it does not parse), so the session "
    "cannot continue: cancel it (CancelResumableUpload) and upload again"
)

# What a backend's ``sweep_tally`` counts its sweeps' aborts by
# (``storage.metrics`` reads them; a backend may count other kinds too).
EXPIRED_SESSION = "expired_session"
ORPHANED_UPLOAD = "orphaned_upload"

Chunk = bytes | memoryview
"""A piece of an object's body as the stores take it: Upload's data messages
arrive as views of the received bytes (see ``rpc.codecs``)."""


class ObjectReader(Protocol):
    """An open ranged read: the object's description, then its bytes."""

    info: StoredObject

    def chunks(self, size: int) -> AsyncIterator[list[bytes]]:
        """Yield the selected bytes in chunks of at most ``size`` bytes, each
        as the pieces the backend delivered (joining them is left to the
        caller, which can do it while encoding: one copy instead of two)."""
        ...

    async def close(self) -> None:
        """Release the connection; safe to call more than once."""
        ...


class ObjectStore(Protocol):
    """Put, read, describe, list, delete and presign objects."""

    async def put(
        self, ref: ObjectRef, body: AsyncIterable[Chunk], options: PutOptions
    ) -> StoredObject:
        """Store ``body`` as one object, atomically: visible only once ``body``
        ended without error and its checksums match ``options.known``
        (InvalidArgument otherwise), and nothing left behind otherwise. The
        store computes the SHA-256 and CRC32C it keeps with the object."""
        ...

    async def open(self, ref: ObjectRef, byte_range: ByteRange, if_match: str) -> ObjectReader:
        """Open a ranged read of one object (``ref.version_id``: of that
        version; NotFound for a missing version or a delete marker)."""
        ...

    async def head(self, ref: ObjectRef) -> StoredObject:
        """Describe one object (or one version of it, as ``open``)."""
        ...

    async def list_page(
        self, bucket: str, prefix: str, delimiter: str, page_size: int, token: str
    ) -> ListPage:
        """One page of keys under ``prefix``; ``token`` continues a listing."""
        ...

    async def list_versions(
        self, bucket: str, prefix: str, delimiter: str, page_size: int, token: str
    ) -> ListPage:
        """One page of every version and delete marker under ``prefix``, in
        S3's order (key, then newest first), each with ``version_id``,
        ``is_latest`` and ``is_delete_marker``; ``token`` continues it."""
        ...

    async def delete(self, ref: ObjectRef, if_match: str) -> DeleteResult:
        """Remove one object; a missing key is not an error without if_match.
        On a versioned bucket that leaves a delete marker; with
        ``ref.version_id`` it removes that version (or marker) for good."""
        ...

    async def copy(self, spec: CopySpec) -> StoredObject:
        """Copy one object inside the store (no bytes through the gateway)
        and describe the copy; NotFound for a missing source,
        FailedPrecondition when a condition does not hold."""
        ...

    async def batch_delete(
        self, bucket: str, entries: Sequence[DeleteEntry]
    ) -> list[ServiceError | None]:
        """Remove the entries' keys in one request where the store allows;
        one result per entry, in order: None when the key is gone, else the
        error that refused it. An error of the whole request is raised."""
        ...

    async def presign(
        self, ref: ObjectRef, method: PresignMethod, expires_in: int, content_type: str
    ) -> PresignedRequest:
        """A URL for a plain HTTP client, valid for ``expires_in`` seconds."""
        ...

    async def direct_read(
        self, ref: ObjectRef, byte_range: ByteRange, if_match: str, expires_in: int
    ) -> DirectRead | None:
        """Describe one object and presign a GET of the selected bytes, valid
        for ``expires_in`` seconds, checking ``if_match`` first (as ``open``
        does); None when the caller should be sent the bytes instead (a
        store no HTTP client can reach, or a read that selects no bytes)."""
        ...

    async def get_tags(self, ref: ObjectRef) -> dict[str, str]:
        """The object's tags, the expiry tag included; NotFound if missing."""
        ...

    async def set_tags(
        self, ref: ObjectRef, tags: Mapping[str, str], if_match: str
    ) -> StoredObject:
        """Replace the object's tags by ``tags`` (checked), keeping its expiry
        tag, and describe it with its tags; FailedPrecondition unless it has
        the ETag ``if_match`` (when given)."""
        ...

    async def check(self) -> None:
        """Raise Unavailable unless the store answers (a cheap probe)."""
        ...


@dataclass(frozen=True)
class SessionSpec:
    """What a resumable upload session will commit, and the checks that apply
    to the whole object."""

    ref: ObjectRef
    options: PutOptions
    size: int | None = None
    # The principal that started the session (None: no identity source);
    # only it may see, resume or cancel the session (storage.authorization).
    owner: str | None = None
    # Asked for a direct session (parts PUT straight to the store through
    # presigned URLs); a store that cannot offer one opens a proxied session.
    direct: bool = False


@dataclass(frozen=True)
class Session:
    """An open session as read from the store: enough to check where an
    Upload may resume before any data is read."""

    bucket: str
    session_id: str
    spec: SessionSpec
    persisted_size: int
    part_size: int
    revision: str  # the store's version of the session record
    # A direct session: its data goes through presign_parts and
    # complete_direct, never through resume_session.
    direct: bool = False


@dataclass(frozen=True)
class DirectPart:
    """A presigned PUT of one part of a direct session, valid until
    ``expires_at``, whose signed headers pin the part's size and CRC32C."""

    request: PresignedRequest
    expires_at: datetime


@dataclass(frozen=True)
class PartSpec:
    """One part a direct session's caller means to PUT (1-based number)."""

    number: int
    size: int
    crc32c: int


def owner_tag(owner: str | None) -> str:
    """What a session's store keeps of its owner outside the session's record
    (``DamagedSession``): a SHA-256 of the principal, "" for none."""
    return "" if owner is None else hashlib.sha256(owner.encode()).hexdigest()


class DamagedSession(DataLoss):
    """A session whose record no longer parses: it can neither be resumed nor
    described, only cancelled. What is known of it was kept beside the
    record: its multipart upload's id ("" if unknown) and ``owner_tag`` of
    the principal that started it."""

    def __init__(self, upload_id: str = "", owner: str = "") -> None:
        super().__init__(SESSION_DAMAGED)
        self.upload_id = upload_id
        self.owner = owner

    def belongs_to(self, principal: str | None) -> bool:
        """Whether ``principal`` started the session (a record kept without
        its owner belongs only to callers without an identity)."""
        return self.owner == owner_tag(principal)


class SessionStore(Protocol):
    """Resumable upload sessions whose state lives in the store, so any
    instance can continue a session another one started."""

    async def start_session(self, spec: SessionSpec) -> Session:
        """Open a session; its ``session_id`` is a secret of the caller."""
        ...

    async def open_session(self, bucket: str, session_id: str) -> Session:
        """Read a live session; NotFound once it finished, was cancelled or
        expired; DamagedSession if its record no longer parses."""
        ...

    async def resume_session(self, session: Session, body: AsyncIterable[Chunk]) -> StoredObject:
        """Append ``body`` at the persisted size and commit the object when it
        ends. Whole parts persist as they are stored; if ``body`` fails the
        session stays open at its last whole part."""
        ...

    async def cancel_session(self, bucket: str, session_id: str) -> None:
        """End a session and delete what it persisted, a damaged one too."""
        ...

    async def progress(self, session: Session) -> int:
        """The bytes of ``session`` persisted now (QueryUploadStatus): its
        ``persisted_size``, read again from the store for a direct session
        (the parts the store holds); NotFound once the session is over."""
        ...

    async def presign_parts(
        self, session: Session, parts: Sequence[PartSpec], expires_in: int
    ) -> list[DirectPart]:
        """A URL for the caller to PUT each of ``parts`` of a direct session
        straight to the store, in order; FailedPrecondition for a proxied
        session, InvalidArgument for a part the session's layout does not
        allow (one such part fails the whole call: nothing is signed)."""
        ...

    async def complete_direct(
        self, session: Session, size: int, sums: ContentChecksums
    ) -> StoredObject:
        """Commit a direct session from the parts the store holds, checked
        against ``size`` and ``sums.crc32c`` (``sums.sha256`` is recorded as
        declared); a mismatch is InvalidArgument and ends the session."""
        ...

    async def sweep(self, buckets: list[str]) -> int:
        """Abort sessions idle past the expiry (damaged ones too) and
        multipart uploads older than it that no session owns; return how
        many were aborted."""
        ...


class Backend(Protocol):
    """A storage implementation as the factory sees it: its two stores, the
    capabilities the decorators and the RPC layer ask of it, and their
    lifecycle. Nothing outside the factory's choice of backend asks which
    implementation it is."""

    @property
    def objects(self) -> ObjectStore: ...

    @property
    def sessions(self) -> SessionStore: ...

    @property
    def records(self) -> Records:
        """The gateway's own records in this backend's store."""
        ...

    @property
    def sweep_tally(self) -> Counter[str] | None:
        """What the sessions' sweeps aborted since start-up, by kind
        (EXPIRED_SESSION, ORPHANED_UPLOAD), or None when every upload a
        sweep aborts is an expired session."""
        ...

    def instrument(self, registry: CollectorRegistry) -> None:
        """Measure every request the backend sends to its store into
        ``registry`` (and trace it when traces are on); before ``start``.
        A backend that sends no requests has nothing to measure."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ensure_buckets(self, buckets: list[str]) -> None:
        """Create the buckets that do not exist (the create-buckets setting)."""
        ...

    async def reconcile_lifecycle(
        self, buckets: list[str], expiry_days: Sequence[int], rules: Sequence[PrefixRule]
    ) -> None:
        """Make the gateway's lifecycle rules in each bucket the ones for
        ``expiry_days`` and ``rules``, keeping every rule it does not own
        (the manage-lifecycle setting); nothing where the store has none."""
        ...

    async def check(self) -> None:
        """Raise unless the backend answers: the health probe."""
        ...
