"""The one error type the client library raises for a failed call.

Every ``grpc.aio.AioRpcError`` is translated here, at the library's boundary,
so callers catch ``BlobgateError`` and look at ``code``; the gRPC error stays
reachable as ``__cause__`` for debugging.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

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
    be repeated: UNAVAILABLE, a lost status, or a call the server cancelled."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        status_lost: bool = False,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.status_lost = status_lost
        if retryable is None:
            retryable = code == grpc.StatusCode.UNAVAILABLE or status_lost
        self.retryable = retryable

    @classmethod
    def from_rpc_error(cls, exc: grpc.aio.AioRpcError) -> BlobgateError:
        """The error for a failed gRPC call."""
        code = exc.code()
        details = exc.details() or ""
        if (code, details) == _WRITE_FAILED:
            message = (
                "the stream to the server ended while data was being sent, and gRPC lost "
                "the reason (the server stopped, the connection broke, or the server "
                "refused the stream)"
            )
            return cls(grpc.StatusCode.INTERNAL, message, status_lost=True)
        if code == grpc.StatusCode.CANCELLED and details != _LOCALLY_CANCELLED:
            message = f"the server cancelled the call; it may be shutting down ({details})"
            return cls(code, message, retryable=True)
        return cls(code if code is not None else grpc.StatusCode.UNKNOWN, details)


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
