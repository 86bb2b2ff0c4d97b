"""How objects are described in S3: ETags, user metadata carrying the
checksums (``sha256`` in hex, ``crc32c`` in decimal) or the flag of a sha256
record (``sha256-record``, see ``sha256_records``), conditional headers, and
S3 responses read back as StoredObjects."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from blobgate.server.storage.protocols import (
    CRC32C_KEY,
    SHA256_KEY,
    SHA256_RECORD_KEY,
    ContentChecksums,
    ObjectRef,
    PutOptions,
    StoredObject,
)


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


def stored_object(ref: ObjectRef, response: Mapping[str, Any], size: int) -> StoredObject:
    """A HeadObject or GetObject response as a StoredObject."""
    metadata, sums = split_metadata(response.get("Metadata", {}))
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
    )
