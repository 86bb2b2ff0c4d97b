"""What client and server agree on beyond storage.proto: the initial metadata
that accepts an upload, the request id and trace context in call metadata,
the message size limit, protobuf conversions, and the client's stub, whose
Download takes data messages without protobuf objects."""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf import duration_pb2
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from blobgate.v1 import storage_pb2, storage_pb2_grpc

# Initial metadata by which the server accepts an upload's spec (see Upload
# in protos/blobgate/v1/storage.proto): UPLOAD_ACCEPTED_KEY: UPLOAD_ACCEPTED.
UPLOAD_ACCEPTED_KEY = "blobgate-upload"
UPLOAD_ACCEPTED = "accepted"

# The id the server gives every call, in the call's trailing metadata (and in
# its access log line); a caller may propose one with the same key.
REQUEST_ID_KEY = "x-request-id"

# W3C trace context (``traceparent``, ``tracestate``): how a call joins the
# caller's trace.
TRACE_CONTEXT = TraceContextTextMapPropagator()


def call_metadata() -> tuple[tuple[str, str], ...] | None:
    """The metadata every call sends: the trace context of the current span,
    when there is one (None otherwise, the cheap case)."""
    carrier: dict[str, str] = {}
    TRACE_CONTEXT.inject(carrier)
    return tuple(carrier.items()) if carrier else None


MAX_MESSAGE_SIZE = 8 * 1024 * 1024
ChannelOption = tuple[str, int | str]
CHANNEL_OPTIONS: list[ChannelOption] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
]


def proto_duration(seconds: float) -> duration_pb2.Duration:
    """``seconds`` as a protobuf ``Duration`` message."""
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration


# The largest upload chunk every server accepts: its message limit is at
# least 4 MiB + 64 KiB, the margin being for the message's own fields.
MAX_CHUNK_SIZE = 4 * 1024 * 1024


# Download's data messages, taken without a protobuf object (see
# parse_download_response).
DATA_TAG = 0x12  # UploadRequest.data and DownloadResponse.data: field 2, length-delimited
_MAX_LENGTH_BYTES = 5  # a varint of 5 bytes holds any length protobuf allows (< 2 GiB)
DOWNLOAD_METHOD = "/blobgate.v1.StorageService/Download"

DownloadMessage = storage_pb2.DownloadResponse | memoryview
"""What the client's Download deserializer returns: a data message's payload
as a view of the received bytes, or any other message parsed."""


def sole_field_payload(raw: bytes, tag: int) -> memoryview | None:
    """If ``raw`` is exactly one length-delimited field with ``tag`` (the
    tag byte, a varint length, then that many bytes to the end), a view of
    its payload, without a copy; else None (parse it with protobuf)."""
    if len(raw) > 1 and raw[0] == tag:
        length = shift = 0
        for at in range(1, min(len(raw), 1 + _MAX_LENGTH_BYTES)):
            byte = raw[at]
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                if at + 1 + length == len(raw):
                    return memoryview(raw)[at + 1 :]
                return None
            shift += 7
    return None


def parse_download_response(raw: bytes) -> DownloadMessage:
    """The client's Download deserializer, the mirror of the server's Upload
    one. A message that is exactly one ``data`` field (its tag, a varint
    length, then that many bytes to the end: every data message the server
    sends) becomes a memoryview of its payload in ``raw``, with no copy and
    no protobuf object. Anything else (the first message with the object,
    fields in another order, unknown or repeated fields, a malformed message)
    goes through protobuf, whose result for a data-only message would be the
    same bytes; a data message in such a form stays a ``DownloadResponse``
    whose ``data`` is set."""
    payload = sole_field_payload(raw, DATA_TAG)
    return payload if payload is not None else storage_pb2.DownloadResponse.FromString(raw)


def download_payload(message: DownloadMessage) -> bytes | memoryview | None:
    """The data a Download message carries, or None for a message that is not
    data (the object, or nothing set). Takes the raw deserializer's results
    and the generated stub's ``DownloadResponse`` alike."""
    if isinstance(message, memoryview):
        return message
    if message.WhichOneof("message") == "data":
        data: bytes = message.data  # each access copies the field: read it once
        return data
    return None


class StorageStub(storage_pb2_grpc.StorageServiceStub):
    """The generated ``StorageServiceStub``, except that Download's data
    messages are not parsed into protobuf objects (parse_download_response):
    its stream yields memoryviews for them."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        super().__init__(channel)  # type: ignore[no-untyped-call]
        self.Download = channel.unary_stream(  # type: ignore[call-arg]  # untyped in grpc's stubs
            DOWNLOAD_METHOD,
            request_serializer=storage_pb2.DownloadRequest.SerializeToString,
            response_deserializer=parse_download_response,
            _registered_method=True,  # as the generated stub does
        )
