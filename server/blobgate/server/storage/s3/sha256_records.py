"""The sha256 of a multipart upload that did not declare one, kept beside the
object instead of in its metadata (which would take a copy of the object).

S3 stores user metadata only when an object is created, and a multipart
upload learns its sha256 after the last byte. So ``CreateMultipartUpload``
marks the object with a flag (the metadata key ``sha256-record``, whose value
is a random tag of this one write), and after the commit a small JSON record
under ``.blobgate/sha256/`` (keyed by a hash of the object's key) holds the
tag, the object's ETag, size and CRC32C, and its sha256.

Stat and Download read the record only for flagged objects, and use it only
when it describes the object HEAD or GET returned: same tag, ETag and size.
Then its checksums are reported, the gateway's own, even where S3's CRC32C
of the object differs (a store that stored other bytes than it was sent and
checked: logged as an error, and the client's sha256 check catches it). An
object replaced by any other path (a
presigned PUT, a plain PutObject, another Upload, a Copy) has another tag, or
no flag at all, so it is never described by a stale record. Stale records are
removed by the janitor (``sweep_records``) and replaced by the next upload of
the key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from blobgate.server.core.errors import FailedPrecondition, NotFound, ServiceError
from blobgate.server.storage.protocols import (
    RESERVED_PREFIX,
    SHA256_RECORD_KEY,
    ContentChecksums,
    ObjectRef,
    StoredObject,
)
from blobgate.server.storage.s3.conditional_delete import ConditionalDeletes
from blobgate.server.storage.s3.connection import get_whole
from blobgate.server.storage.s3.errors import S3_FAILURES, s3_errors
from blobgate.server.storage.s3.metadata import bare_etag, quoted_etag, s3_crc32c, stored_object
from blobgate.server.storage.s3.versions import record_deleted, record_written, version_args

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

RECORD_PREFIX = f"{RESERVED_PREFIX}sha256/"


def record_key(key: str) -> str:
    """Where the record of the object at ``key`` lives (no key in clear)."""
    return RECORD_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def new_tag() -> str:
    """The flag's value for one write: what ties a record to that write."""
    return secrets.token_hex(16)


def flag_of(raw_metadata: Mapping[str, str]) -> str:
    """The record tag an object was written with; "" for an unflagged one."""
    for name, value in raw_metadata.items():
        if name.lower() == SHA256_RECORD_KEY:
            return str(value)
    return ""


@dataclass(frozen=True)
class Sha256Record:
    key: str
    tag: str
    etag: str  # bare
    size: int
    crc32c: int
    sha256: str  # hex

    def to_json(self) -> bytes:
        return json.dumps({"version": 1, **asdict(self)}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Sha256Record:
        fields = json.loads(raw)
        fields.pop("version", None)
        record = cls(**fields)
        bytes.fromhex(record.sha256)
        return record

    def describes(self, info: StoredObject, tag: str) -> bool:
        """Whether this record was written for the object ``info`` describes."""
        return (
            bool(tag)
            and self.tag == tag
            and self.key == info.key
            and self.etag == bare_etag(info.etag)
            and self.size == info.size
        )


async def write_record(
    client: S3Client, ref: ObjectRef, tag: str, etag: str, size: int, sums: ContentChecksums
) -> bool:
    """Record ``sums`` for the object just committed at ``ref``; whether it
    was written. A failure is logged, never raised: the object is committed
    and stays correct, only its sha256 is unknown."""
    if sums.sha256 is None or sums.crc32c is None:
        return False
    record = Sha256Record(ref.key, tag, bare_etag(etag), size, sums.crc32c, sums.sha256.hex())
    try:
        response = await client.put_object(
            Bucket=ref.bucket,
            Key=record_key(ref.key),
            Body=record.to_json(),
            ContentType="application/json",
        )
    except S3_FAILURES:
        log.warning(
            "%s/%s: could not record its sha256; Stat will not report one",
            ref.bucket,
            ref.key,
            exc_info=True,
        )
        return False
    await record_written(client, ref.bucket, record_key(ref.key), response)
    return True


async def read_record(client: S3Client, bucket: str, key: str) -> tuple[Sha256Record, str] | None:
    """The record at ``key`` (a record key) and its ETag; None if there is
    none or it cannot be read (logged)."""
    try:
        with s3_errors(ObjectRef(bucket, key)):
            raw, etag = await get_whole(client, bucket, key)
    except NotFound:
        return None
    except Exception:
        log.warning("could not read a sha256 record in %s", bucket, exc_info=True)
        return None
    try:
        return Sha256Record.from_json(raw), etag
    except (ValueError, TypeError):
        log.warning("unreadable sha256 record in %s", bucket, exc_info=True)
        return None


async def with_record(client: S3Client, info: StoredObject, tag: str) -> StoredObject:
    """``info`` with the recorded checksums when its flag asks for them and
    the record describes this very object; ``info`` unchanged otherwise."""
    if not tag or info.checksums.sha256 is not None:
        return info
    found = await read_record(client, info.bucket, record_key(info.key))
    if found is None or not found[0].describes(info, tag):
        return info
    record = found[0]
    stored_crc = info.checksums.crc32c  # S3's own, where it keeps one
    if stored_crc is not None and stored_crc != record.crc32c:
        log.error(
            "%s/%s: S3 keeps CRC32C %#010x for bytes the gateway hashed to %#010x",
            info.bucket,
            info.key,
            stored_crc,
            record.crc32c,
        )
    sums = ContentChecksums(sha256=bytes.fromhex(record.sha256), crc32c=record.crc32c)
    return replace(info, checksums=sums)


async def describe_stored(
    client: S3Client, ref: ObjectRef
) -> tuple[StoredObject, Mapping[str, str]]:
    """HeadObject as a StoredObject, its sha256 read from the record when the
    object is flagged, its CRC32C from S3's own checksum when the metadata
    has none; and the user metadata as S3 stores it."""
    with s3_errors(ref):
        # ChecksumMode: S3's own CRC32C of the object, for what the metadata lacks.
        response = await client.head_object(
            Bucket=ref.bucket, Key=ref.key, ChecksumMode="ENABLED", **version_args(ref)
        )
    info = stored_object(ref, response, int(response.get("ContentLength", 0)))
    raw = response.get("Metadata", {})
    return await with_record(client, info, flag_of(raw)), raw


async def with_stored_crc32c(client: S3Client, info: StoredObject) -> StoredObject:
    """``info``, read by a ranged GET (to which S3 sends no checksum), with
    S3's own CRC32C of the whole object from a HEAD of that very version (If-Match
    its ETag); ``info`` unchanged where S3 keeps none, the object changed
    meanwhile, or the HEAD failed (logged: the bytes are still right)."""
    ref = ObjectRef(info.bucket, info.key, info.version_id)
    try:
        with s3_errors(ref):
            response = await client.head_object(
                Bucket=ref.bucket,
                Key=ref.key,
                IfMatch=quoted_etag(info.etag),
                ChecksumMode="ENABLED",
                **version_args(ref),
            )
    except (FailedPrecondition, NotFound):
        return info
    except ServiceError:
        log.warning("%s/%s: could not read its stored CRC32C", ref.bucket, ref.key, exc_info=True)
        return info
    crc = s3_crc32c(response)
    if crc is None:
        return info
    return replace(info, checksums=replace(info.checksums, crc32c=crc))


async def describe(client: S3Client, ref: ObjectRef) -> StoredObject:
    """Stat's description of one object (see ``describe_stored``)."""
    info, _ = await describe_stored(client, ref)
    return info


async def sweep_records(
    client: S3Client,
    bucket: str,
    cutoff: datetime,
    limit: int,
    start_after: str = "",
    *,
    deletes: ConditionalDeletes,
) -> tuple[int, str]:
    """Delete records older than ``cutoff`` whose object is gone or was
    replaced, looking at most at ``limit`` records after ``start_after``;
    how many were deleted, and where the next sweep goes on ("" when this
    one reached the end). Each deletion is conditional on the record read
    (``deletes``: the connection's), so a record the next upload wrote
    meanwhile stays."""
    deleted = 0
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": RECORD_PREFIX, "MaxKeys": limit}
    if start_after:
        kwargs["StartAfter"] = start_after
    listing = await client.list_objects_v2(**kwargs)
    items = listing.get("Contents", [])
    for item in items:
        if item["LastModified"] >= cutoff:
            continue
        found = await read_record(client, bucket, item["Key"])
        if found is None:
            continue
        record, revision = found
        try:
            head = await client.head_object(Bucket=bucket, Key=record.key)
            info = StoredObject(
                bucket=bucket,
                key=record.key,
                size=int(head.get("ContentLength", 0)),
                etag=bare_etag(head.get("ETag", "")),
                content_type="",
                last_modified=None,
            )
            if record.describes(info, flag_of(head.get("Metadata", {}))):
                continue
        except S3_FAILURES as exc:
            if not _is_missing(exc):
                continue  # S3 hiccup: try again next sweep
        try:
            answer = await deletes.delete(client, ObjectRef(bucket, item["Key"]), revision)
            await record_deleted(client, bucket, item["Key"], answer)
            deleted += 1
        except ServiceError as exc:
            log.info("janitor: could not delete a stale sha256 record in %s: %s", bucket, exc)
    more = bool(listing.get("IsTruncated")) and bool(items)
    return deleted, (items[-1]["Key"] if more else "")


def _is_missing(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    code = str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
    return code in {"404", "NoSuchKey", "NotFound"}
