"""The wire forms of StorageService messages, and the method table that
registers the service with its codecs.

Two messages skip protobuf's objects because their copies are the largest
cost per byte: Upload's data messages arrive as views of the received bytes,
and Download's data messages leave already encoded.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from blobgate.server.core.errors import InvalidArgument
from blobgate.server.rpc.upload_stream import UploadMessage
from blobgate.server.rpc.validation import guess_content_type
from blobgate.server.storage.protocols import StoredObject
from blobgate.shared.wire import DATA_TAG, sole_field_payload
from blobgate.v1 import storage_pb2, storage_pb2_grpc

pb = storage_pb2


def object_message(info: StoredObject) -> storage_pb2.Object:
    """The wire form of a StoredObject."""
    message = pb.Object(
        bucket=info.bucket,
        key=info.key,
        size=info.size,
        etag=info.etag,
        content_type=info.content_type or guess_content_type(info.key),
        metadata=dict(info.metadata),
        version_id=info.version_id,
        is_latest=info.is_latest,
        is_delete_marker=info.is_delete_marker,
    )
    if info.is_delete_marker:
        message.content_type = ""  # a marker has no content
    if info.last_modified is not None:
        set_timestamp(message.last_modified, info.last_modified)
    if info.checksums.sha256 is not None:
        message.checksums.sha256 = info.checksums.sha256
    if info.checksums.crc32c is not None:
        message.checksums.crc32c = info.checksums.crc32c
    if info.storage_class:
        message.storage_class = info.storage_class
    if info.tags is not None:
        message.tags.update(info.tags)
    if info.expires_at is not None:
        set_timestamp(message.expires_at, info.expires_at)
    return message


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_timestamp(field: Timestamp, when: datetime) -> None:
    """``field.FromDatetime(when)`` (a naive ``when`` is UTC), by integer
    arithmetic on the difference from the epoch: protobuf's goes through a
    time tuple and ``calendar.timegm``, a few times the cost, once per
    object of every answer."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - _EPOCH
    field.seconds = delta.days * 86400 + delta.seconds
    field.nanos = delta.microseconds * 1000


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_DATA_TAG = bytes([DATA_TAG])  # DownloadResponse.data, as the first byte of a message


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
    request it cannot decode (gRPC itself would answer UNKNOWN); the error
    interceptor (rpc.status_codes) and UploadStream raise it."""

    def parse(raw: bytes) -> Any:
        try:
            return message.FromString(raw)
        except DecodeError as exc:
            return InvalidArgument(f"the request is not a valid {message.DESCRIPTOR.name}: {exc}")

    return parse


_parse_upload_request = _parser(pb.UploadRequest)


def parse_upload_request(raw: bytes) -> UploadMessage:
    """The Upload deserializer. A message that is exactly one ``data`` field
    (its tag, a varint length, then that many bytes to the end: every data
    message a client normally sends) becomes a memoryview of its payload in
    ``raw``, with no copy. Parsing it into an UploadRequest and reading
    ``.data`` would hold two more copies of the payload while the stream
    waits for budget. Anything else (spec, resume, unknown fields, repeated
    or malformed fields) goes through protobuf, whose result for a data-only
    message would be the same bytes."""
    payload = sole_field_payload(raw, DATA_TAG)
    if payload is not None:
        return payload
    parsed: storage_pb2.UploadRequest | InvalidArgument = _parse_upload_request(raw)
    return parsed


def add_to_server(
    servicer: storage_pb2_grpc.StorageServiceServicer, server: grpc.aio.Server
) -> None:
    """Register the StorageService: the generated registration's table, except
    that Upload's data messages are not parsed into UploadRequests (see
    parse_upload_request) and Download's data messages arrive already encoded."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Upload": grpc.stream_unary_rpc_method_handler(
            servicer.Upload, parse_upload_request, pb.UploadResponse.SerializeToString
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
        "PresignUploadPart": grpc.unary_unary_rpc_method_handler(
            servicer.PresignUploadPart,
            _parser(pb.PresignUploadPartRequest),
            pb.PresignUploadPartResponse.SerializeToString,
        ),
        "PresignUploadParts": grpc.unary_unary_rpc_method_handler(
            servicer.PresignUploadParts,
            _parser(pb.PresignUploadPartsRequest),
            pb.PresignUploadPartsResponse.SerializeToString,
        ),
        "CompleteDirectUpload": grpc.unary_unary_rpc_method_handler(
            servicer.CompleteDirectUpload,
            _parser(pb.CompleteDirectUploadRequest),
            pb.CompleteDirectUploadResponse.SerializeToString,
        ),
        "Copy": grpc.unary_unary_rpc_method_handler(
            servicer.Copy, _parser(pb.CopyRequest), pb.CopyResponse.SerializeToString
        ),
        "BatchDelete": grpc.unary_unary_rpc_method_handler(
            servicer.BatchDelete,
            _parser(pb.BatchDeleteRequest),
            pb.BatchDeleteResponse.SerializeToString,
        ),
        "SetTags": grpc.unary_unary_rpc_method_handler(
            servicer.SetTags, _parser(pb.SetTagsRequest), pb.SetTagsResponse.SerializeToString
        ),
    }
    name = pb.DESCRIPTOR.services_by_name["StorageService"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)
