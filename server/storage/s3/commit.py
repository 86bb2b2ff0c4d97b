"""A multipart upload from its start to its commit, written once for plain
uploads and sessions: create, complete (with the If-Match re-check), attach
checksums learnt only at the end, describe what was committed; or abort."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from blobgate.server.storage.protocols import ContentChecksums, ObjectRef, PutOptions, StoredObject
from blobgate.server.storage.s3.errors import S3_FAILURES, s3_errors
from blobgate.server.storage.s3.metadata import (
    bare_etag,
    conditions,
    quoted_etag,
    stored_metadata,
)
from blobgate.server.storage.s3.preconditions import check_preconditions

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

MAX_COPY_SIZE = 5 * 1024**3  # CopyObject's limit


async def create_multipart(client: S3Client, ref: ObjectRef, options: PutOptions) -> str:
    """Start a multipart upload; its S3 upload id."""
    with s3_errors(ref):
        created = await client.create_multipart_upload(
            Bucket=ref.bucket,
            Key=ref.key,
            ContentType=options.content_type,
            Metadata=stored_metadata(options, options.known),
        )
    return created["UploadId"]


async def complete_multipart(
    client: S3Client,
    ref: ObjectRef,
    upload_id: str,
    parts: list[dict[str, Any]],
    options: PutOptions,
    sums: ContentChecksums,
    size: int,
) -> StoredObject:
    """Commit ``parts`` as the object and describe it."""
    if options.if_match:
        # Not every S3-compatible store honours If-Match on completion.
        await check_preconditions(client, ref, options)
    with s3_errors(ref):
        response = await client.complete_multipart_upload(
            Bucket=ref.bucket,
            Key=ref.key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            **conditions(options),  # type: ignore[arg-type]
        )
    etag = response["ETag"]
    if options.known.sha256 is None:
        etag = await _store_checksums(client, ref, options, sums, etag, size)
    return await committed(client, ref, options, sums, size, etag)


async def _store_checksums(
    client: S3Client,
    ref: ObjectRef,
    options: PutOptions,
    sums: ContentChecksums,
    etag: str,
    size: int,
) -> str:
    """Attach checksums learnt only at the end of a multipart upload by
    copying the object onto itself with new metadata (guarded by its etag).
    Clients that send expected.sha256 up front skip this copy."""
    if size > MAX_COPY_SIZE:
        log.info("%s/%s: too large to copy; checksums not stored", ref.bucket, ref.key)
        return etag
    try:
        response = await client.copy_object(
            Bucket=ref.bucket,
            Key=ref.key,
            CopySource={"Bucket": ref.bucket, "Key": ref.key},
            CopySourceIfMatch=quoted_etag(etag),
            MetadataDirective="REPLACE",
            ContentType=options.content_type,
            Metadata=stored_metadata(options, sums),
        )
    except S3_FAILURES:
        log.warning("%s/%s: could not store checksums", ref.bucket, ref.key, exc_info=True)
        return etag
    return response["CopyObjectResult"].get("ETag", etag)


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
    )
    try:
        response = await client.head_object(
            Bucket=ref.bucket, Key=ref.key, IfMatch=quoted_etag(etag)
        )
    except S3_FAILURES:
        return info  # replaced meanwhile, or S3 hiccup: what we wrote is still true
    return replace(info, last_modified=response.get("LastModified"))


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
