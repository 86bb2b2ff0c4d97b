"""The StorageService handlers: validate, adapt the stream, call the store,
map the result. Errors are translated by ``blobgate.server.rpc.status_codes``."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc.aio import ServicerContext

from blobgate.server.errors import InvalidArgument, OutOfRange
from blobgate.server.rpc import page_token, status_codes
from blobgate.server.rpc import upload_id as upload_id_codec
from blobgate.server.rpc.upload_stream import (
    UploadMessage,
    UploadStream,
    check_spec,
    expected_checksums,
)
from blobgate.server.rpc.validation import (
    BucketPolicy,
    guess_content_type,
    validate_content_type,
    validate_etag,
    validate_listing,
    validate_metadata,
)
from blobgate.server.settings import Settings
from blobgate.server.storage.limits import StreamLimit
from blobgate.server.storage.protocols import (
    ByteRange,
    ObjectStore,
    PresignMethod,
    PutOptions,
    SessionSpec,
    SessionStore,
    StoredObject,
)
from blobgate.v1 import storage_pb2, storage_pb2_grpc

pb = storage_pb2
Context = ServicerContext[object, object]

DOWNLOAD_CHUNK = 1024 * 1024
UPLOAD_ACCEPTED_KEY = "blobgate-upload"
MAX_PAGE_SIZE = 1000
DEFAULT_EXPIRY = timedelta(minutes=15)
MIN_EXPIRY = timedelta(seconds=1)
MAX_EXPIRY = timedelta(days=7)
_NS_PER_SECOND = 10**9
_METHODS = {pb.HTTP_METHOD_GET: PresignMethod.GET, pb.HTTP_METHOD_PUT: PresignMethod.PUT}


def object_message(info: StoredObject) -> storage_pb2.Object:
    """The wire form of an StoredObject."""
    message = pb.Object(
        bucket=info.bucket,
        key=info.key,
        size=info.size,
        etag=info.etag,
        content_type=info.content_type or guess_content_type(info.key),
        metadata=dict(info.metadata),
    )
    if info.last_modified is not None:
        message.last_modified.FromDatetime(info.last_modified)
    if info.checksums.sha256 is not None:
        message.checksums.sha256 = info.checksums.sha256
    if info.checksums.crc32c is not None:
        message.checksums.crc32c = info.checksums.crc32c
    return message


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_DATA_TAG = b"\x12"  # DownloadResponse.data: field 2, length-delimited


def encoded_data_message(pieces: list[bytes]) -> bytes:
    """The wire form of ``DownloadResponse(data=b"".join(pieces))``, built with
    one copy of the bytes. Building the message object and serialising it
    would copy each chunk three times, the largest cost of a download."""
    size = sum(len(piece) for piece in pieces)
    return b"".join([_DATA_TAG, _varint(size), *pieces])


def _download_serializer(message: storage_pb2.DownloadResponse | bytes) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def _parser(message: Any) -> Callable[[bytes], Any]:
    """A request deserializer that returns an InvalidArgument in place of a
    request it cannot decode (gRPC itself would answer UNKNOWN); the handler
    wrappers in blobgate.server.rpc.status_codes and UploadStream raise it."""

    def parse(raw: bytes) -> Any:
        try:
            return message.FromString(raw)
        except DecodeError as exc:
            return InvalidArgument(f"the request is not a valid {message.DESCRIPTOR.name}: {exc}")

    return parse


_parse_upload_request = _parser(pb.UploadRequest)
_UPLOAD_DATA_TAG = 0x12  # UploadRequest.data: field 2, length-delimited
_MAX_LENGTH_BYTES = 5  # a varint of 5 bytes holds any length protobuf allows (< 2 GiB)


def _upload_request(raw: bytes) -> UploadMessage:
    """The Upload deserializer. A message that is exactly one ``data`` field
    (its tag, a varint length, then that many bytes to the end: every data
    message a client normally sends) becomes a memoryview of its payload in
    ``raw``, with no copy. Parsing it into an UploadRequest and reading
    ``.data`` would hold two more copies of the payload while the stream
    waits for budget. Anything else (spec, resume, unknown fields, repeated
    or malformed fields) goes through protobuf, whose result for a data-only
    message would be the same bytes."""
    if len(raw) > 1 and raw[0] == _UPLOAD_DATA_TAG:
        length = shift = 0
        for at in range(1, min(len(raw), 1 + _MAX_LENGTH_BYTES)):
            byte = raw[at]
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                if at + 1 + length == len(raw):
                    return memoryview(raw)[at + 1 :]
                break
            shift += 7
    parsed: storage_pb2.UploadRequest | InvalidArgument = _parse_upload_request(raw)
    return parsed


def add_to_server(servicer: StorageServicer, server: grpc.aio.Server) -> None:
    """Register the StorageService: the generated registration's table, except
    that Upload's data messages are not parsed into UploadRequests (see
    _upload_request) and Download's data messages arrive already encoded."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Upload": grpc.stream_unary_rpc_method_handler(
            servicer.Upload, _upload_request, pb.UploadResponse.SerializeToString
        ),
        "Download": grpc.unary_stream_rpc_method_handler(
            servicer.Download, _parser(pb.DownloadRequest), _download_serializer
        ),
        "Stat": grpc.unary_unary_rpc_method_handler(
            servicer.Stat, _parser(pb.StatRequest), pb.StatResponse.SerializeToString
        ),
        "List": grpc.unary_unary_rpc_method_handler(
            servicer.List, _parser(pb.ListRequest), pb.ListResponse.SerializeToString
        ),
        "Presign": grpc.unary_unary_rpc_method_handler(
            servicer.Presign, _parser(pb.PresignRequest), pb.PresignResponse.SerializeToString
        ),
        "Delete": grpc.unary_unary_rpc_method_handler(
            servicer.Delete, _parser(pb.DeleteRequest), pb.DeleteResponse.SerializeToString
        ),
        "StartResumableUpload": grpc.unary_unary_rpc_method_handler(
            servicer.StartResumableUpload,
            _parser(pb.StartResumableUploadRequest),
            pb.StartResumableUploadResponse.SerializeToString,
        ),
        "QueryUploadStatus": grpc.unary_unary_rpc_method_handler(
            servicer.QueryUploadStatus,
            _parser(pb.QueryUploadStatusRequest),
            pb.QueryUploadStatusResponse.SerializeToString,
        ),
        "CancelResumableUpload": grpc.unary_unary_rpc_method_handler(
            servicer.CancelResumableUpload,
            _parser(pb.CancelResumableUploadRequest),
            pb.CancelResumableUploadResponse.SerializeToString,
        ),
    }
    name = pb.DESCRIPTOR.services_by_name["StorageService"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)


class StorageServicer(storage_pb2_grpc.StorageServiceServicer):
    """blobgate.v1.StorageService over any ObjectStore."""

    def __init__(self, store: ObjectStore, sessions: SessionStore, settings: Settings) -> None:
        self._store = store
        self._sessions = sessions
        self._session_expiry = timedelta(seconds=settings.session_expiry)
        self._buckets = BucketPolicy(settings.default_bucket, settings.buckets)
        self._max_size = settings.object_size_limit
        self._streams = StreamLimit(settings.max_streams)

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
        return SessionSpec(ref, options, spec.size if spec.HasField("size") else None)

    def _session_handle(self, upload_id: str) -> tuple[str, str]:
        bucket, session_id = upload_id_codec.decode(upload_id)
        return self._buckets.resolve(bucket), session_id

    @status_codes.unary
    async def Upload(
        self, request_iterator: AsyncIterable[UploadMessage], context: Context
    ) -> storage_pb2.UploadResponse:
        # Initial metadata tells the client that the spec was accepted, once
        # the store starts reading data: see Upload in the proto.
        stream = UploadStream(
            request_iterator,
            self._max_size,
            lambda: context.send_initial_metadata(((UPLOAD_ACCEPTED_KEY, "accepted"),)),
        )
        first = await stream.read_first()
        if isinstance(first, pb.UploadResume):
            return await self._resume(stream, first)
        target = self._session_spec(first)
        async with self._streams.slot():
            info = await self._store.put(
                target.ref, stream.chunks(), target.options, stream.checksums
            )
        return pb.UploadResponse(object=object_message(info))

    async def _resume(
        self, stream: UploadStream, resume: storage_pb2.UploadResume
    ) -> storage_pb2.UploadResponse:
        session = await self._sessions.open_session(*self._session_handle(resume.upload_id))
        if resume.write_offset != session.persisted_size:
            raise OutOfRange(
                f"write_offset {resume.write_offset} is not where the session resumes: "
                f"send from its persisted size, {session.persisted_size}"
            )
        stream.resume_at(session.persisted_size, session.spec.size)
        async with self._streams.slot():
            info = await self._sessions.resume_session(session, stream.chunks())
        return pb.UploadResponse(object=object_message(info))

    @status_codes.unary
    async def StartResumableUpload(
        self, request: storage_pb2.StartResumableUploadRequest, context: Context
    ) -> storage_pb2.StartResumableUploadResponse:
        check_spec(request.spec, self._max_size)
        session = await self._sessions.start_session(self._session_spec(request.spec))
        response = pb.StartResumableUploadResponse(
            upload_id=upload_id_codec.encode(session.bucket, session.session_id),
            part_size=session.part_size,
        )
        response.expires_after_idle.FromTimedelta(self._session_expiry)
        return response

    @status_codes.unary
    async def QueryUploadStatus(
        self, request: storage_pb2.QueryUploadStatusRequest, context: Context
    ) -> storage_pb2.QueryUploadStatusResponse:
        session = await self._sessions.open_session(*self._session_handle(request.upload_id))
        return pb.QueryUploadStatusResponse(persisted_size=session.persisted_size)

    @status_codes.unary
    async def CancelResumableUpload(
        self, request: storage_pb2.CancelResumableUploadRequest, context: Context
    ) -> storage_pb2.CancelResumableUploadResponse:
        await self._sessions.cancel_session(*self._session_handle(request.upload_id))
        return pb.CancelResumableUploadResponse()

    @status_codes.streaming
    async def Download(
        self, request: storage_pb2.DownloadRequest, context: Context
    ) -> AsyncIterator[storage_pb2.DownloadResponse]:
        ref = self._buckets.ref(request.bucket, request.key)
        if request.limit < 0:
            raise InvalidArgument(f"limit {request.limit} is negative: use 0 to read to the end")
        byte_range = ByteRange(offset=request.offset, limit=request.limit)
        async with self._streams.slot():
            reader = await self._store.open(ref, byte_range, validate_etag(request.if_match))
            try:
                yield pb.DownloadResponse(object=object_message(reader.info))
                async for pieces in reader.chunks(DOWNLOAD_CHUNK):
                    yield encoded_data_message(pieces)  # type: ignore[misc]
            finally:
                await reader.close()

    @status_codes.unary
    async def Stat(
        self, request: storage_pb2.StatRequest, context: Context
    ) -> storage_pb2.StatResponse:
        info = await self._store.head(self._buckets.ref(request.bucket, request.key))
        return pb.StatResponse(object=object_message(info))

    @status_codes.unary
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
        s3_token = page_token.decode(request.page_token, bucket, request.prefix, request.delimiter)
        page = await self._store.list_page(
            bucket, request.prefix, request.delimiter, request.page_size or MAX_PAGE_SIZE, s3_token
        )
        return pb.ListResponse(
            objects=[object_message(info) for info in page.objects],
            common_prefixes=page.common_prefixes,
            next_page_token=page_token.encode(
                bucket, request.prefix, request.delimiter, page.next_token
            ),
        )

    @status_codes.unary
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
        seconds = int(expires_in.total_seconds())
        issued = datetime.now(UTC)
        signed = await self._store.presign(ref, method, seconds, content_type)
        response = pb.PresignResponse(url=signed.url, method=request.method, headers=signed.headers)
        response.expires_at.FromDatetime(issued + timedelta(seconds=seconds))
        return response

    @status_codes.unary
    async def Delete(
        self, request: storage_pb2.DeleteRequest, context: Context
    ) -> storage_pb2.DeleteResponse:
        ref = self._buckets.ref(request.bucket, request.key)
        await self._store.delete(ref, validate_etag(request.if_match))
        return pb.DeleteResponse()
