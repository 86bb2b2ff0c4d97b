"""The values the object store's protocol (``storage.protocols.ObjectStore``)
takes and returns: where an object is (``ObjectRef``), what is known of it
(``StoredObject``, ``ContentChecksums``), how to store, read, copy and
delete it (``PutOptions``, ``ByteRange``, ``CopySpec``, ``DeleteEntry``) and
what those calls answer (``ListPage``, ``DeleteResult``, ``PresignedRequest``,
``DirectRead``). ``storage.protocols`` re-exports them; the rest of the
code imports them from there.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class ObjectRef:
    """Where an object lives; ``version_id`` names one version of it (S3's
    version id) where a call reads or removes a version, "" for the current
    one. A write's destination never has one."""

    bucket: str
    key: str
    version_id: str = ""


@dataclass(frozen=True)
class ContentChecksums:
    """What is known of an object's content; either may be unknown."""

    sha256: bytes | None = None
    crc32c: int | None = None


@dataclass(frozen=True)
class StoredObject:
    """One stored object as the store describes it."""

    bucket: str
    key: str
    size: int
    etag: str
    content_type: str
    last_modified: datetime | None
    metadata: Mapping[str, str] = field(default_factory=dict)
    checksums: ContentChecksums = field(default_factory=ContentChecksums)
    storage_class: str = ""  # "" where unknown; S3 reports none for STANDARD
    tags: Mapping[str, str] | None = None  # None: not read (Stat without include_tags)
    expires_at: datetime | None = None  # when a lifecycle rule expires it, if known
    # S3's version id of this object ("" where the bucket is not versioned);
    # the other two only in a versions listing.
    version_id: str = ""
    is_latest: bool = False
    is_delete_marker: bool = False


@dataclass(frozen=True)
class DeleteResult:
    """What a delete did: the id of the delete marker it made, or of the
    version it removed ("" where the bucket is not versioned), and whether
    that is a delete marker."""

    version_id: str = ""
    delete_marker: bool = False


# The version id S3 gives the version written while a bucket was not
# versioned (a versions listing of an unversioned bucket names every object so).
NULL_VERSION = "null"


@dataclass(frozen=True)
class PutOptions:
    """How to store one object. ``known`` holds checksums vouched for before
    the data arrives (stored up front); the rest are computed while streaming."""

    content_type: str
    metadata: Mapping[str, str]
    if_none_match: bool = False
    if_match: str = ""
    known: ContentChecksums = field(default_factory=ContentChecksums)
    # The caller's tags (checked: ``core.tags``); the store adds the expiry
    # tag for ``expire_days`` > 0.
    tags: Mapping[str, str] = field(default_factory=dict)
    storage_class: str = ""  # "": the store's default (STANDARD)
    expire_days: int = 0


@dataclass(frozen=True)
class ByteRange:
    """Which bytes to read: ``offset`` < 0 counts back from the end; ``limit``
    0 means to the end."""

    offset: int = 0
    limit: int = 0


@dataclass(frozen=True)
class ListPage:
    objects: list[StoredObject]
    common_prefixes: list[str]
    next_token: str


class PresignMethod(enum.Enum):
    GET = "GET"
    PUT = "PUT"


@dataclass(frozen=True)
class PresignedRequest:
    url: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class DirectRead:
    """A read the caller makes straight from the store: the object's
    description, and a presigned GET of the selected ``length`` bytes
    (``offset`` onwards), valid until ``expires_at``, whose headers pin the
    object described (a changed object is refused) and carry its range."""

    info: StoredObject
    request: PresignedRequest
    offset: int
    length: int
    expires_at: datetime


@dataclass(frozen=True)
class CopySpec:
    """A copy from ``source`` to ``destination``. ``options`` holds the
    destination's preconditions and, when ``replace_metadata``, its content
    type and metadata; otherwise the source's are kept. The source's
    checksums are kept either way. Tags likewise: the source's unless
    ``replace_tags`` (then ``options.tags``); ``options.expire_days`` > 0
    replaces the source's lifetime, 0 keeps it."""

    source: ObjectRef
    destination: ObjectRef
    options: PutOptions
    source_if_match: str = ""
    replace_metadata: bool = False
    replace_tags: bool = False


@dataclass(frozen=True)
class DeleteEntry:
    """One key of a batch delete, with its optional ETag condition; with
    ``version_id``, that version is removed for good."""

    key: str
    if_match: str = ""
    version_id: str = ""
