"""A resumable session's record, stored as JSON beside its multipart upload
under the reserved prefix. Its key is a hash of the session id, so listing
the bucket does not reveal ids.

The record is written with its Content-MD5, which S3 verifies, so a body
damaged on the way is refused rather than stored. Its metadata (headers, not
the body) repeats the multipart upload's id and the owner's tag, so that a
record that still does not parse can be ended (``damaged_sessions``)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from pydantic import TypeAdapter

from blobgate.server.storage.protocols import (
    RESERVED_PREFIX,
    ContentChecksums,
    DamagedSession,
    ObjectRef,
    PutOptions,
    SessionSpec,
    owner_tag,
)

CHECKPOINT_PREFIX = f"{RESERVED_PREFIX}uploads/"
# The record's user metadata.
UPLOAD_ID_KEY = "upload-id"
OWNER_KEY = "session-owner"


@dataclass(frozen=True)
class Checkpoint:
    """The session record stored as JSON at the checkpoint key."""

    key: str
    upload_id: str  # S3's multipart upload id
    part_size: int
    content_type: str
    metadata: dict[str, str]
    if_none_match: bool
    if_match: str
    size: int | None
    expected_sha256: str  # hex, "" when not given
    expected_crc32c: int | None
    parts: int  # whole parts stored, 1..parts, without a gap
    sha256_state: str  # base64 of the SHA-256 state after those parts
    crc32c: int  # CRC32C of those parts
    # Fields with defaults come last: older records lack them and still parse.
    owner: str | None = None  # the principal that started the session
    checksum_type: str = ""  # "FULL_OBJECT": created with S3's full-object CRC32C
    record_tag: str = ""  # the flag of the sha256 record written at commit ("": none)
    # The spec's tags, storage class and lifetime (the multipart upload was
    # created with them; a commit that copies the object keeps them).
    tags: dict[str, str] = field(default_factory=dict)
    storage_class: str = ""
    expire_days: int = 0
    # A direct session: the caller PUTs the parts (storage.s3.direct_upload),
    # and the parts S3 lists are its progress (``parts`` stays 0).
    direct: bool = False

    def to_json(self) -> bytes:
        return json.dumps({"version": 1, **asdict(self)}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Checkpoint:
        """The record in ``raw``; ValueError unless it is one, field types included."""
        return _RECORD.validate_json(raw)

    def metadata_fields(self) -> dict[str, str]:
        """The record's user metadata (see the module's docstring)."""
        fields = {UPLOAD_ID_KEY: self.upload_id}
        if self.owner is not None:
            fields[OWNER_KEY] = owner_tag(self.owner)
        return fields

    @property
    def persisted_size(self) -> int:
        return self.parts * self.part_size

    def spec(self, bucket: str) -> SessionSpec:
        known = ContentChecksums(
            sha256=bytes.fromhex(self.expected_sha256) if self.expected_sha256 else None,
            crc32c=self.expected_crc32c,
        )
        options = PutOptions(
            content_type=self.content_type,
            metadata=self.metadata,
            if_none_match=self.if_none_match,
            if_match=self.if_match,
            known=known,
            tags=self.tags,
            storage_class=self.storage_class,
            expire_days=self.expire_days,
        )
        return SessionSpec(
            ObjectRef(bucket, self.key), options, self.size, owner=self.owner, direct=self.direct
        )


# Parses a record (the "version" field is ignored, as are unknown ones).
_RECORD = TypeAdapter(Checkpoint)


def checkpoint_key(session_id: str) -> str:
    return CHECKPOINT_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


def content_md5(body: bytes) -> str:
    """The Content-MD5 header of ``body``: S3 refuses a body that differs."""
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


def damaged(metadata: Mapping[str, str]) -> DamagedSession:
    """The error for a record that does not parse, from its user metadata."""
    return DamagedSession(
        upload_id=metadata.get(UPLOAD_ID_KEY, ""), owner=metadata.get(OWNER_KEY, "")
    )
