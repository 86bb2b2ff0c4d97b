"""The client's side of the wire: call metadata, channel options, protobuf
conversions, and the client's stub, whose Download takes data messages
without protobuf objects. What the server agrees on lives in
``blobgate.shared.wire`` (re-exported here for the client's modules)."""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf import duration_pb2

from blobgate.shared.wire import (
    DATA_TAG,
    MAX_CHUNK_SIZE,
    MAX_MESSAGE_SIZE,
    REQUEST_ID_KEY,
    TRACE_CONTEXT,
    UPLOAD_ACCEPTED,
    UPLOAD_ACCEPTED_KEY,
    ChannelOption,
    sole_field_payload,
)
from blobgate.v1 import storage_pb2, storage_pb2_grpc


def call_metadata() -> tuple[tuple[str, str], ...] | None:
    """The metadata every call sends: the trace context of the current span,
    when there is one (None otherwise, the cheap case)."""
    carrier: dict[str, str] = {}
    TRACE_CONTEXT.inject(carrier)
    return tuple(carrier.items()) if carrier else None


CHANNEL_OPTIONS: list[ChannelOption] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
]


def proto_duration(seconds: float) -> duration_pb2.Duration:
    """``seconds`` as a protobuf ``Duration`` message."""
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration


# Download's data messages, taken without a protobuf object (see
# parse_download_response).
DOWNLOAD_METHOD = "/blobgate.v1.StorageService/Download"

DownloadMessage = storage_pb2.DownloadResponse | memoryview
"""What the client's Download deserializer returns: a data message's payload
as a view of the received bytes, or any other message parsed."""


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


__all__ = [
    "CHANNEL_OPTIONS",
    "DATA_TAG",
    "DOWNLOAD_METHOD",
    "MAX_CHUNK_SIZE",
    "MAX_MESSAGE_SIZE",
    "REQUEST_ID_KEY",
    "TRACE_CONTEXT",
    "UPLOAD_ACCEPTED",
    "UPLOAD_ACCEPTED_KEY",
    "ChannelOption",
    "StorageStub",
    "call_metadata",
    "download_payload",
    "parse_download_response",
    "proto_duration",
    "sole_field_payload",
]
