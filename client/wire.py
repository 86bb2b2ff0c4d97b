"""What client and server agree on beyond storage.proto: the initial metadata
that accepts an upload, the request id and trace context in call metadata,
the message size limit, and protobuf conversions."""

from __future__ import annotations

from datetime import timedelta

from google.protobuf import duration_pb2
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
