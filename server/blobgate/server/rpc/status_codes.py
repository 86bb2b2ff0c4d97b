"""The one table of service errors to gRPC status codes (docs/api.md's
error table), the abort that reports one to the caller, and
``ErrorInterceptor``, which applies them to every StorageService call."""

from __future__ import annotations

import logging
import uuid
from typing import Any, NoReturn

import grpc

from blobgate.server.core import errors
from blobgate.server.core.errors import ServiceError
from blobgate.server.rpc.interceptors import Behaviour, Handler, MethodInterceptor, rewrap
from blobgate.shared.wire import REQUEST_ID_KEY

log = logging.getLogger(__name__)

CODES: dict[type[ServiceError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
    errors.StreamIdle: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
}

Context = grpc.aio.ServicerContext[Any, Any]


def code_for(exc: BaseException) -> grpc.StatusCode | None:
    """The documented status of a service error; None for anything else."""
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]
    return None


def request_id(context: Context) -> str:
    """The call's request id, which the access log interceptor put in its
    trailing metadata (rpc.access_log); a new one outside that chain."""
    for key, value in context.trailing_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            return value
    return uuid.uuid4().hex[:16]


async def abort(context: Context, exc: Exception, method: str) -> NoReturn:
    """End the call with ``exc``'s documented status and message; anything
    else becomes INTERNAL with the call's request id, also in the log and
    its access log line, so a caller never sees UNKNOWN or a traceback."""
    code = code_for(exc)
    if code is not None and isinstance(exc, ServiceError):
        if code is grpc.StatusCode.UNAVAILABLE:
            log.warning(
                "%s: %s (cause: %r)",
                method,
                exc.message,
                exc.__cause__,
                extra={"request_id": request_id(context)},
            )
        await context.abort(code, exc.message)
    call_id = request_id(context)
    log.error(
        "%s failed (request id %s)", method, call_id, exc_info=exc, extra={"request_id": call_id}
    )
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error (request id {call_id}); the gateway logged the details",
    )
    raise AssertionError("context.abort() returned")  # it always raises


def _mapped(behaviour: Behaviour, name: str) -> Behaviour:
    """``behaviour`` with what it raises turned into its status."""

    async def call(request: Any, context: Context) -> Any:
        try:
            if isinstance(request, ServiceError):  # undecodable: see codecs._parser
                raise request
            return await behaviour(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc, name)

    return call


class ErrorInterceptor(MethodInterceptor):
    """Maps service errors to statuses for every StorageService method."""

    def wrap(self, handler: Handler, method: str) -> Handler:
        return rewrap(handler, lambda behaviour: _mapped(behaviour, method))
