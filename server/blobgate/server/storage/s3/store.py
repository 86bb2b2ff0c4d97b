"""The ObjectStore on S3.

An upload that never fills a part goes up with one PutObject; the first whole
part starts a multipart upload (``commit``). Every store path hashes what it
reads (``Hasher``) and checks it against what the client vouched for before
anything is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from blobgate.server.core.errors import (
    BucketNotFound,
    FailedPrecondition,
    NotFound,
    OutOfRange,
    ServiceError,
    if_match_failed,
)
from blobgate.server.core.identity import current_principal
from blobgate.server.storage.byte_budget import ByteBudget, Claim
from blobgate.server.storage.checksums import Hasher, crc32c_to_s3, verify
from blobgate.server.storage.protocols import (
    ByteRange,
    Chunk,
    ContentChecksums,
    CopySpec,
    DeleteEntry,
    DeleteResult,
    DirectRead,
    ListPage,
    ObjectRef,
    PresignedRequest,
    PresignMethod,
    PutOptions,
    StoredObject,
)
from blobgate.server.storage.s3.batch_delete import batch_delete
from blobgate.server.storage.s3.commit import (
    abort_multipart,
    complete_multipart,
    create_multipart,
    described,
)
from blobgate.server.storage.s3.connection import S3Connection
from blobgate.server.storage.s3.copy import copy_object
from blobgate.server.storage.s3.direct import direct_read
from blobgate.server.storage.s3.errors import s3_errors
from blobgate.server.storage.s3.listing import Lister
from blobgate.server.storage.s3.metadata import (
    bare_etag,
    conditions,
    quoted_etag,
    stored_metadata,
    stored_object,
)
from blobgate.server.storage.s3.parts import PartBody, PartUploader, cut_parts
from blobgate.server.storage.s3.preconditions import check_preconditions, precondition_failed
from blobgate.server.storage.s3.reader import EmptyReader, S3Reader, range_header, total_size
from blobgate.server.storage.s3.sha256_records import (
    describe,
    flag_of,
    new_tag,
    with_record,
    with_stored_crc32c,
)
from blobgate.server.storage.s3.tagging import get_tags, set_tags, write_args
from blobgate.server.storage.s3.versions import deleted, list_versions, version_args

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


class S3Store:
    """ObjectStore on an S3Connection; upload buffers share ``budget``."""

    def __init__(self, connection: S3Connection, budget: ByteBudget) -> None:
        self._connection = connection
        self._part_size = connection.config.part_size
        self._in_flight = connection.config.parts_in_flight
        self.budget = budget

    @property
    def _client(self) -> S3Client:
        return self._connection.client

    @property
    def _transfers(self) -> S3Client:
        return self._connection.transfers

    async def check(self) -> None:
        await self._connection.check()

    # --- writes ------------------------------------------------------------

    async def put(
        self, ref: ObjectRef, body: AsyncIterable[Chunk], options: PutOptions
    ) -> StoredObject:
        if options.if_none_match or options.if_match:
            # Checked before the first byte is read, so before the Upload is
            # accepted: a refusal ends the call while the client waits for
            # that, not mid-write (where gRPC may lose the status). The
            # conditional headers of the write that commits (PutObject or
            # CompleteMultipartUpload) stay the check that races cannot pass.
            await check_preconditions(self._client, ref, options)
        hasher = Hasher()
        uploader: PartUploader | None = None
        final: tuple[PartBody, Claim] | None = None
        full_object = self._connection.full_object_checksums
        record_tag = ""
        crc = 0
        cut = cut_parts(body, self._part_size, self.budget, current_principal())
        try:
            async for part, reserved in cut:
                crc = hasher.update_part(part.views)
                if part.tell() < self._part_size:
                    final = (part, reserved)  # the last part: the stream ended
                    continue
                if uploader is None:
                    if full_object and options.known.sha256 is None:
                        record_tag = new_tag()
                    uploader = await self._start_multipart(ref, options, reserved, record_tag)
                await uploader.submit(part, reserved, crc if full_object else None)
            assert final is not None
            part, reserved = final
            sums = hasher.checksums()
            verify(options.known, sums)
            if uploader is None:
                return await self._put_single(ref, part, options, sums)
            if part.tell():
                final = None
                await uploader.submit(part, reserved, crc if full_object else None)
            parts = await uploader.finish()
            return await complete_multipart(
                self._transfers,
                ref,
                uploader.upload_id,
                parts,
                options,
                sums,
                uploader.size,
                full_object=full_object,
                record_tag=record_tag,
                control=self._client,
                deletes=self._connection.conditional_deletes,
            )
        except BaseException:
            if uploader is not None:
                await uploader.cancel()
                await asyncio.shield(abort_multipart(self._client, ref, uploader.upload_id))
            raise
        finally:
            if final is not None:
                final[1].release()
            if uploader is not None:
                self._connection.writing.discard(uploader.upload_id)

    async def _start_multipart(
        self, ref: ObjectRef, options: PutOptions, reserved: Claim, record_tag: str
    ) -> PartUploader:
        try:
            upload_id = await create_multipart(
                self._client,
                ref,
                options,
                full_object=self._connection.full_object_checksums,
                record_tag=record_tag,
            )
        except BaseException:
            reserved.release()
            raise
        self._connection.writing.add(upload_id)
        return PartUploader(
            self._transfers, ref, upload_id, self._in_flight, shares=self._connection.shares
        )

    async def _put_single(
        self, ref: ObjectRef, part: PartBody, options: PutOptions, sums: ContentChecksums
    ) -> StoredObject:
        """One PutObject, the whole request: S3 enforces the preconditions
        (conditional headers) and its answer describes the object."""
        size = part.tell()
        part.seek(0)
        checksum: dict[str, Any] = {}
        if self._connection.full_object_checksums and sums.crc32c is not None:
            checksum["ChecksumCRC32C"] = crc32c_to_s3(sums.crc32c)  # S3 verifies the bytes
        try:
            with s3_errors(ref):
                async with self._connection.shares.holding():
                    response = await self._transfers.put_object(
                        Bucket=ref.bucket,
                        Key=ref.key,
                        Body=part,  # type: ignore[arg-type]  # file-like: read, seek, tell
                        ContentType=options.content_type,
                        Metadata=stored_metadata(options, sums),
                        **conditions(options),  # type: ignore[arg-type]
                        **write_args(options),
                        **checksum,
                    )
        except BucketNotFound:
            raise
        except (FailedPrecondition, NotFound) as exc:  # If-Match on a missing key: 404
            if not (options.if_none_match or options.if_match):
                raise
            raise precondition_failed(ref, options) from exc
        return described(ref, options, sums, size, response["ETag"], response)

    async def delete(self, ref: ObjectRef, if_match: str) -> DeleteResult:
        if if_match:
            # The HEAD also where S3 takes If-Match: a store that ignored it
            # would delete any version.
            await check_preconditions(self._client, ref, PutOptions("", {}, if_match=if_match))
            deletes = self._connection.conditional_deletes
            response = await deletes.delete(self._client, ref, if_match, checked=True)
            return deleted(ref, response)
        try:
            with s3_errors(ref):
                response = await self._client.delete_object(
                    Bucket=ref.bucket, Key=ref.key, **version_args(ref)
                )
        except BucketNotFound:
            raise
        except NotFound:
            return DeleteResult()  # deleting a missing key is OK (S3 semantics)
        return deleted(ref, response)

    async def copy(self, spec: CopySpec) -> StoredObject:
        return await copy_object(self._connection, spec)

    async def batch_delete(
        self, bucket: str, entries: Sequence[DeleteEntry]
    ) -> list[ServiceError | None]:
        return await batch_delete(self._client, bucket, entries)

    # --- reads -------------------------------------------------------------

    async def head(self, ref: ObjectRef) -> StoredObject:
        return await describe(self._client, ref)

    async def list_versions(
        self, bucket: str, prefix: str, delimiter: str, page_size: int, token: str
    ) -> ListPage:
        return await list_versions(self._client, bucket, prefix, delimiter, page_size, token)

    async def open(
        self, ref: ObjectRef, byte_range: ByteRange, if_match: str
    ) -> S3Reader | EmptyReader:
        # ChecksumMode: S3's own CRC32C of the object, for what the metadata lacks.
        kwargs: dict[str, Any] = {
            "Bucket": ref.bucket,
            "Key": ref.key,
            "ChecksumMode": "ENABLED",
            **version_args(ref),
        }
        header = range_header(byte_range)
        if header:
            kwargs["Range"] = header
        if if_match:
            kwargs["IfMatch"] = quoted_etag(if_match)
        # The GET holds one of its principal's places on the transfers pool
        # until the reader is closed, as it holds the connection.
        release = await self._connection.shares.take()
        try:
            try:
                with s3_errors(ref):
                    response = await self._transfers.get_object(**kwargs)
            except OutOfRange:
                release()
                return await self._empty_or_out_of_range(ref, byte_range, if_match)
            info = stored_object(ref, response, total_size(response))
            tag = flag_of(response.get("Metadata", {}))
            try:
                if tag:  # an undeclared sha256, in a record beside the object
                    info = await with_record(self._client, info, tag)
                if header and info.checksums.crc32c is None:
                    info = await with_stored_crc32c(self._client, info)
            except BaseException:
                response["Body"].close()
                raise
        except BaseException:
            release()
            raise
        limit = byte_range.limit if byte_range.offset < 0 and byte_range.limit else -1
        return S3Reader(
            info,
            response["Body"],
            limit,
            ref,
            read_timeout=self._connection.config.read_timeout,
            on_close=release,
        )

    async def direct_read(
        self, ref: ObjectRef, byte_range: ByteRange, if_match: str, expires_in: int
    ) -> DirectRead | None:
        return await direct_read(self._connection, ref, byte_range, if_match, expires_in)

    async def _empty_or_out_of_range(
        self, ref: ObjectRef, byte_range: ByteRange, if_match: str
    ) -> EmptyReader:
        """S3 refuses ranges that select no bytes; reading at the very end
        (or anything of an empty object) is still a valid, empty read."""
        info = await self.head(ref)
        if if_match and info.etag != bare_etag(if_match):
            raise if_match_failed()
        start = (
            byte_range.offset if byte_range.offset >= 0 else max(0, info.size + byte_range.offset)
        )
        if start <= info.size:
            return EmptyReader(info)
        raise OutOfRange(
            f"offset {byte_range.offset} is past the end of {ref.key!r} ({info.size} bytes)"
        )

    async def list_page(
        self, bucket: str, prefix: str, delimiter: str, page_size: int, token: str
    ) -> ListPage:
        # The gateway's own records are not the caller's objects, nor do
        # they shape its pages (storage.s3.listing).
        return await Lister(self._client, bucket, prefix, delimiter).page(page_size, token)

    async def get_tags(self, ref: ObjectRef) -> dict[str, str]:
        return await get_tags(self._client, ref)

    async def set_tags(
        self, ref: ObjectRef, tags: Mapping[str, str], if_match: str
    ) -> StoredObject:
        return await set_tags(self._client, ref, tags, if_match)

    async def presign(
        self, ref: ObjectRef, method: PresignMethod, expires_in: int, content_type: str
    ) -> PresignedRequest:
        params: dict[str, str] = {"Bucket": ref.bucket, "Key": ref.key, **version_args(ref)}
        headers: dict[str, str] = {}
        if method is PresignMethod.PUT:
            params["ContentType"] = content_type
            headers["Content-Type"] = content_type
        operation = "put_object" if method is PresignMethod.PUT else "get_object"
        with s3_errors(ref):
            url = await self._connection.signer.generate_presigned_url(
                operation, Params=params, ExpiresIn=expires_in
            )
        return PresignedRequest(url=url, headers=headers)
