"""The one error type the client library raises for a failed call.

Every ``grpc.aio.AioRpcError`` is translated here, at the library's boundary,
so callers catch ``BlobgateError`` and look at ``code``; the gRPC error stays
reachable as ``__cause__`` for debugging.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import grpc

from blobgate.client.wire import REQUEST_ID_KEY

if TYPE_CHECKING:
    from blobgate.client.connect_problems import ConnectProblem

# What grpc.aio reports, in place of the call's real status, when a client
# write fails because the stream already ended (grpc/grpc#36066): the server
# died, the connection broke, or the server's own status arrived first.
_WRITE_FAILED = (grpc.StatusCode.INTERNAL, "Internal error from Core")
# The details grpc.aio gives a call this process cancelled itself; any other
# CANCELLED came from the server's side, which cancels the calls it has not
# started when it shuts down (grpc/grpc#41785) and those still running when
# its grace period ends.
_LOCALLY_CANCELLED = "Locally cancelled by application!"


class BlobgateError(Exception):
    """A call failed. ``code`` is the gRPC status code (api.md lists what each
    means); ``message`` is the server's explanation. ``status_lost`` is true
    when gRPC lost the call's status because a write failed as the stream
    ended: ``code`` is then INTERNAL, whatever really ended the stream.
    ``retryable`` says whether another attempt may succeed where the call can
    be repeated: UNAVAILABLE, a lost status, or a call the server cancelled.
    ``request_id`` is the id the server gave the call (None if no server
    answered): it is in the message too, for quoting to the server's
    operator, who finds the call's access log line and trace by it.
    ``problem`` is what a connection that could not be set up most likely
    means (plaintext to a TLS server, a missing client certificate, a name
    mismatch...: ``connect_problems``), None otherwise; the message then
    ends with a hint, and ``details`` is the message without it.
    ``unsent`` is true when the call failed before its first message left
    the client (no instance could be connected to): no server saw it, so it
    may be retried whatever the method."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        status_lost: bool = False,
        retryable: bool | None = None,
        request_id: str | None = None,
        problem: ConnectProblem | None = None,
        details: str | None = None,
        unsent: bool = False,
    ) -> None:
        if request_id and request_id not in message:
            message = f"{message} (request id {request_id})"
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.problem = problem
        self.details = message if details is None else details
        self.status_lost = status_lost
        if retryable is None:
            retryable = code == grpc.StatusCode.UNAVAILABLE or status_lost
        self.retryable = retryable
        self.request_id = request_id
        self.unsent = unsent

    @classmethod
    def from_rpc_error(cls, exc: grpc.aio.AioRpcError) -> BlobgateError:
        """The error for a failed gRPC call."""
        code = exc.code()
        details = exc.details() or ""
        request_id = _request_id(exc)
        if is_lost_status(exc):
            message = (
                "the stream to the server ended while data was being sent, and gRPC lost "
                "the reason (the server stopped, the connection broke, or the server "
                "refused the stream)"
            )
            return cls(grpc.StatusCode.INTERNAL, message, status_lost=True, request_id=request_id)
        if code == grpc.StatusCode.CANCELLED and details != _LOCALLY_CANCELLED:
            message = f"the server cancelled the call; it may be shutting down ({details})"
            return cls(code, message, retryable=True, request_id=request_id)
        code = code if code is not None else grpc.StatusCode.UNKNOWN
        return cls(code, details, request_id=request_id)


def is_lost_status(exc: grpc.aio.AioRpcError) -> bool:
    """Whether ``exc`` is grpc.aio's INTERNAL in place of a call's real status
    (a write failed as the stream ended)."""
    return (exc.code(), exc.details() or "") == _WRITE_FAILED


def _request_id(exc: grpc.aio.AioRpcError) -> str | None:
    """The request id the server sent with the call's status, if any."""
    for metadata in (exc.trailing_metadata(), exc.initial_metadata()):
        for key, value in metadata or ():
            if key == REQUEST_ID_KEY and isinstance(value, str):
                return value
    return None


@contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise gRPC errors from the block as ``BlobgateError``."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise BlobgateError.from_rpc_error(exc) from exc
    except grpc.aio.UsageError as exc:
        # Raised when the client was already closed: a caller bug, but still ours to type.
        raise BlobgateError(grpc.StatusCode.CANCELLED, f"client is closed: {exc}") from exc
