"""Everything written to the process's stderr, as log records: for
``log_format = "json"``, where every line on stderr must be JSON.

gRPC's C core (and BoringSSL through it) writes its own lines straight to
file descriptor 2 (``E1206 10:12:03.412345 9884 ssl_transport_security.cc:3238]
No match found for server name: ...``), past Python's logging.
``StderrCapture`` keeps a copy of the real stderr for the log handler and
points fd 2 at one end of a SOCK_SEQPACKET socket pair, which keeps each
write whole; a thread reads the other end and logs each write through
logging: a gRPC message at its own severity (I, W, E, F) as logger
``grpc.core`` with its ``source`` file and line, anything else (a stray
``print`` to stderr) as logger ``stderr`` at WARNING.

A gRPC message can carry what a client sent (the server name of its TLS
handshake, newlines included). One write is one record, whatever newlines
it holds, so a client cannot make one message look like two; a message is
cut at MAX_MESSAGE bytes, bytes that are not UTF-8 are escaped, and the JSON
formatter escapes the rest.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import threading
from typing import TextIO

MAX_MESSAGE = 2048  # bytes of one message kept; the rest is counted, not logged
# A write larger than the socket's send buffer (about 208 KiB) fails with
# EMSGSIZE in its writer; none of gRPC's comes near.
_MAX_WRITE = 256 * 1024
GRPC_LOGGER = "grpc.core"
OTHER_LOGGER = "stderr"
# absl's prefix: severity, MMDD, time, thread id, file:line]
_PREFIX = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ([\w.+-]{1,200}:\d{1,9})\] ?")
_LEVELS = {
    b"I": logging.INFO,
    b"W": logging.WARNING,
    b"E": logging.ERROR,
    b"F": logging.CRITICAL,
}
# gRPC logs these at ERROR, but a client caused them (a TLS server name the
# certificate does not carry): a failed handshake's lines are INFO.
_CLIENT_CAUSED = (b"No match found for server name",)


def log_write(data: bytes) -> None:
    """Log what one write to stderr held: a gRPC message at its own level,
    anything else at WARNING; bounded, with its bytes escaped as needed."""
    data = data.removesuffix(b"\n")
    match = _PREFIX.match(data)
    if match is None:
        logger, level, source, text = OTHER_LOGGER, logging.WARNING, None, data
    else:
        text = data[match.end() :]
        level = logging.INFO if text.startswith(_CLIENT_CAUSED) else _LEVELS[match.group(1)]
        logger, source = GRPC_LOGGER, match.group(2).decode("ascii")
    message = text[:MAX_MESSAGE].decode("utf-8", "backslashreplace")
    if len(text) > MAX_MESSAGE:
        message += f" [{len(text) - MAX_MESSAGE} more bytes]"
    extra = {} if source is None else {"source": source}
    logging.getLogger(logger).log(level, "%s", message, extra=extra)


class StderrCapture:
    """The real stderr kept as ``stream`` (for the log handler); ``start``
    points fd 2 at a socket whose writes are logged, ``stop`` puts it back.
    While it runs, warnings and exceptions a thread lets out are logged too."""

    def __init__(self) -> None:
        sys.stderr.flush()
        self._real_fd = os.dup(2)
        self.stream: TextIO = os.fdopen(
            self._real_fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace"
        )
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Capture fd 2 (call once logging writes to ``stream``, never to fd
        2); False where the system has no SOCK_SEQPACKET (stderr stays raw)."""
        try:
            reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except (AttributeError, OSError):
            return False
        sys.stderr.flush()
        os.dup2(writer.fileno(), 2)
        writer.close()  # fd 2 is the only writer left: stop() ends the reader
        self._socket = reader
        # A failing handler must not write its traceback to fd 2, which this
        # thread reads: it could fill the socket and wait on itself.
        logging.raiseExceptions = False
        logging.captureWarnings(True)
        threading.excepthook = _log_uncaught_in_thread
        self._thread = threading.Thread(target=self._run, name="stderr-capture", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        assert self._socket is not None
        buffer = bytearray(_MAX_WRITE)
        try:
            while size := self._socket.recv_into(buffer):
                log_write(bytes(buffer[:size]))
        except BaseException:  # never leave fd 2 a socket nobody reads: writers would block
            os.dup2(self._real_fd, 2)
            logging.getLogger(__name__).exception("stderr capture failed; stderr is raw again")
        finally:
            self._socket.close()

    def stop(self) -> None:
        """Point fd 2 at the real stderr again, once what was written is logged."""
        if self._thread is None:
            return
        sys.stderr.flush()
        os.dup2(self._real_fd, 2)  # closes the last writer: the reader reads to the end
        self._thread.join(timeout=5)
        self._thread = None
        threading.excepthook = threading.__excepthook__
        logging.captureWarnings(False)


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    logging.getLogger("blobgate").error(
        "uncaught exception in thread %s",
        None if args.thread is None else args.thread.name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


__all__ = ["GRPC_LOGGER", "MAX_MESSAGE", "OTHER_LOGGER", "StderrCapture"]
