"""The janitor: aborts resumable sessions idle past the expiry (those whose
record no longer parses too: ``damaged_sessions``), and multipart
uploads older than that which no session owns (left by an instance that died
mid-Upload); and removes sha256 records older than that whose object is gone
or was replaced, a bounded number per sweep."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from blobgate.server.core.errors import ServiceError
from blobgate.server.storage.protocols import EXPIRED_SESSION, ORPHANED_UPLOAD, ObjectRef
from blobgate.server.storage.s3.checkpoint import CHECKPOINT_PREFIX, Checkpoint
from blobgate.server.storage.s3.commit import abort_multipart
from blobgate.server.storage.s3.connection import S3Connection, get_whole
from blobgate.server.storage.s3.damaged_sessions import damaged_session
from blobgate.server.storage.s3.errors import S3_FAILURES
from blobgate.server.storage.s3.sha256_records import sweep_records
from blobgate.server.storage.s3.versions import delete_record

log = logging.getLogger(__name__)

# sha256 records looked at per bucket and sweep (a GET and a HEAD each, for
# those older than the expiry); the next sweep goes on from there.
RECORDS_PER_SWEEP = 200


async def sweep(
    connection: S3Connection,
    buckets: list[str],
    expiry: timedelta,
    tally: Counter[str] | None = None,
) -> int:
    """Sweep each bucket; how many multipart uploads were aborted. ``tally``
    counts each abort as it happens, by kind (EXPIRED_SESSION or
    ORPHANED_UPLOAD), even when a later one fails (the metrics read it)."""
    aborted = 0
    cutoff = datetime.now(UTC) - expiry
    tally = Counter() if tally is None else tally
    for bucket in buckets:
        aborted += await _sweep_bucket(connection, bucket, cutoff, tally)
    return aborted


async def _sweep_bucket(
    connection: S3Connection, bucket: str, cutoff: datetime, tally: Counter[str]
) -> int:
    client = connection.client
    # Multipart uploads are listed before the session records: a session
    # starting meanwhile has its record written by the time records are
    # listed, so its upload is never taken for an orphan.
    uploads: list[dict[str, Any]] = []
    paginator = client.get_paginator("list_multipart_uploads")
    async for page in paginator.paginate(Bucket=bucket):
        uploads.extend(dict(upload) for upload in page.get("Uploads", []))
    aborted = 0
    live: set[str] = set()  # uploads of sessions still in use
    ended: set[str] = set()  # uploads of the expired sessions aborted below
    keys = {upload["UploadId"]: upload["Key"] for upload in uploads}
    async for item in _records(connection, bucket):
        record = ObjectRef(bucket, item["Key"])
        try:
            raw, _ = await get_whole(client, bucket, record.key)
            checkpoint: Checkpoint | None = Checkpoint.from_json(raw)
        except ValueError:
            checkpoint = None  # damaged: ended as any other session once idle
        except S3_FAILURES:
            log.warning("janitor: unreadable session record in %s", bucket, exc_info=True)
            continue
        key: str | None
        if checkpoint is not None:
            upload_id, key = checkpoint.upload_id, checkpoint.key
        else:
            try:
                upload_id = (await damaged_session(client, record)).upload_id
            except ServiceError:
                log.warning("janitor: unreadable session record in %s", bucket, exc_info=True)
                continue
            key = keys.get(upload_id)  # None: unknown, or S3 no longer has it
        if item["LastModified"] >= cutoff:
            live.add(upload_id)
            continue
        if checkpoint is None:
            log.warning("janitor: ending an idle session whose record does not parse in %s", bucket)
        if key is not None:
            await abort_multipart(client, ObjectRef(bucket, key), upload_id)
        await delete_record(client, bucket, record.key)
        ended.add(upload_id)
        aborted += 1
        tally[EXPIRED_SESSION] += 1
    for upload in uploads:
        owned = live | ended | connection.writing
        if upload["UploadId"] in owned or upload["Initiated"] >= cutoff:
            continue
        orphan = ObjectRef(bucket, upload["Key"])
        await abort_multipart(client, orphan, upload["UploadId"])
        aborted += 1
        tally[ORPHANED_UPLOAD] += 1
    await _sweep_records(connection, bucket, cutoff, tally)
    return aborted


async def _sweep_records(
    connection: S3Connection, bucket: str, cutoff: datetime, tally: Counter[str]
) -> None:
    """Stale sha256 records: never used (each is checked against its object
    when read), only removed here to keep the reserved prefix small."""
    start = connection.record_sweep_from.get(bucket, "")
    try:
        deleted, next_start = await sweep_records(
            connection.client,
            bucket,
            cutoff,
            RECORDS_PER_SWEEP,
            start,
            deletes=connection.conditional_deletes,
        )
    except S3_FAILURES:
        log.warning("janitor: could not sweep sha256 records in %s", bucket, exc_info=True)
        return
    connection.record_sweep_from[bucket] = next_start
    if deleted:
        tally["stale_sha256_record"] += deleted


async def _records(connection: S3Connection, bucket: str) -> AsyncIterator[dict[str, Any]]:
    paginator = connection.client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=CHECKPOINT_PREFIX):
        for item in page.get("Contents", []):
            yield dict(item)
