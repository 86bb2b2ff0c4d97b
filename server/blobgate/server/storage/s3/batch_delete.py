"""Many keys of one bucket deleted with one DeleteObjects.

An entry's ``if_match`` goes to S3 as the object's ETag condition, but not
every S3-compatible store enforces it (moto ignores it), so the conditional
entries are checked with a HEAD first; an object replaced between that HEAD
and the DeleteObjects can still be deleted where the store ignores the ETag.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from blobgate.server.core.errors import BucketNotFound, NotFound, ServiceError, if_match_failed
from blobgate.server.storage.protocols import DeleteEntry, ObjectRef, PutOptions
from blobgate.server.storage.s3.errors import s3_errors, translate
from blobgate.server.storage.s3.metadata import quoted_etag
from blobgate.server.storage.s3.preconditions import check_preconditions

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

HEADS_AT_ONCE = 16


async def batch_delete(
    client: S3Client, bucket: str, entries: Sequence[DeleteEntry]
) -> list[ServiceError | None]:
    """Delete ``entries`` from ``bucket``: None per key that is gone, else
    the error that refused it."""
    results: list[ServiceError | None] = [None] * len(entries)
    await _check_conditions(client, bucket, entries, results)
    todo = [index for index, result in enumerate(results) if result is None]
    if not todo:
        await _check_bucket(client, bucket)  # a HEAD of a key cannot tell a missing bucket
        return results
    objects: list[dict[str, Any]] = []
    for index in todo:
        entry = entries[index]
        item: dict[str, Any] = {"Key": entry.key}
        if entry.version_id:
            item["VersionId"] = entry.version_id
        if (
            entry.if_match and not entry.version_id
        ):  # a version's ETag was checked: it never changes
            item["ETag"] = quoted_etag(entry.if_match)
        objects.append(item)
    with s3_errors(bucket=bucket):
        response = await client.delete_objects(
            Bucket=bucket,
            Delete={"Objects": objects, "Quiet": True},  # type: ignore[typeddict-item]
        )
    errors = {
        (str(error.get("Key", "")), str(error.get("VersionId") or "")): error
        for error in response.get("Errors", [])
    }
    for index in todo:
        entry = entries[index]
        error = errors.get((entry.key, entry.version_id)) or errors.get((entry.key, ""))
        if error is not None:
            results[index] = _entry_error(bucket, entries[index], error)
    return results


async def _check_conditions(
    client: S3Client,
    bucket: str,
    entries: Sequence[DeleteEntry],
    results: list[ServiceError | None],
) -> None:
    """HEAD every conditional entry; a failed condition is its result."""
    slots = asyncio.Semaphore(HEADS_AT_ONCE)

    async def check(index: int) -> None:
        entry = entries[index]
        async with slots:
            try:
                await check_preconditions(
                    client,
                    ObjectRef(bucket, entry.key, entry.version_id),
                    PutOptions("", {}, if_match=entry.if_match),
                )
            except ServiceError as exc:
                results[index] = exc

    await asyncio.gather(*(check(i) for i, entry in enumerate(entries) if entry.if_match))
    for result in results:
        if isinstance(result, BucketNotFound):
            raise result


async def _check_bucket(client: S3Client, bucket: str) -> None:
    try:
        with s3_errors(bucket=bucket):
            await client.head_bucket(Bucket=bucket)
    except NotFound:
        raise BucketNotFound(f"bucket {bucket!r} does not exist in S3") from None


def _entry_error(bucket: str, entry: DeleteEntry, error: Any) -> ServiceError | None:
    """The service error for one entry S3 refused; None for a missing key
    without a condition (deleting a missing key is OK)."""
    code = str(error.get("Code", ""))
    if code in {"NoSuchKey", "404", "NotFound"}:
        if not entry.if_match:
            return None
        return if_match_failed()
    if code in {"PreconditionFailed", "412"}:
        return if_match_failed()
    failure = ClientError({"Error": {"Code": code, "Message": str(error.get("Message", ""))}}, "")
    return translate(failure, ObjectRef(bucket, entry.key), bucket)
