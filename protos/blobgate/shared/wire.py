"""What client and server agree on about the wire beyond storage.proto: the
initial metadata that accepts an upload, the request id and trace context in
call metadata, the message size limit, and the data-tag codec both sides use
to take a data message's payload without a protobuf object."""

from __future__ import annotations

from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

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

# A gRPC channel option as grpc.aio takes it: (name, value).
ChannelOption = tuple[str, int | str]

MAX_MESSAGE_SIZE = 8 * 1024 * 1024

# The largest upload chunk every server accepts: its message limit is at
# least 4 MiB + 64 KiB, the margin being for the message's own fields.
MAX_CHUNK_SIZE = 4 * 1024 * 1024


DATA_TAG = 0x12  # UploadRequest.data and DownloadResponse.data: field 2, length-delimited
_MAX_LENGTH_BYTES = 5  # a varint of 5 bytes holds any length protobuf allows (< 2 GiB)


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
