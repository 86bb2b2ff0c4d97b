"""Resumable sessions whose record no longer parses (a body S3 stored
damaged, one written by hand): they are reported as DamagedSession (DATA_LOSS)
and can only be ended, by Cancel or by the janitor once idle past the expiry.
Ending one aborts its multipart upload, found by the id that the record's
metadata repeats, and deletes the record. A record without that metadata
(written before it was kept) is deleted alone: its multipart upload, which
no session owns any more, is aborted by the janitor as an orphan once it is
older than the expiry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from blobgate.server.storage.protocols import DamagedSession, ObjectRef
from blobgate.server.storage.s3.checkpoint import damaged
from blobgate.server.storage.s3.commit import abort_multipart
from blobgate.server.storage.s3.errors import s3_errors
from blobgate.server.storage.s3.versions import delete_record

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


async def damaged_session(client: S3Client, record: ObjectRef) -> DamagedSession:
    """The error for the session record at ``record``, which does not parse:
    what its metadata says (a HEAD: headers are whole even when a body is not)."""
    with s3_errors(record):
        head = await client.head_object(Bucket=record.bucket, Key=record.key)
    return damaged(head.get("Metadata", {}))


async def upload_key(client: S3Client, bucket: str, upload_id: str) -> str | None:
    """The key of the multipart upload ``upload_id`` in ``bucket``; None if
    S3 no longer lists it."""
    paginator = client.get_paginator("list_multipart_uploads")
    with s3_errors(bucket=bucket):
        async for page in paginator.paginate(Bucket=bucket):
            for upload in page.get("Uploads", []):
                if upload.get("UploadId") == upload_id and "Key" in upload:
                    return upload["Key"]
    return None


async def end_damaged(
    client: S3Client, record: ObjectRef, upload_id: str, key: str | None = None
) -> None:
    """Abort the multipart upload ``upload_id`` ("": unknown; at ``key``, or
    found by a listing), then delete the session record at ``record``."""
    if upload_id:
        if key is None:
            key = await upload_key(client, record.bucket, upload_id)
        if key is not None:
            await abort_multipart(client, ObjectRef(record.bucket, key), upload_id)
    await delete_record(client, record.bucket, record.key)
