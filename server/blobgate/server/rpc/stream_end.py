"""Tell a request stream that ended cleanly from one that broke.

grpc.aio ends a server's request iterator in the same way whether the client
half-closed after its last message or the receive failed: a message over
``max_receive_message_length``, a reset stream, a malformed frame, a dropped
connection. Core cancels the call in the failing cases, but that cancellation
reaches the handler's task later than the end of the iterator, so a handler
that commits on the end of the stream can commit a truncated object first.

The only trace grpc.aio keeps of the difference is a debug log record,
written inside the handler's own task by the failed receive. ``watch`` starts
recording such records for the calling task, and ``ensure_clean_end`` raises
``Cancelled`` when one was seen. The filter that records them also drops
every grpc debug record the operator did not ask for, so enabling it adds no
log lines.

The response side ends badly too when a client cancels or goes away while a
message is being sent to it: grpc.aio then logs "ExecuteBatchError raised in
core" at ERROR with a traceback, once per cancelled download. Nothing on the
server failed, so the same filter lowers that record to DEBUG.

grpc.aio also writes a debug record of its own on every call ("Loaded
running loop"): so that those cost no log record each, the grpc logger's
``debug`` is replaced by ``_GrpcDebug``, which looks at the message itself
and makes a record only when the operator asked for grpc's debug output.

tests/service/test_stream_end.py proves that each way a stream can break is caught,
and fails if a grpc release changes the records.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Any

from blobgate.server.core.errors import Cancelled

# The logger and message grpc.aio's failed receive writes (cygrpc's
# callback_common: "Failed to receive any message from Core").
GRPC_LOGGER = "grpc._cython.cygrpc"
FAILED_RECEIVE = "Failed to receive any message from Core"
# What grpc.aio logs when a send fails because the peer left (server.pyx.pxi).
PEER_GONE = "ExecuteBatchError raised in core by servicer method"


class _Watch:
    """Whether a receive failed in the task that holds this watch."""

    __slots__ = ("broken",)

    def __init__(self) -> None:
        self.broken = False


_current: contextvars.ContextVar[_Watch | None] = contextvars.ContextVar(
    "blobgate_stream_watch", default=None
)


def _note_failed_receive(message: str) -> bool:
    """Mark the current task's watch if ``message`` is a failed receive;
    whether it was one."""
    if not message.startswith(FAILED_RECEIVE):
        return False
    watch = _current.get()
    if watch is not None:
        watch.broken = True
    return True


class _GrpcRecordFilter(logging.Filter):
    """Marks the current task's watch on a failed receive, lowers a failed
    send to a departed peer to DEBUG, and passes on only the records the
    logger's ancestors would have let through."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not _note_failed_receive(message) and message.startswith(PEER_GONE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        parent = logging.getLogger(GRPC_LOGGER).parent
        threshold = parent.getEffectiveLevel() if parent is not None else logging.WARNING
        return record.levelno >= threshold


_FILTER = _GrpcRecordFilter()


class _GrpcDebug:
    """The grpc logger's ``debug``: marks the current task's watch on a
    failed receive, as the filter does, and makes a record (through
    ``Logger.debug``, then the filter) only when the logger's ancestors let
    DEBUG through. The rest, grpc.aio's debug line of every call, costs a
    string test instead of a LogRecord."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def __call__(self, msg: object, *args: object, **kwargs: Any) -> None:
        text = str(msg)
        if args:
            # A bad format is left to logging, whose record shows what went wrong.
            with contextlib.suppress(TypeError, ValueError):
                text = text % args
        _note_failed_receive(text)
        parent = self._logger.parent
        if parent is None or parent.isEnabledFor(logging.DEBUG):
            kwargs.setdefault("stacklevel", 2)  # the caller is grpc's, not this
            logging.Logger.debug(self._logger, msg, *args, **kwargs)


def install() -> None:
    """Let grpc's records reach the filter and its debug calls ``_GrpcDebug``
    (idempotent); the app calls it at start-up."""
    logger = logging.getLogger(GRPC_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    if not isinstance(logger.__dict__.get("debug"), _GrpcDebug):
        logger.debug = _GrpcDebug(logger)  # type: ignore[method-assign]
    if logger.level != logging.DEBUG:  # setLevel clears every logger's level cache
        logger.setLevel(logging.DEBUG)


def watch() -> None:
    """Start watching the current task's request stream. Each gRPC call runs
    in a task of its own, so the watch is the call's alone."""
    install()
    _current.set(_Watch())


def ensure_clean_end() -> None:
    """Raise Cancelled if a receive of the current task's stream failed."""
    current = _current.get()
    if current is not None and current.broken:
        raise Cancelled("the request stream broke before its end; nothing was stored")
