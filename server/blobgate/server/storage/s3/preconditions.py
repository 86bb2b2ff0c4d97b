"""Describing an object, and the write preconditions: S3 enforces them
through the conditional headers of the write that commits (PutObject,
CompleteMultipartUpload); they are also checked up front with a HEAD, before
an Upload is accepted or a session started, so that a refused upload is
refused before the client sends data. A failed condition says only that it
failed (``core.errors.if_match_failed``): never the current ETag or size."""

from __future__ import annotations

from typing import TYPE_CHECKING

from blobgate.server.core.errors import (
    FailedPrecondition,
    NotFound,
    if_match_failed,
    if_none_match_failed,
)
from blobgate.server.storage.protocols import ObjectRef, PutOptions, StoredObject
from blobgate.server.storage.s3.errors import s3_errors
from blobgate.server.storage.s3.metadata import bare_etag, stored_object
from blobgate.server.storage.s3.versions import version_args

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


async def head(client: S3Client, ref: ObjectRef) -> StoredObject:
    """HeadObject, as a StoredObject."""
    with s3_errors(ref):
        response = await client.head_object(Bucket=ref.bucket, Key=ref.key, **version_args(ref))
    return stored_object(ref, response, int(response.get("ContentLength", 0)))


def precondition_failed(ref: ObjectRef, options: PutOptions) -> FailedPrecondition:
    """The error for a write S3 refused under its conditional headers (412,
    409, or 404 for If-Match on a missing key)."""
    return if_none_match_failed() if options.if_none_match else if_match_failed()


async def check_preconditions(client: S3Client, ref: ObjectRef, options: PutOptions) -> None:
    """Fail fast with a HEAD, before any of the write's data is read."""
    try:
        current = await head(client, ref)
    except NotFound:
        if options.if_match:
            raise if_match_failed() from None
        return
    if options.if_none_match:
        raise if_none_match_failed()
    if options.if_match and current.etag != bare_etag(options.if_match):
        raise if_match_failed()
