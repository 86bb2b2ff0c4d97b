"""How objects are described in S3: ETags, user metadata carrying the
checksums (``sha256`` in hex, ``crc32c`` in decimal) or the flag of a sha256
record (``sha256-record``, see ``sha256_records``), S3's own full-object
CRC32C, conditional headers, and S3 responses read back as StoredObjects."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from blobgate.server.core.storage_classes import STANDARD
from blobgate.server.storage.checksums import crc32c_from_s3
from blobgate.server.storage.protocols import (
    CRC32C_KEY,
    SHA256_KEY,
    SHA256_RECORD_KEY,
    ContentChecksums,
    ObjectRef,
    PutOptions,
    StoredObject,
)

# S3's checksum type of a checksum of the whole object's bytes (a COMPOSITE
# one is a checksum of the parts' checksums).
FULL_OBJECT = "FULL_OBJECT"


def bare_etag(raw: str) -> str:
    return raw.strip('"')


def quoted_etag(etag: str) -> str:
    """ETags as S3 compares them in conditional headers."""
    return f'"{bare_etag(etag)}"'


def conditions(options: PutOptions) -> dict[str, str]:
    """The conditional headers of a write (S3 enforces them at commit)."""
    headers: dict[str, str] = {}
    if options.if_none_match:
        headers["IfNoneMatch"] = "*"
    if options.if_match:
        headers["IfMatch"] = quoted_etag(options.if_match)
    return headers


def stored_metadata(
    options: PutOptions, sums: ContentChecksums, record_tag: str = ""
) -> dict[str, str]:
    """The user metadata to store: the caller's, plus the checksums, and the
    flag of a sha256 record to come when ``record_tag`` is set."""
    metadata = dict(options.metadata)
    if record_tag:
        metadata[SHA256_RECORD_KEY] = record_tag
    if sums.sha256 is not None:
        metadata[SHA256_KEY] = sums.sha256.hex()
    if sums.crc32c is not None:
        metadata[CRC32C_KEY] = str(sums.crc32c)
    return metadata


def split_metadata(raw: Mapping[str, str]) -> tuple[dict[str, str], ContentChecksums]:
    """Stored user metadata as the caller's metadata and the checksums."""
    metadata = {k.lower(): v for k, v in raw.items()}
    sha_hex = metadata.pop(SHA256_KEY, None)
    crc_text = metadata.pop(CRC32C_KEY, None)
    metadata.pop(SHA256_RECORD_KEY, None)  # the gateway's, never the caller's
    try:
        sha = bytes.fromhex(sha_hex) if sha_hex else None
    except ValueError:
        sha = None
    crc = int(crc_text) if crc_text and crc_text.isdigit() else None
    return metadata, ContentChecksums(sha256=sha, crc32c=crc)


def s3_crc32c(response: Mapping[str, Any]) -> int | None:
    """The whole object's CRC32C as S3 keeps it, from a HEAD or GET sent with
    ``ChecksumMode=ENABLED``; None unless it is a FULL_OBJECT checksum (a COMPOSITE
    one, "...-N" on AWS, though moto drops the suffix, is not the CRC32C of
    the bytes) or where S3 sends none (a ranged GET, an object stored without
    one)."""
    if response.get("ChecksumType") != FULL_OBJECT:
        return None
    return crc32c_from_s3(str(response.get("ChecksumCRC32C", "")))


def stored_object(ref: ObjectRef, response: Mapping[str, Any], size: int) -> StoredObject:
    """A HeadObject or GetObject response as a StoredObject: the checksums
    from the user metadata, the CRC32C from S3's own checksum when the
    metadata has none (a multipart upload learns it only at its end, after
    its metadata was written)."""
    metadata, sums = split_metadata(response.get("Metadata", {}))
    if sums.crc32c is None:
        sums = replace(sums, crc32c=s3_crc32c(response))
    last_modified = response.get("LastModified")
    return StoredObject(
        bucket=ref.bucket,
        key=ref.key,
        size=size,
        etag=bare_etag(response.get("ETag", "")),
        content_type=response.get("ContentType", ""),
        last_modified=last_modified if isinstance(last_modified, datetime) else None,
        metadata=metadata,
        checksums=sums,
        version_id=str(response.get("VersionId") or ""),
        storage_class=str(response.get("StorageClass") or STANDARD),
        expires_at=expiration_time(response),
    )


_EXPIRY_DATE = re.compile(r'expiry-date="([^"]+)"')


def expiration_time(response: Mapping[str, Any]) -> datetime | None:
    """When a lifecycle rule will expire the object, from the Expiration
    of a HEAD or GET answer (``expiry-date="...", rule-id="..."``); None when
    S3 sends none or one that does not parse."""
    found = _EXPIRY_DATE.search(str(response.get("Expiration") or ""))
    if found is None:
        return None
    try:
        return parsedate_to_datetime(found.group(1)).astimezone(UTC)
    except (TypeError, ValueError, IndexError):
        return None
