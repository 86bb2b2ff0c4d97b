"""Deleting an object only while it is the version read (its ETag): Delete
with ``if_match``, ``mv`` through it, the janitor's removal of stale sha256
records and the removal of an object whose stored CRC32C is not the
gateway's.

S3 does it in one request, DeleteObject with If-Match (AWS since 2025-09);
other stores answer 501 NotImplemented (LocalStack, older MinIO and Ceph).
There the same result comes from a HEAD, whose ETag must match, then a plain
DeleteObject; an object replaced between the two is deleted anyway (see
docs/guarantees.md). ``s3_conditional_delete`` picks: ``native`` (If-Match
only; NotImplemented is UNIMPLEMENTED), ``emulate`` (always the HEAD), or
``auto``: If-Match until a bucket's store answers NotImplemented, then the
HEAD in that bucket for the life of the connection (a warning, once)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from blobgate.server.core.errors import (
    BucketNotFound,
    FailedPrecondition,
    NotFound,
    Unimplemented,
    if_match_failed,
)
from blobgate.server.core.settings import ConditionalDelete
from blobgate.server.storage.protocols import ObjectRef, PutOptions
from blobgate.server.storage.s3.errors import s3_errors
from blobgate.server.storage.s3.metadata import quoted_etag
from blobgate.server.storage.s3.preconditions import check_preconditions

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)


class ConditionalDeletes:
    """How one connection deletes on an ETag, and the buckets it has learnt
    lack If-Match on DeleteObject."""

    def __init__(self, mode: ConditionalDelete = "auto") -> None:
        self.mode = mode
        self._emulated: set[str] = set()  # buckets whose store answered NotImplemented

    def native(self, bucket: str) -> bool:
        """Whether a conditional delete in ``bucket`` goes as If-Match."""
        return self.mode == "native" or (self.mode == "auto" and bucket not in self._emulated)

    async def delete(
        self, client: S3Client, ref: ObjectRef, etag: str, *, checked: bool = False
    ) -> Mapping[str, Any]:
        """Delete ``ref`` only if its ETag is ``etag``; FailedPrecondition if
        it is another, or there is no object. ``checked``: the caller has
        just compared the ETag with a HEAD, which the emulation then uses.
        S3's answer to the DeleteObject (its VersionId and DeleteMarker)."""
        if self.native(ref.bucket) and not ref.version_id:
            try:
                return await _delete(client, ref, etag)
            except Unimplemented as exc:
                if self.mode == "native":
                    raise Unimplemented(
                        f"this S3 store does not support conditional deletes (DeleteObject "
                        f"with If-Match), needed to delete {ref.key!r} on its ETag; "
                        'the operator can set s3_conditional_delete = "auto" or "emulate" '
                        "to delete after a HEAD instead"
                    ) from exc
                self._learn(ref.bucket)
        if not checked:
            await check_preconditions(client, ref, PutOptions("", {}, if_match=etag))
        return await _delete(client, ref, "")

    def _learn(self, bucket: str) -> None:
        if bucket in self._emulated:
            return
        self._emulated.add(bucket)
        log.warning(
            "S3 does not support conditional deletes (DeleteObject with If-Match) in bucket %s: "
            "deleting on an ETag there after a HEAD instead, which an object replaced in "
            'between does not survive (s3_conditional_delete = "auto"; docs/guarantees.md)',
            bucket,
        )


async def _delete(client: S3Client, ref: ObjectRef, etag: str) -> Mapping[str, Any]:
    """One DeleteObject, If-Match ``etag`` when one is given (of the version
    ``ref`` names, if it names one); S3's answer."""
    version: dict[str, Any] = {"VersionId": ref.version_id} if ref.version_id else {}
    try:
        with s3_errors(ref):
            if etag and not version:
                return await client.delete_object(
                    Bucket=ref.bucket, Key=ref.key, IfMatch=quoted_etag(etag)
                )
            # A version never changes: the HEAD that compared its ETag holds.
            return await client.delete_object(Bucket=ref.bucket, Key=ref.key, **version)
    except BucketNotFound:
        raise
    except NotFound as exc:
        if not etag:
            return {}  # deleting a missing key is OK (S3 semantics), however S3 says it
        raise if_match_failed() from exc
    except FailedPrecondition as exc:
        raise if_match_failed() from exc
