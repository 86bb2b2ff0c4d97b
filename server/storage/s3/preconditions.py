"""Describing an object, and the write preconditions checked against it up
front (S3 enforces them again through the conditional headers at commit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from blobgate.server.errors import FailedPrecondition, NotFound
from blobgate.server.storage.protocols import ObjectRef, PutOptions, StoredObject
from blobgate.server.storage.s3.errors import s3_errors
from blobgate.server.storage.s3.metadata import bare_etag, stored_object

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


async def head(client: S3Client, ref: ObjectRef) -> StoredObject:
    """HeadObject, as a StoredObject."""
    with s3_errors(ref):
        response = await client.head_object(Bucket=ref.bucket, Key=ref.key)
    return stored_object(ref, response, int(response.get("ContentLength", 0)))


async def check_preconditions(client: S3Client, ref: ObjectRef, options: PutOptions) -> None:
    """Fail fast, before any data is read."""
    try:
        current = await head(client, ref)
    except NotFound:
        if options.if_match:
            raise FailedPrecondition(
                f"if_match {options.if_match!r}: there is no object {ref.key!r}"
            ) from None
        return
    if options.if_none_match:
        raise FailedPrecondition(f"if_none_match: object {ref.key!r} already exists")
    if options.if_match and current.etag != bare_etag(options.if_match):
        raise FailedPrecondition(
            f"if_match {options.if_match!r} does not match {ref.key!r} (etag {current.etag!r})"
        )
