"""The service's own error types.

The S3 module raises these (``raise ... from exc``) instead of botocore's
errors, validation raises them for bad requests, and ``blobgate.server.rpc.status_codes`` maps
each to exactly one gRPC status code. Messages are shown to callers, so they
say what went wrong and what to fix, never how the code is laid out.
"""


class ServiceError(Exception):
    """Base of every error the service reports to a caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    """The request is malformed: bad key, spec missing or repeated, bad page
    size or expiry, checksum mismatch."""


class NotFound(ServiceError):
    """No such key, or an allowed bucket that does not exist."""


class BucketNotFound(NotFound):
    """An allowed bucket that does not exist in S3."""


class PermissionDenied(ServiceError):
    """The bucket is not in the allowed set, or S3 refused the gateway."""


class FailedPrecondition(ServiceError):
    """An if_match or if_none_match condition did not hold."""


def if_match_failed(field: str = "if_match") -> FailedPrecondition:
    """A failed ``if_match`` (or ``source_if_match``), worded the same whether
    the object is missing or has another ETag, and naming neither that ETag
    nor the object's size: a caller that may write or delete a key but not
    read it must not learn its content by guessing ETags (a single-part
    object's ETag is the MD5 of its bytes)."""
    return FailedPrecondition(f"the object does not match {field}")


def if_none_match_failed() -> FailedPrecondition:
    """A failed ``if_none_match``: what S3 itself tells a writer (412)."""
    return FailedPrecondition("the object already exists (if_none_match)")


class OutOfRange(ServiceError):
    """The declared size differs from the bytes sent, or an offset is past the end."""


class ResourceExhausted(ServiceError):
    """The object is larger than the server accepts, or the server is full."""


class Unimplemented(ServiceError):
    """The S3 store does not support something a request needs (it answered
    NotImplemented), e.g. DeleteObject with If-Match under
    ``s3_conditional_delete = "native"``."""


class Unavailable(ServiceError):
    """S3 is unreachable, throttling or timing out: worth retrying later."""


class UploadGone(Unavailable):
    """S3 no longer knows a multipart upload: aborted, completed or expired."""


class Cancelled(ServiceError):
    """The request stream broke before its end (reset, oversized or malformed
    message, lost connection): nothing is stored."""


class StreamIdle(ServiceError):
    """A transfer stream's client sent (Upload) or read (Download) nothing
    for ``stream_idle_timeout`` seconds: the stream is ended and releases
    its slot, budget and S3 connection."""


class Unauthenticated(ServiceError):
    """The call carries no identity the server accepts: no bearer token, or
    one that is expired or not valid for this service, or a client
    certificate that names no one."""


class DataLoss(ServiceError):
    """Something the gateway stored in S3 is damaged: a resumable session's
    record that no longer parses."""
