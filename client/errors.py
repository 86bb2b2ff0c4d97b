"""The one error type the client library raises for a failed call.

Every ``grpc.aio.AioRpcError`` is translated here, at the library's boundary,
so callers catch ``BlobgateError`` and look at ``code``; the gRPC error stays
reachable as ``__cause__`` for debugging.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc


class BlobgateError(Exception):
    """A call failed. ``code`` is the gRPC status code (api.md lists what each
    means); ``message`` is the server's explanation."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc_error(cls, exc: grpc.aio.AioRpcError) -> BlobgateError:
        """The error for a failed gRPC call."""
        code = exc.code()
        return cls(code if code is not None else grpc.StatusCode.UNKNOWN, exc.details() or "")


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
