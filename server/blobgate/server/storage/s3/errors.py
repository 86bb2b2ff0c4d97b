"""botocore and transport failures translated, once, into the service's own
errors (``blobgate.server.core.errors``). S3's own error text stays in the log
and the exception's cause."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aiohttp import ClientPayloadError
from botocore.exceptions import BotoCoreError, ClientError

from blobgate.server.core.errors import (
    BucketNotFound,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unavailable,
    Unimplemented,
    UploadGone,
)
from blobgate.server.core.storage_classes import archived
from blobgate.server.storage.protocols import ObjectRef

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
# "400": a HEAD's answer has no body to name the error (a malformed version id).
_BAD_REQUEST = {"InvalidArgument", "InvalidRequest", "KeyTooLongError", "InvalidBucketName", "400"}
_NOT_IMPLEMENTED = {"NotImplemented", "501"}

# What a failed S3 call can raise; aiobotocore leaves aiohttp's error for a
# body cut short untranslated.
S3_FAILURES = (TimeoutError, ClientError, BotoCoreError, OSError, ClientPayloadError)


def _client_error(exc: ClientError, where: str, bucket: str) -> ServiceError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", "")) or code  # logged as the cause, never shown
    if code == "NoSuchBucket":
        return BucketNotFound(f"bucket {bucket!r} does not exist in S3")
    if code == "NoSuchUpload":
        return UploadGone(f"S3 lost the multipart upload for {where}; try again")
    if code in _NOT_FOUND or code == "NoSuchVersion":
        return NotFound(f"no object {where}")
    if code in {"MethodNotAllowed", "405"}:  # S3's answer to a read of a delete marker
        return NotFound(f"no object {where}: that version is a delete marker")
    if code == "InvalidPart":  # a part was replaced by a concurrent writer
        return FailedPrecondition(
            f"the stored parts of {where} changed while it was being written; "
            "another Upload continued the same session"
        )
    if code in _PRECONDITION:
        return FailedPrecondition(f"precondition failed for {where}")
    if code in {"InvalidRange", "416"}:
        return OutOfRange(f"range not satisfiable for {where}")
    if code == "InvalidObjectState":  # GET of an object in an archive class
        return FailedPrecondition(archived(where))
    if code == "InvalidTag":
        return InvalidArgument(f"S3 refused the tags of {where} (InvalidTag)")
    if code == "InvalidStorageClass":
        return InvalidArgument(f"this S3 store does not offer the storage class asked for {where}")
    if code == "BadDigest":  # the bytes S3 received fail the checksum sent with them
        return Unavailable(f"S3 received {where} corrupted in transit (BadDigest); retry")
    if code in _UNAVAILABLE:
        return Unavailable(f"S3 is unavailable ({code}); retry later")
    if code in _DENIED:
        return PermissionDenied(
            f"S3 refused the gateway access to {where} ({code}); check the gateway's credentials"
        )
    if code == "EntityTooLarge":
        return ResourceExhausted(f"S3 refused {where} as too large")
    if code in _NOT_IMPLEMENTED:  # S3 names the header it does not support, where one is
        header = str(error.get("Header", ""))
        feature = f"the header {header}" if header else "a feature"
        return Unimplemented(
            f"this S3 store does not support {feature} of the request for {where} (NotImplemented)"
        )
    if code in _BAD_REQUEST:
        return InvalidArgument(f"S3 rejected the request for {where} ({code})")
    return ServiceError(f"S3 error {code} for {where}: {message}")


def translate(exc: Exception, ref: ObjectRef | None, bucket: str) -> ServiceError:
    """The service error for one S3 failure."""
    where = f"{ref.key!r} in bucket {ref.bucket!r}" if ref else f"bucket {bucket!r}"
    if ref and ref.version_id:
        where = f"version {ref.version_id!r} of {where}"
    if isinstance(exc, ClientError):
        return _client_error(exc, where, bucket)
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
    except S3_FAILURES as exc:
        raise translate(exc, ref, ref.bucket if ref else bucket) from exc
