"""Checks on request fields, shared by every handler. Each failure raises
InvalidArgument or PermissionDenied with a message that says what to fix."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping

from blobgate.server.core.errors import InvalidArgument, PermissionDenied
from blobgate.server.storage.protocols import RESERVED_METADATA, RESERVED_PREFIX, ObjectRef

MAX_KEY_BYTES = 1024
# S3 caps all user metadata (keys and values, as sent) at 2 KB; leave room
# for the checksums the service stores beside it.
MAX_METADATA_BYTES = 2048 - 96
_METADATA_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def guess_content_type(key: str) -> str:
    """The content type implied by the key's extension, else octet-stream."""
    guessed, _ = mimetypes.guess_type(key, strict=False)
    return guessed or DEFAULT_CONTENT_TYPE


def validate_key(key: str) -> str:
    if not key:
        raise InvalidArgument("key is empty: name the object")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise InvalidArgument(f"key is {size} bytes long; the limit is {MAX_KEY_BYTES}")
    if "\x00" in key:
        raise InvalidArgument("key contains a NUL character")
    if key.startswith("/"):
        raise InvalidArgument("key starts with '/': drop the leading slash")
    if key.startswith(RESERVED_PREFIX):
        raise InvalidArgument(
            f"keys under {RESERVED_PREFIX!r} are reserved for the gateway's upload sessions"
        )
    if any(segment in {".", ".."} for segment in key.split("/")):
        raise InvalidArgument(
            "key has a '.' or '..' path segment, which HTTP clients rewrite in URLs"
        )
    return key


class BucketPolicy:
    """Resolves the request's bucket: empty is the default; the rest must be
    allowed. ``deferred`` (under a policy file): a bucket outside the allowed
    set is passed on, for the authorization layer to refuse in the words of
    a missing grant (``storage.authorization``), so that a caller cannot tell
    an unserved bucket from one where it has no rights."""

    def __init__(self, default: str, allowed: frozenset[str], *, deferred: bool = False) -> None:
        self.default = default
        self.allowed = allowed
        self.deferred = deferred

    def resolve(self, bucket: str) -> str:
        name = bucket or self.default
        if name not in self.allowed and not self.deferred:
            # Say what was refused, not what exists: no list of buckets.
            raise PermissionDenied(f"bucket {name!r} is not served by this gateway")
        return name

    def ref(self, bucket: str, key: str) -> ObjectRef:
        return ObjectRef(self.resolve(bucket), validate_key(key))


def validate_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Lower-case the keys and check what S3 would refuse or mangle."""
    clean: dict[str, str] = {}
    total = 0
    for raw_key, value in metadata.items():
        key = raw_key.lower()
        if not _METADATA_KEY.fullmatch(key):
            raise InvalidArgument(
                f"metadata key {raw_key!r}: use letters, digits, '-', '_' and '.'"
            )
        if key in RESERVED_METADATA:
            raise InvalidArgument(f"metadata key {key!r} is reserved for the stored checksums")
        if key in clean:
            raise InvalidArgument(f"metadata key {key!r} is given twice (keys are lower-cased)")
        if value != value.strip(" \t"):
            raise InvalidArgument(
                f"metadata value of {key!r} has leading or trailing whitespace, "
                "which S3 drops (it travels as an HTTP header)"
            )
        if not value.isascii() or not value.isprintable():
            raise InvalidArgument(
                f"metadata value of {key!r} must be printable ASCII (it travels as an HTTP header)"
            )
        clean[key] = value
        total += len(key) + len(value)
    if total > MAX_METADATA_BYTES:
        raise InvalidArgument(
            f"metadata is {total} bytes; the limit is {MAX_METADATA_BYTES} (S3 allows 2 KB)"
        )
    return clean


# type/subtype, then optional parameters: printable ASCII only (it travels as
# an HTTP header, and a presigned PUT hands it back as one to send).
_CONTENT_TYPE = re.compile(r"[\x21-\x7e]+/[\x21-\x7e]+( *;[\x20-\x7e]*)?")
MAX_CONTENT_TYPE = 256


def validate_content_type(content_type: str, key: str) -> str:
    if not content_type:
        return guess_content_type(key)
    if len(content_type) > MAX_CONTENT_TYPE or not _CONTENT_TYPE.fullmatch(content_type):
        raise InvalidArgument(
            f"content_type {content_type[:80]!r} is not a valid media type: "
            f"type/subtype[; parameters] in printable ASCII, at most {MAX_CONTENT_TYPE} characters"
        )
    return content_type


_ETAG = re.compile(r'"?[\x21\x23-\x7e]*"?')


def validate_etag(etag: str, field: str = "if_match") -> str:
    """An ETag condition travels as an HTTP header: printable ASCII only."""
    if len(etag) > 1024 or not _ETAG.fullmatch(etag):
        raise InvalidArgument(f"{field} {etag[:80]!r} is not an ETag (printable ASCII, no spaces)")
    return etag


def validate_listing(prefix: str, delimiter: str) -> None:
    """A prefix or delimiter longer than a key, or with a NUL, can match nothing."""
    for name, value in (("prefix", prefix), ("delimiter", delimiter)):
        if len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise InvalidArgument(f"{name} is longer than a key can be ({MAX_KEY_BYTES} bytes)")
        if "\x00" in value:
            raise InvalidArgument(f"{name} contains a NUL character")
