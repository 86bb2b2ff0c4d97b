"""The ObjectStore on S3, through one long-lived aioboto3 client.

Every botocore failure is translated here, once, into a ``blobgate.server.errors``
type. Checksums are stored as user metadata (``sha256`` in hex, ``crc32c``
in decimal) and read back into ``ContentChecksums``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aioboto3
from aiobotocore.config import AioConfig
from aiohttp import ClientPayloadError
from botocore.exceptions import BotoCoreError, ClientError

from blobgate.server.errors import (
    BucketNotFound,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unavailable,
    UploadGone,
)
from blobgate.server.settings import Settings
from blobgate.server.storage.limits import ByteBudget
from blobgate.server.storage.protocols import (
    CRC32C_KEY,
    RESERVED_PREFIX,
    SHA256_KEY,
    ByteRange,
    Chunk,
    ContentChecksums,
    ListPage,
    ObjectRef,
    PresignedRequest,
    PresignMethod,
    PutOptions,
    StoredObject,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

MAX_COPY_SIZE = 5 * 1024**3  # CopyObject's limit

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_UNAVAILABLE = {
    "SlowDown",
    "ServiceUnavailable",
    "503",
    "InternalError",
    "500",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def _translate(exc: Exception, ref: ObjectRef | None, bucket: str) -> ServiceError:
    where = f"{ref.key!r} in bucket {ref.bucket!r}" if ref else f"bucket {bucket!r}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")) or code
        if code == "NoSuchBucket":
            return BucketNotFound(f"bucket {bucket!r} does not exist in S3")
        if code == "NoSuchUpload":
            return UploadGone(f"S3 lost the multipart upload for {where}; try again")
        if code in _NOT_FOUND:
            return NotFound(f"no object {where}")
        if code == "InvalidPart":  # a part was replaced by a concurrent writer
            return FailedPrecondition(
                f"the stored parts of {where} changed while it was being written; "
                "another Upload continued the same session"
            )
        if code in _PRECONDITION:
            return FailedPrecondition(f"precondition failed for {where}")
        if code == "InvalidRange" or code == "416":
            return OutOfRange(f"range not satisfiable for {where}")
        if code in _UNAVAILABLE:
            return Unavailable(f"S3 is unavailable ({code}: {message}); retry later")
        if code in _DENIED:
            return PermissionDenied(
                f"S3 refused the gateway access to {where} ({code}); "
                "check the gateway's credentials"
            )
        if code == "EntityTooLarge":
            return ResourceExhausted(f"S3 refused {where} as too large")
        if code in {"InvalidArgument", "InvalidRequest", "KeyTooLongError", "InvalidBucketName"}:
            return InvalidArgument(f"S3 rejected the request for {where}: {message}")
        return ServiceError(f"S3 error {code} for {where}: {message}")
    if isinstance(exc, BotoCoreError | asyncio.TimeoutError | OSError | ClientPayloadError):
        return Unavailable(f"S3 is unreachable or timed out ({type(exc).__name__}); retry later")
    return ServiceError(f"unexpected S3 failure for {where}: {type(exc).__name__}")


@contextlib.contextmanager
def s3_errors(ref: ObjectRef | None = None, bucket: str = "") -> Iterator[None]:
    """Translate botocore and transport failures into service errors."""
    try:
        yield
    except ServiceError:
        raise
    except (TimeoutError, ClientError, BotoCoreError, OSError, ClientPayloadError) as exc:
        # aiobotocore leaves aiohttp's error for a body cut short untranslated.
        raise _translate(exc, ref, ref.bucket if ref else bucket) from exc


def _etag(raw: str) -> str:
    return raw.strip('"')


def quoted_etag(etag: str) -> str:
    """ETags as S3 compares them in conditional headers."""
    return f'"{_etag(etag)}"'


def stored_metadata(options: PutOptions, sums: ContentChecksums) -> dict[str, str]:
    metadata = dict(options.metadata)
    if sums.sha256 is not None:
        metadata[SHA256_KEY] = sums.sha256.hex()
    if sums.crc32c is not None:
        metadata[CRC32C_KEY] = str(sums.crc32c)
    return metadata


def _split_metadata(raw: Mapping[str, str]) -> tuple[dict[str, str], ContentChecksums]:
    metadata = {k.lower(): v for k, v in raw.items()}
    sha_hex = metadata.pop(SHA256_KEY, None)
    crc_text = metadata.pop(CRC32C_KEY, None)
    try:
        sha = bytes.fromhex(sha_hex) if sha_hex else None
    except ValueError:
        sha = None
    crc = int(crc_text) if crc_text and crc_text.isdigit() else None
    return metadata, ContentChecksums(sha256=sha, crc32c=crc)


def _info(ref: ObjectRef, response: Mapping[str, Any], size: int) -> StoredObject:
    metadata, sums = _split_metadata(response.get("Metadata", {}))
    last_modified = response.get("LastModified")
    return StoredObject(
        bucket=ref.bucket,
        key=ref.key,
        size=size,
        etag=_etag(response.get("ETag", "")),
        content_type=response.get("ContentType", ""),
        last_modified=last_modified if isinstance(last_modified, datetime) else None,
        metadata=metadata,
        checksums=sums,
    )


def _range_header(byte_range: ByteRange) -> str | None:
    offset, limit = byte_range.offset, byte_range.limit
    if offset < 0:
        return f"bytes={offset}"  # suffix range; a limit is applied while reading
    if limit > 0:
        return f"bytes={offset}-{offset + limit - 1}"
    return f"bytes={offset}-" if offset > 0 else None


def _total_size(response: Mapping[str, Any]) -> int:
    content_range = str(response.get("ContentRange", ""))
    total = content_range.rpartition("/")[2]
    return int(total) if total.isdigit() else int(response.get("ContentLength", 0))


class S3Reader:
    """An open GetObject: its description and a bounded stream of its bytes."""

    def __init__(self, info: StoredObject, body: Any, limit: int, ref: ObjectRef) -> None:
        self.info = info
        self._body = body
        self._remaining = limit  # -1: no limit beyond the requested range
        self._ref = ref

    async def chunks(self, size: int) -> AsyncIterator[list[bytes]]:
        while self._remaining != 0:
            want = size if self._remaining < 0 else min(size, self._remaining)
            pieces: list[bytes] = []
            got = 0
            while got < want:
                with s3_errors(self._ref):
                    piece = await self._body.read(want - got)
                if not piece:
                    break
                pieces.append(piece)
                got += len(piece)
            if not got:
                return
            if self._remaining > 0:
                self._remaining -= got
            yield pieces
            if got < want:
                return

    async def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None


class _EmptyReader:
    def __init__(self, info: StoredObject) -> None:
        self.info = info

    async def chunks(self, size: int) -> AsyncIterator[list[bytes]]:
        return
        yield []  # pragma: no cover - makes this an async generator

    async def close(self) -> None:
        return None


class PartUploader:
    """One multipart upload's parts, at most ``in_flight`` uploading at once.
    ``submit`` waits for a free slot, which is what stops the caller from
    reading more of its stream: the backpressure that bounds memory."""

    def __init__(
        self,
        client: S3Client,
        ref: ObjectRef,
        upload_id: str,
        in_flight: int,
        budget: ByteBudget,
        *,
        first_part: int = 1,
        on_uploaded: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._first_part = first_part
        self._on_uploaded = on_uploaded
        self._budget = budget
        self._ref = ref
        self.upload_id = upload_id
        self._slots = asyncio.Semaphore(in_flight)
        self._tasks: list[asyncio.Task[dict[str, Any]]] = []
        self.submitted = 0
        self.size = 0

    def _raise_if_failed(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def submit(self, part: io.BytesIO, reserved: int) -> None:
        """Upload ``part`` once a slot is free; ``reserved`` bytes of budget
        go back when S3 has it, or at once if it is never sent."""
        try:
            self._raise_if_failed()
            await self._slots.acquire()
        except BaseException:
            await self._budget.release(reserved)
            raise
        try:
            self._raise_if_failed()
        except BaseException:
            self._slots.release()
            await self._budget.release(reserved)
            raise
        self.submitted += 1
        self.size += part.tell()
        part.seek(0)
        number = self._first_part + len(self._tasks)
        self._tasks.append(asyncio.create_task(self._upload(number, part, reserved)))

    async def _upload(self, number: int, part: io.BytesIO, reserved: int) -> dict[str, Any]:
        try:
            with s3_errors(self._ref):
                response = await self._client.upload_part(
                    Bucket=self._ref.bucket,
                    Key=self._ref.key,
                    UploadId=self.upload_id,
                    PartNumber=number,
                    Body=part,
                )
            if self._on_uploaded is not None:
                await self._on_uploaded(number)
            return {"PartNumber": number, "ETag": response["ETag"]}
        finally:
            await self._budget.release(reserved)
            part.close()
            self._slots.release()

    async def finish(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*self._tasks))

    async def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def settle(self, within: float) -> None:
        """Give the parts already on their way ``within`` seconds to land
        (what they store still counts), then cancel whatever is left."""
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=within)
        await self.cancel()


class S3Store:
    """ObjectStore on S3. Use as an async context manager (or ``start`` /
    ``close``): it owns one aioboto3 client, plus a second one for signing
    URLs when a public endpoint is configured."""

    def __init__(self, settings: Settings, credentials: Mapping[str, str] | None = None) -> None:
        self._settings = settings
        self._credentials = dict(credentials or {})
        self._part_size = int(settings.part_size)
        self.budget = ByteBudget(int(settings.memory_budget))
        self._stack = AsyncExitStack()
        # Multipart uploads this instance is writing: never an orphan, whatever
        # date the store gives them (moto dates every upload in 2010).
        self.writing: set[str] = set()
        self._client: S3Client | None = None
        self._signer: S3Client | None = None

    def _config(self) -> AioConfig:
        s = self._settings
        return AioConfig(
            connect_timeout=s.s3_connect_timeout,
            read_timeout=s.s3_read_timeout,
            retries={"total_max_attempts": s.s3_max_attempts, "mode": "standard"},
            max_pool_connections=s.s3_max_connections,
            s3={"addressing_style": s.s3_addressing_style},
            signature_version="s3v4",
            request_checksum_calculation=s.checksum_mode,
            response_checksum_validation=s.checksum_mode,
        )

    async def start(self) -> None:
        session = aioboto3.Session(**self._credentials)
        region = self._settings.s3_region
        make = session.client
        self._client = await self._stack.enter_async_context(
            make(
                "s3",
                endpoint_url=self._settings.s3_endpoint,
                region_name=region,
                config=self._config(),
            )
        )
        self._signer = self._client
        if self._settings.s3_public_endpoint:
            self._signer = await self._stack.enter_async_context(
                make(
                    "s3",
                    endpoint_url=self._settings.s3_public_endpoint,
                    region_name=region,
                    config=self._config(),
                )
            )

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = self._signer = None

    async def __aenter__(self) -> S3Store:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("S3Store used before start()")
        return self._client

    # --- lifecycle helpers -------------------------------------------------

    async def ensure_buckets(self, buckets: list[str]) -> None:
        """Create each missing bucket (the create-buckets setting)."""
        region = self._settings.s3_region or self.client.meta.region_name
        for bucket in buckets:
            try:
                with s3_errors(bucket=bucket):
                    await self.client.head_bucket(Bucket=bucket)
                continue
            except NotFound:
                pass
            kwargs: dict[str, Any] = {"Bucket": bucket}
            if region and region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
            with s3_errors(bucket=bucket):
                await self.client.create_bucket(**kwargs)
            log.info("created bucket %s", bucket)

    async def check(self) -> None:
        bucket = self._settings.default_bucket
        with s3_errors(bucket=bucket):
            await self.client.head_bucket(Bucket=bucket)

    # --- writes ------------------------------------------------------------

    async def check_preconditions(self, ref: ObjectRef, options: PutOptions) -> None:
        """Fail fast, before any data is read; S3 enforces them again at commit."""
        try:
            current = await self.head(ref)
        except NotFound:
            if options.if_match:
                raise FailedPrecondition(
                    f"if_match {options.if_match!r}: there is no object {ref.key!r}"
                ) from None
            return
        if options.if_none_match:
            raise FailedPrecondition(f"if_none_match: object {ref.key!r} already exists")
        if options.if_match and current.etag != _etag(options.if_match):
            raise FailedPrecondition(
                f"if_match {options.if_match!r} does not match {ref.key!r} (etag {current.etag!r})"
            )

    @staticmethod
    def conditions(options: PutOptions) -> dict[str, str]:
        conditions: dict[str, str] = {}
        if options.if_none_match:
            conditions["IfNoneMatch"] = "*"
        if options.if_match:
            conditions["IfMatch"] = quoted_etag(options.if_match)
        return conditions

    async def put(
        self,
        ref: ObjectRef,
        body: AsyncIterable[Chunk],
        options: PutOptions,
        checksums: Callable[[], ContentChecksums],
    ) -> StoredObject:
        if options.if_none_match or options.if_match:
            await self.check_preconditions(ref, options)
        # The first whole part starts a multipart upload; an object that never
        # fills one goes up with a single PutObject.
        uploader: PartUploader | None = None
        final: tuple[io.BytesIO, int] | None = None
        try:
            async for part, reserved in self.cut_parts(body, self._part_size):
                if part.tell() < self._part_size:
                    final = (part, reserved)  # the last part: the stream ended
                    continue
                if uploader is None:
                    try:
                        uploader = await self.create_multipart(ref, options)
                    except BaseException:
                        await self.budget.release(reserved)
                        raise
                    self.writing.add(uploader.upload_id)
                await uploader.submit(part, reserved)
            assert final is not None
            part, reserved = final
            sums = checksums()
            if uploader is None:
                return await self.put_single(ref, part, options, sums)
            if part.tell():
                final = None
                await uploader.submit(part, reserved)
            etag = await self._complete(ref, uploader, options)
        except BaseException:
            if uploader is not None:
                await uploader.cancel()
                await asyncio.shield(self.abort_multipart(ref, uploader.upload_id))
            raise
        finally:
            if final is not None:
                await self.budget.release(final[1])
            if uploader is not None:
                self.writing.discard(uploader.upload_id)
        if options.known.sha256 is None:
            etag = await self.store_checksums(ref, options, sums, etag, uploader.size)
        return await self.committed(ref, options, sums, uploader.size, etag)

    async def cut_parts(
        self, body: AsyncIterable[Chunk], part_size: int
    ) -> AsyncIterator[tuple[io.BytesIO, int]]:
        """Cut ``body`` into parts of ``part_size`` bytes, then one last part
        shorter than that (possibly empty) once ``body`` ends.

        Bytes collect in a BytesIO (aiohttp sends one in small writes, where a
        large bytes body would be copied whole into the socket buffer). Each
        part takes a whole part's worth of the server-wide budget before it is
        filled, and comes with it: the receiver hands both to
        ``PartUploader.submit`` or releases the budget itself. Taking budget
        bit by bit would let two half-filled parts wait on each other forever;
        this way a part being filled waits only on its client.

        A part's budget is taken before the chunk that starts it is read, so
        a stream waiting for budget holds no message of its own (only what
        gRPC's flow-control window lets its client send ahead); and since
        ``body`` tells the client its spec was accepted when first read, a
        client that waits for that sends nothing until its first part has
        budget. A chunk is referenced only while bytes of it are unwritten:
        not while its part waits for an upload slot, nor while the next chunk
        is awaited. The price: a stream that ends exactly on a part boundary
        waits for a part's budget to learn that it ended."""
        chunks = aiter(body)
        part = io.BytesIO()
        reserved = 0  # budget held for the part being filled
        try:
            while True:
                if not reserved:
                    await self.budget.acquire(part_size)
                    reserved = part_size
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                rest: memoryview | None = memoryview(chunk) if len(chunk) else None
                del chunk
                while rest is not None:
                    if not reserved:  # the chunk runs on into the next part
                        await self.budget.acquire(part_size)
                        reserved = part_size
                    room = part_size - part.tell()
                    part.write(rest[:room])
                    rest = rest[room:] if room < len(rest) else None
                    if part.tell() == part_size:
                        handed, reserved = reserved, 0
                        yield part, handed
                        part = io.BytesIO()
            handed, reserved = reserved, 0
            yield part, handed
        finally:
            await self.budget.release(reserved)

    async def put_single(
        self, ref: ObjectRef, part: io.BytesIO, options: PutOptions, sums: ContentChecksums
    ) -> StoredObject:
        size = part.tell()
        part.seek(0)
        with s3_errors(ref):
            response = await self.client.put_object(
                Bucket=ref.bucket,
                Key=ref.key,
                Body=part,
                ContentType=options.content_type,
                Metadata=stored_metadata(options, sums),
                **self.conditions(options),  # type: ignore[arg-type]
            )
        return await self.committed(ref, options, sums, size, response["ETag"])

    async def create_multipart(self, ref: ObjectRef, options: PutOptions) -> PartUploader:
        with s3_errors(ref):
            created = await self.client.create_multipart_upload(
                Bucket=ref.bucket,
                Key=ref.key,
                ContentType=options.content_type,
                Metadata=stored_metadata(options, options.known),
            )
        return PartUploader(
            self.client, ref, created["UploadId"], self._settings.parts_in_flight, self.budget
        )

    async def _complete(self, ref: ObjectRef, uploader: PartUploader, options: PutOptions) -> str:
        parts = await uploader.finish()
        if options.if_match:
            # Not every S3-compatible store honours If-Match on completion.
            await self.check_preconditions(ref, options)
        with s3_errors(ref):
            response = await self.client.complete_multipart_upload(
                Bucket=ref.bucket,
                Key=ref.key,
                UploadId=uploader.upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                **self.conditions(options),  # type: ignore[arg-type]
            )
        return response["ETag"]

    async def abort_multipart(self, ref: ObjectRef, upload_id: str) -> None:
        try:
            await self.client.abort_multipart_upload(
                Bucket=ref.bucket, Key=ref.key, UploadId=upload_id
            )
        except Exception:
            log.warning(
                "could not abort multipart upload %s of %s/%s; a bucket lifecycle rule "
                "(AbortIncompleteMultipartUpload) will remove its parts",
                upload_id,
                ref.bucket,
                ref.key,
                exc_info=True,
            )

    async def store_checksums(
        self, ref: ObjectRef, options: PutOptions, sums: ContentChecksums, etag: str, size: int
    ) -> str:
        """Attach checksums learnt only at the end of a multipart upload by
        copying the object onto itself with new metadata (guarded by its
        etag). Clients that send expected.sha256 up front skip this copy."""
        if size > MAX_COPY_SIZE:
            log.info("%s/%s: too large to copy; checksums not stored", ref.bucket, ref.key)
            return etag
        try:
            response = await self.client.copy_object(
                Bucket=ref.bucket,
                Key=ref.key,
                CopySource={"Bucket": ref.bucket, "Key": ref.key},
                CopySourceIfMatch=quoted_etag(etag),
                MetadataDirective="REPLACE",
                ContentType=options.content_type,
                Metadata=stored_metadata(options, sums),
            )
        except (TimeoutError, ClientError, BotoCoreError, OSError):
            log.warning("%s/%s: could not store checksums", ref.bucket, ref.key, exc_info=True)
            return etag
        return response["CopyObjectResult"].get("ETag", etag)

    async def committed(
        self, ref: ObjectRef, options: PutOptions, sums: ContentChecksums, size: int, etag: str
    ) -> StoredObject:
        """Describe what was just committed; a HEAD supplies LastModified."""
        info = StoredObject(
            bucket=ref.bucket,
            key=ref.key,
            size=size,
            etag=_etag(etag),
            content_type=options.content_type,
            last_modified=None,
            metadata=dict(options.metadata),
            checksums=sums,
        )
        try:
            response = await self.client.head_object(
                Bucket=ref.bucket, Key=ref.key, IfMatch=quoted_etag(etag)
            )
        except (TimeoutError, ClientError, BotoCoreError, OSError):
            return info  # replaced meanwhile, or S3 hiccup: what we wrote is still true
        return replace(info, last_modified=response.get("LastModified"))

    async def delete(self, ref: ObjectRef, if_match: str) -> None:
        kwargs: dict[str, Any] = {}
        if if_match:
            await self.check_preconditions(ref, PutOptions("", {}, if_match=if_match))
            kwargs["IfMatch"] = quoted_etag(if_match)
        try:
            with s3_errors(ref):
                await self.client.delete_object(Bucket=ref.bucket, Key=ref.key, **kwargs)
        except BucketNotFound:
            raise
        except NotFound as exc:
            if if_match:  # gone since the check above
                raise FailedPrecondition(f"if_match: there is no object {ref.key!r}") from exc
            # Deleting a missing key is OK (S3 semantics), however S3 says it.

    # --- reads -------------------------------------------------------------

    async def head(self, ref: ObjectRef) -> StoredObject:
        with s3_errors(ref):
            response = await self.client.head_object(Bucket=ref.bucket, Key=ref.key)
        return _info(ref, response, int(response.get("ContentLength", 0)))

    async def open(
        self, ref: ObjectRef, byte_range: ByteRange, if_match: str
    ) -> S3Reader | _EmptyReader:
        kwargs: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
        header = _range_header(byte_range)
        if header:
            kwargs["Range"] = header
        if if_match:
            kwargs["IfMatch"] = quoted_etag(if_match)
        try:
            with s3_errors(ref):
                response = await self.client.get_object(**kwargs)
        except OutOfRange:
            return await self._empty_or_out_of_range(ref, byte_range, if_match)
        info = _info(ref, response, _total_size(response))
        limit = byte_range.limit if byte_range.offset < 0 and byte_range.limit else -1
        return S3Reader(info, response["Body"], limit, ref)

    async def _empty_or_out_of_range(
        self, ref: ObjectRef, byte_range: ByteRange, if_match: str
    ) -> _EmptyReader:
        """S3 refuses ranges that select no bytes; reading at the very end
        (or anything of an empty object) is still a valid, empty read."""
        info = await self.head(ref)
        if if_match and info.etag != _etag(if_match):
            raise FailedPrecondition(f"if_match {if_match!r} does not match {ref.key!r}")
        start = (
            byte_range.offset if byte_range.offset >= 0 else max(0, info.size + byte_range.offset)
        )
        if start <= info.size:
            return _EmptyReader(info)
        raise OutOfRange(
            f"offset {byte_range.offset} is past the end of {ref.key!r} ({info.size} bytes)"
        )

    async def list_page(
        self, bucket: str, prefix: str, delimiter: str, page_size: int, token: str
    ) -> ListPage:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if token:
            kwargs["ContinuationToken"] = token
        with s3_errors(bucket=bucket):
            response = await self.client.list_objects_v2(**kwargs)
        # The gateway's own records are not the caller's objects.
        objects = [
            StoredObject(
                bucket=bucket,
                key=item["Key"],
                size=int(item.get("Size", 0)),
                etag=_etag(item.get("ETag", "")),
                content_type="",
                last_modified=item.get("LastModified"),
            )
            for item in response.get("Contents", [])
            if not item["Key"].startswith(RESERVED_PREFIX)
        ]
        prefixes = [
            p["Prefix"]
            for p in response.get("CommonPrefixes", [])
            if "Prefix" in p and not p["Prefix"].startswith(RESERVED_PREFIX)
        ]
        next_token = (
            response.get("NextContinuationToken", "") if response.get("IsTruncated") else ""
        )
        return ListPage(objects=objects, common_prefixes=prefixes, next_token=next_token)

    async def presign(
        self, ref: ObjectRef, method: PresignMethod, expires_in: int, content_type: str
    ) -> PresignedRequest:
        if self._signer is None:
            raise RuntimeError("S3Store used before start()")
        params: dict[str, str] = {"Bucket": ref.bucket, "Key": ref.key}
        headers: dict[str, str] = {}
        if method is PresignMethod.PUT:
            params["ContentType"] = content_type
            headers["Content-Type"] = content_type
        operation = "put_object" if method is PresignMethod.PUT else "get_object"
        with s3_errors(ref):
            url = await self._signer.generate_presigned_url(
                operation, Params=params, ExpiresIn=expires_in
            )
        return PresignedRequest(url=url, headers=headers)
