"""Copy inside S3: one CopyObject up to ``copy_threshold``, a multipart copy
(UploadPartCopy of ``part_size`` ranges, ``parts_in_flight`` at once) above
it. The bytes never pass through the gateway. Every request names the
source's ETag as read up front (CopySourceIfMatch), so the checksums taken
from that read describe the bytes copied.

A source whose checksums are not all in its own metadata (a sha256 in a
record, see ``sha256_records``; a CRC32C only S3's own checksum holds, as
for a multipart upload that declared its sha256) gives a copy that carries
them in its metadata: the metadata is written anew with the checksums, and
a record's flag is never copied (the copy's key has no record).

Tags are copied by S3 (TaggingDirective COPY) unless the copy replaces them
or gives the copy a lifetime of its own; then, and for a multipart copy
(whose upload S3 creates without the source's tags), the source's tags are
read (GetObjectTagging) and written with the copy. The storage class is the
request's, else S3's default."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from blobgate.server.core.errors import (
    BucketNotFound,
    FailedPrecondition,
    NotFound,
    if_match_failed,
)
from blobgate.server.core.tags import expiry_of, with_expiry
from blobgate.server.storage.protocols import CopySpec, ObjectRef, PutOptions, StoredObject
from blobgate.server.storage.s3.commit import abort_multipart, create_multipart, described
from blobgate.server.storage.s3.connection import S3Connection
from blobgate.server.storage.s3.errors import s3_errors
from blobgate.server.storage.s3.metadata import (
    bare_etag,
    conditions,
    quoted_etag,
    split_metadata,
    stored_metadata,
)
from blobgate.server.storage.s3.preconditions import check_preconditions
from blobgate.server.storage.s3.sha256_records import describe_stored, flag_of
from blobgate.server.storage.s3.tagging import get_tags, write_args
from blobgate.server.storage.s3.versions import copy_source

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

MAX_PARTS = 10_000  # S3's limit per multipart upload
MAX_PART = 5 * 1024**3  # UploadPartCopy's limit per part


async def copy_object(connection: S3Connection, spec: CopySpec) -> StoredObject:
    """Copy ``spec.source`` to ``spec.destination`` and describe the copy."""
    client = connection.client
    source, rewrite = await _read_source(client, spec)
    if spec.options.if_none_match or spec.options.if_match:
        await check_preconditions(client, spec.destination, spec.options)
    options = replace(spec.options, known=source.checksums)
    if not spec.replace_metadata:
        options = replace(options, content_type=source.content_type, metadata=source.metadata)
    single = source.size <= connection.config.copy_threshold
    copy_tags = not spec.replace_tags and not options.expire_days and single
    if not spec.replace_tags and not copy_tags:
        tags = await get_tags(client, spec.source)
        days = options.expire_days or expiry_of(tags)
        options = replace(options, tags=with_expiry(tags, 0), expire_days=days)
    # A version copied onto its own key (a restore): S3 takes that only as a
    # change of metadata (some stores refuse it otherwise), so it is written anew.
    onto_itself = (spec.source.bucket, spec.source.key) == (
        spec.destination.bucket,
        spec.destination.key,
    )
    copier = _Copier(connection, spec, source, options, rewrite_metadata=rewrite or onto_itself)
    try:
        if single:
            return await copier.single(copy_tags=copy_tags)
        return await copier.multipart()
    except FailedPrecondition as exc:
        raise FailedPrecondition(
            f"the copy of {spec.source.key!r} to {spec.destination.key!r} was refused: "
            "the source changed, or a destination precondition failed, during the copy"
        ) from exc


async def _read_source(client: S3Client, spec: CopySpec) -> tuple[StoredObject, bool]:
    """The source as it is now, checked against ``source_if_match``; and
    whether a copy must have its metadata written anew: the source carries
    the flag of a sha256 record, or checksums its metadata lacks."""
    ref = spec.source
    try:
        source, raw = await describe_stored(client, ref)
    except BucketNotFound:
        raise
    except NotFound:
        what = f"version {ref.version_id!r} of {ref.key!r}" if ref.version_id else repr(ref.key)
        raise NotFound(f"no source object {what} in bucket {ref.bucket!r}") from None
    if spec.source_if_match and source.etag != bare_etag(spec.source_if_match):
        raise if_match_failed("source_if_match")
    _, in_metadata = split_metadata(raw)
    return source, bool(flag_of(raw)) or in_metadata != source.checksums


class _Copier:
    """One copy's requests, by either path."""

    def __init__(
        self,
        connection: S3Connection,
        spec: CopySpec,
        source: StoredObject,
        options: PutOptions,
        *,
        rewrite_metadata: bool = False,
    ) -> None:
        self._connection = connection
        # The source's metadata holds a record's flag, or lacks checksums the
        # copy must carry: write it anew instead, with the content type and
        # user metadata (all the gateway ever sets on an object; headers
        # another writer set, such as Cache-Control, are not carried over).
        # A copy onto itself too: AWS refuses one that changes only tags.
        self._rewrite = rewrite_metadata or spec.replace_metadata or spec.source == spec.destination
        self._spec = spec
        self._source = source
        self._options = options
        self._copy_source = copy_source(spec.source)
        self._source_etag = quoted_etag(source.etag)

    @property
    def _destination(self) -> ObjectRef:
        return self._spec.destination

    def _describe(self, etag: str, response: Mapping[str, Any]) -> StoredObject:
        """The copy, from S3's answer to the request that committed it."""
        sums = self._source.checksums
        return described(self._destination, self._options, sums, self._source.size, etag, response)

    async def single(self, *, copy_tags: bool) -> StoredObject:
        """One CopyObject; ``copy_tags``: S3 copies the source's tags."""
        kwargs: dict[str, Any] = dict(conditions(self._options))
        if copy_tags:
            if self._options.storage_class:
                kwargs["StorageClass"] = self._options.storage_class
        else:
            kwargs["TaggingDirective"] = "REPLACE"
            kwargs.update(write_args(self._options))
            kwargs.setdefault("Tagging", "")  # REPLACE with none: no tags
        if self._rewrite:
            kwargs["MetadataDirective"] = "REPLACE"
            kwargs["ContentType"] = self._options.content_type
            kwargs["Metadata"] = stored_metadata(self._options, self._source.checksums)
        else:
            kwargs["MetadataDirective"] = "COPY"
        ref = self._destination
        with s3_errors(ref):
            response = await self._connection.transfers.copy_object(
                Bucket=ref.bucket,
                Key=ref.key,
                CopySource=self._copy_source,  # type: ignore[arg-type]
                CopySourceIfMatch=self._source_etag,
                **kwargs,
            )
        return self._describe(response["CopyObjectResult"].get("ETag", ""), response)

    async def multipart(self) -> StoredObject:
        """A multipart upload whose parts are ranges of the source; aborted
        on any failure."""
        ref = self._destination
        client = self._connection.client
        upload_id = await create_multipart(client, ref, self._options)
        self._connection.writing.add(upload_id)
        try:
            parts = await self._copy_parts(upload_id)
            if self._options.if_match:
                # Not every S3-compatible store honours If-Match on completion.
                await check_preconditions(client, ref, self._options)
            with s3_errors(ref):
                response = await self._connection.transfers.complete_multipart_upload(
                    Bucket=ref.bucket,
                    Key=ref.key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                    **conditions(self._options),  # type: ignore[arg-type]
                )
        except BaseException:
            await asyncio.shield(abort_multipart(client, ref, upload_id))
            raise
        finally:
            self._connection.writing.discard(upload_id)
        return self._describe(response["ETag"], response)

    def _ranges(self) -> list[tuple[int, int]]:
        size = self._source.size
        part = max(self._connection.config.part_size, -(-size // MAX_PARTS))
        part = min(part, MAX_PART)
        return [(start, min(start + part, size)) for start in range(0, size, part)]

    async def _copy_parts(self, upload_id: str) -> list[dict[str, Any]]:
        slots = asyncio.Semaphore(self._connection.config.parts_in_flight)
        ref = self._destination

        async def copy_part(number: int, start: int, end: int) -> dict[str, Any]:
            async with slots:
                with s3_errors(ref):
                    response = await self._connection.transfers.upload_part_copy(
                        Bucket=ref.bucket,
                        Key=ref.key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource=self._copy_source,  # type: ignore[arg-type]
                        CopySourceIfMatch=self._source_etag,
                        CopySourceRange=f"bytes={start}-{end - 1}",
                    )
            return {"PartNumber": number, "ETag": response["CopyPartResult"].get("ETag", "")}

        tasks = [
            asyncio.create_task(copy_part(number, start, end))
            for number, (start, end) in enumerate(self._ranges(), start=1)
        ]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
