"""The StorageService handlers, thin: validate, adapt the stream, call the
store, map the result. Errors become statuses in one place, the error
interceptor (``rpc.status_codes``); wire forms are in ``rpc.codecs``; limits
and other cross-cutting concerns wrap the stores (``storage.factory``).
Upload and Download hand their call's access record (``rpc.access_log``) to
what fills it in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial

import grpc
from grpc.aio import ServicerContext

from blobgate.server.core.errors import (
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    OutOfRange,
    StreamIdle,
)
from blobgate.server.core.settings import Settings
from blobgate.server.rpc import page_token
from blobgate.server.rpc import upload_id as upload_id_codec
from blobgate.server.rpc.access_log import CallRecord, call_record
from blobgate.server.rpc.codecs import encoded_data_message, object_message
from blobgate.server.rpc.copy_and_batch_delete import (
    batch_delete_entries,
    batch_delete_results,
    copy_spec,
)
from blobgate.server.rpc.direct import DirectDownloads
from blobgate.server.rpc.direct_upload import DirectUploads
from blobgate.server.rpc.page_token_key import PageTokenKey
from blobgate.server.rpc.tags import check_copy_tags, set_tags, with_tagging
from blobgate.server.rpc.upload_stream import (
    UploadMessage,
    UploadStream,
    check_spec,
    expected_checksums,
)
from blobgate.server.rpc.validation import (
    BucketPolicy,
    validate_content_type,
    validate_etag,
    validate_listing,
    validate_metadata,
)
from blobgate.server.rpc.versions import versioned
from blobgate.server.storage.protocols import (
    PROXIED_ONLY,
    ByteRange,
    ObjectStore,
    PresignMethod,
    PutOptions,
    SessionSpec,
    SessionStore,
)
from blobgate.shared.wire import UPLOAD_ACCEPTED, UPLOAD_ACCEPTED_KEY
from blobgate.v1 import storage_pb2, storage_pb2_grpc

pb = storage_pb2
Context = ServicerContext[object, object]

DOWNLOAD_CHUNK = 1024 * 1024
MAX_PAGE_SIZE = 1000
DEFAULT_EXPIRY = timedelta(minutes=15)
MIN_EXPIRY = timedelta(seconds=1)
MAX_EXPIRY = timedelta(days=7)
_NS_PER_SECOND = 10**9
_METHODS = {pb.HTTP_METHOD_GET: PresignMethod.GET, pb.HTTP_METHOD_PUT: PresignMethod.PUT}


class StorageServicer(storage_pb2_grpc.StorageServiceServicer):
    """blobgate.v1.StorageService over any ObjectStore."""

    def __init__(
        self,
        store: ObjectStore,
        sessions: SessionStore,
        settings: Settings,
        page_token_key: PageTokenKey,
    ) -> None:
        self._store = store
        self._sessions = sessions
        self._page_token_key = page_token_key
        self._session_expiry = timedelta(seconds=settings.session_expiry)
        self._buckets = BucketPolicy(
            settings.default_bucket,
            settings.buckets,
            deferred=settings.auth_policy_file is not None,  # storage.authorization refuses
        )
        self._max_size = settings.object_size_limit
        self._idle_timeout = settings.stream_idle_timeout
        self._direct: DirectDownloads | None = None
        if settings.direct_transfers:
            self._direct = DirectDownloads(store, settings.direct_url_lifetime)
        self._direct_uploads = DirectUploads(
            sessions,
            self._buckets.resolve,
            self._max_size,
            settings.direct_url_lifetime,
            enabled=settings.direct_transfers,
        )
        self._expiry_days = settings.expiry_days_allowed

    def _session_spec(self, spec: storage_pb2.UploadSpec) -> SessionSpec:
        """Where and how to store what an UploadSpec describes."""
        ref = self._buckets.ref(spec.bucket, spec.key)
        if spec.if_none_match and spec.if_match:
            raise InvalidArgument("set if_none_match or if_match, not both")
        options = PutOptions(
            content_type=validate_content_type(spec.content_type, ref.key),
            metadata=validate_metadata(spec.metadata),
            if_none_match=spec.if_none_match,
            if_match=validate_etag(spec.if_match),
            known=expected_checksums(spec.expected),
        )
        options = with_tagging(
            options, spec.tags, spec.storage_class, spec.expire_days, self._expiry_days
        )
        return SessionSpec(ref, options, spec.size if spec.HasField("size") else None)

    def _session_handle(self, upload_id: str) -> tuple[str, str]:
        bucket, session_id = upload_id_codec.decode(upload_id)
        return self._buckets.resolve(bucket), session_id

    async def Upload(
        self, request_iterator: AsyncIterable[UploadMessage], context: Context
    ) -> storage_pb2.UploadResponse:
        record = call_record()
        # Initial metadata tells the client that the spec was accepted, once
        # the store starts reading data: see Upload in the proto.
        stream = UploadStream(
            request_iterator,
            self._max_size,
            lambda: context.send_initial_metadata(((UPLOAD_ACCEPTED_KEY, UPLOAD_ACCEPTED),)),
            idle_timeout=self._idle_timeout,
            record=record,
        )
        first = await stream.read_first()
        if isinstance(first, pb.UploadResume):
            return await self._resume(stream, first, record)
        target = self._session_spec(first)
        info = await self._store.put(target.ref, stream.chunks(), target.options)
        record.version_id = info.version_id
        return pb.UploadResponse(object=object_message(info))

    async def _resume(
        self, stream: UploadStream, resume: storage_pb2.UploadResume, record: CallRecord
    ) -> storage_pb2.UploadResponse:
        session = await self._sessions.open_session(*self._session_handle(resume.upload_id))
        record.bucket, record.key = session.spec.ref.bucket, session.spec.ref.key
        if session.direct:
            raise FailedPrecondition(PROXIED_ONLY)
        if resume.write_offset != session.persisted_size:
            raise OutOfRange(
                f"write_offset {resume.write_offset} is not where the session resumes: "
                f"send from its persisted size, {session.persisted_size}"
            )
        stream.resume_at(session.persisted_size, session.spec.size)
        info = await self._sessions.resume_session(session, stream.chunks())
        record.version_id = info.version_id
        return pb.UploadResponse(object=object_message(info))

    async def StartResumableUpload(
        self, request: storage_pb2.StartResumableUploadRequest, context: Context
    ) -> storage_pb2.StartResumableUploadResponse:
        check_spec(request.spec, self._max_size)
        spec = self._session_spec(request.spec)
        if request.direct and self._direct is not None:  # direct_transfers on
            spec = replace(spec, direct=True)
        session = await self._sessions.start_session(spec)
        response = pb.StartResumableUploadResponse(
            upload_id=upload_id_codec.encode(session.bucket, session.session_id),
            part_size=session.part_size,
            direct=session.direct,
        )
        response.expires_after_idle.FromTimedelta(self._session_expiry)
        return response

    async def PresignUploadPart(
        self, request: storage_pb2.PresignUploadPartRequest, context: Context
    ) -> storage_pb2.PresignUploadPartResponse:
        return await self._direct_uploads.presign(request, call_record())

    async def PresignUploadParts(
        self, request: storage_pb2.PresignUploadPartsRequest, context: Context
    ) -> storage_pb2.PresignUploadPartsResponse:
        return await self._direct_uploads.presign_many(request, call_record())

    async def CompleteDirectUpload(
        self, request: storage_pb2.CompleteDirectUploadRequest, context: Context
    ) -> storage_pb2.CompleteDirectUploadResponse:
        return await self._direct_uploads.complete(request, call_record())

    async def QueryUploadStatus(
        self, request: storage_pb2.QueryUploadStatusRequest, context: Context
    ) -> storage_pb2.QueryUploadStatusResponse:
        session = await self._sessions.open_session(*self._session_handle(request.upload_id))
        persisted = await self._sessions.progress(session)
        return pb.QueryUploadStatusResponse(persisted_size=persisted)

    async def CancelResumableUpload(
        self, request: storage_pb2.CancelResumableUploadRequest, context: Context
    ) -> storage_pb2.CancelResumableUploadResponse:
        await self._sessions.cancel_session(*self._session_handle(request.upload_id))
        return pb.CancelResumableUploadResponse()

    async def Download(self, request: storage_pb2.DownloadRequest, context: Context) -> None:
        # Written with context.write rather than yielded, so that a client
        # that stops reading can be timed out and its S3 connection freed.
        record = call_record()
        ref = versioned(self._buckets.ref(request.bucket, request.key), request.version_id)
        if request.limit < 0:
            raise InvalidArgument(f"limit {request.limit} is negative: use 0 to read to the end")
        byte_range = ByteRange(offset=request.offset, limit=request.limit)
        if_match = validate_etag(request.if_match)
        if request.direct and self._direct is not None:
            send = partial(self._send, context)
            if await self._direct.answer(ref, byte_range, if_match, send, record):
                return
        reader = await self._store.open(ref, byte_range, if_match)
        try:
            await self._send(context, pb.DownloadResponse(object=object_message(reader.info)))
            async for pieces in reader.chunks(DOWNLOAD_CHUNK):
                await self._send(context, encoded_data_message(pieces))
                record.bytes_out += sum(len(piece) for piece in pieces)
        finally:
            await reader.close()

    async def _send(self, context: Context, message: storage_pb2.DownloadResponse | bytes) -> None:
        """Write one Download message, if the client makes room for it within
        the idle timeout (gRPC flow control holds a write until it reads)."""
        try:
            async with asyncio.timeout(self._idle_timeout):
                await context.write(message)
        except TimeoutError:
            raise StreamIdle(
                f"the client read nothing for {self._idle_timeout:g}s: the download was ended"
            ) from None
        except grpc.aio.InternalError:  # core failed the write: the client is gone
            raise Cancelled("the client went away during the download") from None

    async def Stat(
        self, request: storage_pb2.StatRequest, context: Context
    ) -> storage_pb2.StatResponse:
        ref = versioned(self._buckets.ref(request.bucket, request.key), request.version_id)
        info = await self._store.head(ref)
        if request.include_tags:
            info = replace(info, tags=await self._store.get_tags(ref))
        return pb.StatResponse(object=object_message(info))

    async def List(
        self, request: storage_pb2.ListRequest, context: Context
    ) -> storage_pb2.ListResponse:
        bucket = self._buckets.resolve(request.bucket)
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"page_size {request.page_size} is out of range: use 1..{MAX_PAGE_SIZE} "
                f"(0 means {MAX_PAGE_SIZE})"
            )
        validate_listing(request.prefix, request.delimiter)
        # The signing key is read only for a listing of more than one page.
        s3_token = ""
        if request.page_token:
            s3_token = page_token.decode(
                await self._page_token_key.get(),
                request.page_token,
                bucket,
                request.prefix,
                request.delimiter,
                versions=request.versions,
            )
        lister = self._store.list_versions if request.versions else self._store.list_page
        page = await lister(
            bucket, request.prefix, request.delimiter, request.page_size or MAX_PAGE_SIZE, s3_token
        )
        next_page_token = ""
        if page.next_token:
            next_page_token = page_token.encode(
                await self._page_token_key.get(),
                bucket,
                request.prefix,
                request.delimiter,
                page.next_token,
                versions=request.versions,
            )
        return pb.ListResponse(
            objects=[object_message(info) for info in page.objects],
            common_prefixes=page.common_prefixes,
            next_page_token=next_page_token,
        )

    async def Presign(
        self, request: storage_pb2.PresignRequest, context: Context
    ) -> storage_pb2.PresignResponse:
        ref = self._buckets.ref(request.bucket, request.key)
        method = _METHODS.get(request.method)
        if method is None:
            raise InvalidArgument("method must be HTTP_METHOD_GET or HTTP_METHOD_PUT")
        expires_in = DEFAULT_EXPIRY
        if request.HasField("expires_in"):
            # Exact integer nanoseconds: timedelta would overflow on huge values
            # and drop nanoseconds at the 7-day edge.
            given = request.expires_in
            nanos = given.seconds * _NS_PER_SECOND + given.nanos
            bounds = (MIN_EXPIRY, MAX_EXPIRY)
            low, high = (int(b.total_seconds()) * _NS_PER_SECOND for b in bounds)
            if not low <= nanos <= high:
                raise InvalidArgument(
                    f"expires_in {given.seconds}s {given.nanos}ns is out of range: "
                    "use 1 second to 7 days"
                )
            expires_in = timedelta(microseconds=nanos // 1000)
        content_type = ""
        if method is PresignMethod.PUT:
            content_type = validate_content_type(request.content_type, ref.key)
            if request.version_id:
                raise InvalidArgument(
                    "version_id applies to a GET only: a PUT writes a new version"
                )
        ref = versioned(ref, request.version_id)
        seconds = int(expires_in.total_seconds())
        issued = datetime.now(UTC)
        signed = await self._store.presign(ref, method, seconds, content_type)
        response = pb.PresignResponse(url=signed.url, method=request.method, headers=signed.headers)
        response.expires_at.FromDatetime(issued + timedelta(seconds=seconds))
        return response

    async def Delete(
        self, request: storage_pb2.DeleteRequest, context: Context
    ) -> storage_pb2.DeleteResponse:
        ref = versioned(self._buckets.ref(request.bucket, request.key), request.version_id)
        done = await self._store.delete(ref, validate_etag(request.if_match))
        return pb.DeleteResponse(version_id=done.version_id, delete_marker=done.delete_marker)

    async def Copy(
        self, request: storage_pb2.CopyRequest, context: Context
    ) -> storage_pb2.CopyResponse:
        check_copy_tags(request)
        spec = copy_spec(request, self._buckets)
        options = with_tagging(
            spec.options,
            request.tags,
            request.storage_class,
            request.expire_days,
            self._expiry_days,
        )
        spec = replace(spec, options=options, replace_tags=request.replace_tags)
        info = await self._store.copy(spec)
        return pb.CopyResponse(object=object_message(info))

    async def BatchDelete(
        self, request: storage_pb2.BatchDeleteRequest, context: Context
    ) -> storage_pb2.BatchDeleteResponse:
        bucket = self._buckets.resolve(request.bucket)
        entries = batch_delete_entries(request.entries)
        results = await self._store.batch_delete(bucket, entries)
        return pb.BatchDeleteResponse(results=batch_delete_results(entries, results))

    async def SetTags(
        self, request: storage_pb2.SetTagsRequest, context: Context
    ) -> storage_pb2.SetTagsResponse:
        return await set_tags(self._store, self._buckets, request)
