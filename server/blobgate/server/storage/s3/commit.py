"""A multipart upload from its start to its commit, written once for plain
uploads and sessions: create, complete (with the If-Match re-check), keep
the checksums learnt only at the end, describe what was committed; or abort.

With full-object checksums (``s3_full_object_checksums``) the upload is
created with ``ChecksumAlgorithm=CRC32C, ChecksumType=FULL_OBJECT``, every
part carries its CRC32C and the completion the whole object's, so S3 checks
the bytes it assembled against what the gateway hashed; an undeclared sha256
goes to a record beside the object (``sha256_records``). Without them (a
store that lacks them) the checksums are attached by copying the object onto
itself, as before."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from blobgate.server.core.errors import ServiceError, Unavailable
from blobgate.server.core.storage_classes import STANDARD
from blobgate.server.storage.checksums import crc32c_from_s3, crc32c_to_s3
from blobgate.server.storage.protocols import (
    NULL_VERSION,
    ContentChecksums,
    ObjectRef,
    PutOptions,
    StoredObject,
)
from blobgate.server.storage.s3.conditional_delete import ConditionalDeletes
from blobgate.server.storage.s3.errors import S3_FAILURES, s3_errors
from blobgate.server.storage.s3.metadata import FULL_OBJECT as FULL_OBJECT  # sessions use it
from blobgate.server.storage.s3.metadata import (
    bare_etag,
    conditions,
    quoted_etag,
    stored_metadata,
)
from blobgate.server.storage.s3.preconditions import check_preconditions
from blobgate.server.storage.s3.sha256_records import write_record
from blobgate.server.storage.s3.tagging import write_args
from blobgate.server.storage.s3.versions import remove_version, version_of

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

MAX_COPY_SIZE = 5 * 1024**3  # CopyObject's limit


async def create_multipart(
    client: S3Client,
    ref: ObjectRef,
    options: PutOptions,
    *,
    full_object: bool = False,
    record_tag: str = "",
) -> str:
    """Start a multipart upload; its S3 upload id. ``full_object``: with
    S3's full-object CRC32C; ``record_tag``: the object's sha256 will be in
    a record (the flag's value, see ``sha256_records``).

    The request is shielded: a caller cancelled while S3 creates the upload
    leaves none behind, since the upload S3 answers with is aborted then."""
    kwargs: dict[str, Any] = {}
    if full_object:
        kwargs = {"ChecksumAlgorithm": "CRC32C", "ChecksumType": FULL_OBJECT}

    async def create() -> str:
        with s3_errors(ref):
            created = await client.create_multipart_upload(
                Bucket=ref.bucket,
                Key=ref.key,
                ContentType=options.content_type,
                Metadata=stored_metadata(options, options.known, record_tag),
                **write_args(options),
                **kwargs,
            )
        return created["UploadId"]

    creating = asyncio.ensure_future(create())
    try:
        return await asyncio.shield(creating)
    except asyncio.CancelledError:
        creating.add_done_callback(partial(_abort_created, client, ref))
        raise


# Aborts of uploads created for callers that were gone by then (kept here so
# that the tasks are not collected before they finish).
_late_aborts: set[asyncio.Task[None]] = set()


def _abort_created(client: S3Client, ref: ObjectRef, creating: asyncio.Future[str]) -> None:
    """Abort the upload S3 created after its caller was cancelled (a failed
    create made none)."""
    if creating.cancelled() or creating.exception() is not None:
        return
    task = asyncio.ensure_future(abort_multipart(client, ref, creating.result()))
    _late_aborts.add(task)
    task.add_done_callback(_late_aborts.discard)


async def complete_multipart(
    client: S3Client,
    ref: ObjectRef,
    upload_id: str,
    parts: list[dict[str, Any]],
    options: PutOptions,
    sums: ContentChecksums,
    size: int,
    *,
    full_object: bool = False,
    record_tag: str = "",
    control: S3Client | None = None,
    deletes: ConditionalDeletes | None = None,
) -> StoredObject:
    """Commit ``parts`` as the object and describe it. ``full_object`` and
    ``record_tag`` as the upload was created (``create_multipart``); the
    record is written through ``control`` (default: ``client``); an object
    S3 stored other bytes for is removed by ``deletes`` (the connection's;
    default: ``auto``)."""
    if options.if_match:
        # Not every S3-compatible store honours If-Match on completion.
        await check_preconditions(client, ref, options)
    checksum: dict[str, Any] = {}
    if full_object and sums.crc32c is not None:
        # S3 refuses the completion (BadDigest) unless the parts it holds
        # make up exactly these bytes.
        checksum = {
            "ChecksumCRC32C": crc32c_to_s3(sums.crc32c),
            "ChecksumType": FULL_OBJECT,
            "MpuObjectSize": size,
        }
    with s3_errors(ref):
        response = await client.complete_multipart_upload(
            Bucket=ref.bucket,
            Key=ref.key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            **conditions(options),  # type: ignore[arg-type]
            **checksum,
        )
    etag = response["ETag"]
    version = version_of(response)
    answer: Mapping[str, Any] = response
    if checksum:
        await _check_stored_crc32c(
            client, ref, response, sums, etag, deletes or ConditionalDeletes()
        )
    if options.known.sha256 is None and not record_tag:
        copied = await _store_checksums(client, ref, options, sums, etag, size)
        if copied is not None:
            etag = copied["CopyObjectResult"].get("ETag", etag)
            if version and version_of(copied) not in {"", version}:
                # A versioned bucket keeps the object as it was before the
                # copy: one upload, one version.
                await remove_version(client, ref, version)
            answer = copied
    if record_tag:  # the HEAD also tells that the object is still this upload's
        info = await committed(client, ref, options, sums, size, etag)
    else:
        info = described(ref, options, sums, size, etag, answer)
    if record_tag and info.last_modified is not None:
        # Only while the object is still this upload's (the HEAD above was
        # conditional on its ETag): a writer that replaced it meanwhile
        # keeps its own record.
        await write_record(control or client, ref, record_tag, etag, size, sums)
    return info


async def _check_stored_crc32c(
    client: S3Client,
    ref: ObjectRef,
    response: Any,
    sums: ContentChecksums,
    etag: str,
    deletes: ConditionalDeletes,
) -> None:
    """Where the store answers with the full-object CRC32C it stored, it must
    be the gateway's: a store that accepted the value without checking it
    could otherwise keep other bytes. Such an object is removed (if still
    this one) and the upload fails as retryable."""
    if response.get("ChecksumType", FULL_OBJECT) != FULL_OBJECT:
        return
    stored = crc32c_from_s3(str(response.get("ChecksumCRC32C", "")))
    if stored is None or stored == sums.crc32c:
        return
    log.error(
        "%s/%s: S3 stored CRC32C %#010x for bytes the gateway hashed to %#010x; removing it",
        ref.bucket,
        ref.key,
        stored,
        sums.crc32c or 0,
    )
    try:
        version = version_of(response)
        if version and version != NULL_VERSION:  # that very version, and no delete marker
            with s3_errors(ref):
                await client.delete_object(Bucket=ref.bucket, Key=ref.key, VersionId=version)
        else:
            await deletes.delete(client, ref, etag)
    except ServiceError:
        log.warning(
            "%s/%s: could not remove the damaged object", ref.bucket, ref.key, exc_info=True
        )
    raise Unavailable(
        f"S3 stored other bytes than the gateway sent for {ref.key!r} "
        "(CRC32C mismatch); the object was removed, retry the upload"
    )


async def _store_checksums(
    client: S3Client,
    ref: ObjectRef,
    options: PutOptions,
    sums: ContentChecksums,
    etag: str,
    size: int,
) -> Mapping[str, Any] | None:
    """Attach checksums learnt only at the end of a multipart upload by
    copying the object onto itself with new metadata (guarded by its etag);
    S3's answer to the copy, None where there was none. Clients that send
    expected.sha256 up front skip this copy."""
    if size > MAX_COPY_SIZE:
        log.info("%s/%s: too large to copy; checksums not stored", ref.bucket, ref.key)
        return None
    # A copy takes S3's default class unless told; its tags are copied.
    kept: dict[str, Any] = {"StorageClass": options.storage_class} if options.storage_class else {}
    try:
        response = await client.copy_object(
            Bucket=ref.bucket,
            Key=ref.key,
            CopySource={"Bucket": ref.bucket, "Key": ref.key},
            CopySourceIfMatch=quoted_etag(etag),
            MetadataDirective="REPLACE",
            ContentType=options.content_type,
            Metadata=stored_metadata(options, sums),
            **kept,
        )
    except S3_FAILURES:
        log.warning("%s/%s: could not store checksums", ref.bucket, ref.key, exc_info=True)
        return None
    return response


async def committed(
    client: S3Client,
    ref: ObjectRef,
    options: PutOptions,
    sums: ContentChecksums,
    size: int,
    etag: str,
) -> StoredObject:
    """Describe what was just committed; a HEAD supplies LastModified."""
    info = StoredObject(
        bucket=ref.bucket,
        key=ref.key,
        size=size,
        etag=bare_etag(etag),
        content_type=options.content_type,
        last_modified=None,
        metadata=dict(options.metadata),
        checksums=sums,
        storage_class=options.storage_class or STANDARD,
    )
    try:
        response = await client.head_object(
            Bucket=ref.bucket, Key=ref.key, IfMatch=quoted_etag(etag)
        )
    except S3_FAILURES:
        return info  # replaced meanwhile, or S3 hiccup: what we wrote is still true
    return replace(
        info, last_modified=response.get("LastModified"), version_id=version_of(response)
    )


def described(
    ref: ObjectRef,
    options: PutOptions,
    sums: ContentChecksums,
    size: int,
    etag: str,
    response: Mapping[str, Any],
) -> StoredObject:
    """Describe what a write just committed from S3's answer to it, with no
    further request: last_modified is the time S3 gives for the write (see
    ``write_time``)."""
    return StoredObject(
        bucket=ref.bucket,
        key=ref.key,
        size=size,
        etag=bare_etag(etag),
        content_type=options.content_type,
        last_modified=write_time(response),
        metadata=dict(options.metadata),
        checksums=sums,
        version_id=version_of(response),
        storage_class=options.storage_class or STANDARD,
    )


def write_time(response: Mapping[str, Any]) -> datetime | None:
    """When S3 says a write committed, to the second: its answer's
    ``LastModified`` (CopyObject's result, or a Last-Modified header where a
    store sends one with PutObject), else the answer's ``Date``. Stat gives
    S3's LastModified, which can be earlier (AWS dates a multipart upload
    from its start) but never later."""
    result = response.get("CopyObjectResult")
    for value in (response.get("LastModified"), result.get("LastModified") if result else None):
        if isinstance(value, datetime):
            return value
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    for name in ("last-modified", "date"):
        try:
            return parsedate_to_datetime(headers[name]).astimezone(UTC)
        except (KeyError, TypeError, ValueError, IndexError):
            continue
    return None


async def abort_multipart(client: S3Client, ref: ObjectRef, upload_id: str) -> None:
    """Abort a multipart upload; a failure is logged, never raised (a bucket
    lifecycle rule removes what is left)."""
    try:
        await client.abort_multipart_upload(Bucket=ref.bucket, Key=ref.key, UploadId=upload_id)
    except Exception:
        # The upload id is a secret of the session that owns it: never logged.
        log.warning(
            "could not abort a multipart upload of %s/%s; a bucket lifecycle rule "
            "(AbortIncompleteMultipartUpload) will remove its parts",
            ref.bucket,
            ref.key,
            exc_info=True,
        )
