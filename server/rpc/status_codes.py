"""The one place where service errors become gRPC statuses (api.md's table).

Handlers are wrapped with ``unary`` or ``streaming``; an error the service
raised becomes its documented code with its message, and anything else
becomes INTERNAL with a request id that is also in the log, so a caller never
sees UNKNOWN or a traceback.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

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
}

Context = grpc.aio.ServicerContext[Any, Any]
S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def code_for(exc: BaseException) -> grpc.StatusCode | None:
    """The documented status of a service error; None for anything else."""
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]
    return None


async def _abort(context: Context, exc: Exception, method: str) -> NoReturn:
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


def unary(
    handler: Callable[[S, Req, Context], Awaitable[Resp]],
) -> Callable[[S, Req, Context], Awaitable[Resp]]:
    """Wrap a handler that returns one response (unary or client-streaming)."""

    @functools.wraps(handler)
    async def wrapper(self: S, request: Req, context: Context) -> Resp:
        try:
            if isinstance(request, ServiceError):  # undecodable: see service._parser
                raise request
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, handler.__name__)

    return wrapper


def streaming(
    handler: Callable[[S, Req, Context], AsyncIterator[Resp]],
) -> Callable[[S, Req, Context], AsyncIterator[Resp]]:
    """Wrap a handler that yields responses (server-streaming)."""

    @functools.wraps(handler)
    async def wrapper(self: S, request: Req, context: Context) -> AsyncIterator[Resp]:
        try:
            if isinstance(request, ServiceError):  # undecodable: see service._parser
                raise request
            async for response in handler(self, request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, handler.__name__)

    return wrapper
