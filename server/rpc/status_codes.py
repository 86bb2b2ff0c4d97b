"""The one table of service errors to gRPC status codes (docs/api.md's
error table), and the abort that reports one to the caller."""

from __future__ import annotations

import logging
import uuid
from typing import Any, NoReturn

import grpc

from blobgate.server.errors import (
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    StreamIdle,
    Unavailable,
)

log = logging.getLogger(__name__)

CODES: dict[type[ServiceError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Cancelled: grpc.StatusCode.CANCELLED,
    StreamIdle: grpc.StatusCode.DEADLINE_EXCEEDED,
}

Context = grpc.aio.ServicerContext[Any, Any]


def code_for(exc: BaseException) -> grpc.StatusCode | None:
    """The documented status of a service error; None for anything else."""
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]
    return None


async def abort(context: Context, exc: Exception, method: str) -> NoReturn:
    """End the call with ``exc``'s documented status and message; anything
    else becomes INTERNAL with a request id that is also in the log, so a
    caller never sees UNKNOWN or a traceback."""
    code = code_for(exc)
    if code is not None and isinstance(exc, ServiceError):
        if code is grpc.StatusCode.UNAVAILABLE:
            log.warning("%s: %s (cause: %r)", method, exc.message, exc.__cause__)
        await context.abort(code, exc.message)
    request_id = uuid.uuid4().hex[:16]
    log.error("%s failed (request id %s)", method, request_id, exc_info=exc)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error (request id {request_id}); the gateway logged the details",
    )
    raise AssertionError("context.abort() returned")  # it always raises
