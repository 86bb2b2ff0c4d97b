"""Object versions at the RPC layer: the version id a request names, checked
once for every call that takes one (Stat, Download, Presign, Copy's source,
Delete, BatchDelete's entries)."""

from __future__ import annotations

import re
from dataclasses import replace

from blobgate.server.core.errors import InvalidArgument
from blobgate.server.storage.protocols import ObjectRef

# S3's version ids are opaque printable strings (AWS: 32 URL-safe characters;
# "null" for the version written while a bucket was unversioned); anything
# longer or with control characters was not issued by a store.
MAX_VERSION_ID = 1024
_PRINTABLE = re.compile(r"[\x21-\x7e]+")


def validate_version_id(version_id: str, field: str = "version_id") -> str:
    """``version_id`` if it could name a version ("" names the current one)."""
    if not version_id:
        return ""
    if len(version_id) > MAX_VERSION_ID or not _PRINTABLE.fullmatch(version_id):
        raise InvalidArgument(
            f"{field} is not a version id: pass one as a versions listing or a write "
            f"returned it (printable ASCII, at most {MAX_VERSION_ID} characters), or leave "
            "it empty for the current version"
        )
    return version_id


def versioned(ref: ObjectRef, version_id: str, field: str = "version_id") -> ObjectRef:
    """``ref`` naming the version ``version_id`` ("" keeps the current one)."""
    return replace(ref, version_id=validate_version_id(version_id, field))
