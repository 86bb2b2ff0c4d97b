"""How the ``blobgate`` command ends: its exit codes, and each failure as one
line on stderr, ``blobgate: CODE: message`` (with ``--json``, one JSON
object per line)."""

from __future__ import annotations

import json
import sys
from typing import Any

import grpc

from blobgate.client.connect_problems import hint
from blobgate.client.errors import BlobgateError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4
EXIT_UNAVAILABLE = 5
EXIT_INTERRUPTED = 130

# The exit codes as --help lists them; README.md's list says the same
# (tests/cli/test_help.py compares the two).
EXIT_CODE_HELP = (
    (EXIT_OK, "success"),
    (EXIT_FAILURE, "any other failure: INTERNAL, DATA_LOSS, RESOURCE_EXHAUSTED, local I/O, ..."),
    (EXIT_USAGE, "a bad command line or unusable TLS files; INVALID_ARGUMENT, OUT_OF_RANGE"),
    (EXIT_NOT_FOUND, "NOT_FOUND"),
    (EXIT_REFUSED, "FAILED_PRECONDITION, PERMISSION_DENIED, UNAUTHENTICATED"),
    (
        EXIT_UNAVAILABLE,
        "UNAVAILABLE, DEADLINE_EXCEEDED: the server or S3 is down or slow, or no "
        "connection could be set up (the message says why)",
    ),
    (EXIT_INTERRUPTED, "interrupted"),
)

_EXIT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_USAGE,
    grpc.StatusCode.OUT_OF_RANGE: EXIT_USAGE,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: EXIT_REFUSED,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_REFUSED,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_REFUSED,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
}

# The "code" of failures that are not gRPC statuses.
USAGE = "USAGE"
LOCAL = "LOCAL"
INTERRUPTED = "INTERRUPTED"


def exit_code(code: grpc.StatusCode) -> int:
    """The exit status for a call that failed with ``code``."""
    return _EXIT_CODES.get(code, EXIT_FAILURE)


def error_message(exc: BlobgateError) -> str:
    """What to say about a failed call: with the command line's words for
    how to fix a connection that could not be set up."""
    if exc.problem is not None:
        return f"{exc.details}; {hint(exc.problem, cli=True)}"
    return exc.message or "no details"


class Reporter:
    """Writes failures to stderr, one line each: ``blobgate: [NAME: ]CODE:
    message`` (``blobgate: message`` for the command's own failures), or
    with ``json`` a JSON object: ``code``, ``message``, ``exit_code``, and
    ``name`` (the file or key of a tree command) or ``problem`` (see
    ``ConnectProblem``) when there is one."""

    def __init__(self, *, json_lines: bool) -> None:
        self.json_lines = json_lines

    def failure(
        self,
        code: str,
        message: str,
        status: int,
        *,
        name: str | None = None,
        problem: str | None = None,
    ) -> None:
        """Report one failure whose exit status would be ``status``."""
        message = " ".join(message.split()) or "no details"
        if self.json_lines:
            document: dict[str, Any] = {"code": code, "message": message, "exit_code": status}
            if name is not None:
                document["name"] = name
            if problem is not None:
                document["problem"] = problem
            line = json.dumps(document, ensure_ascii=False)
        else:
            # Text names the code of a call's status, and says LOCAL only
            # beside the other failures of a tree command.
            own = code in (USAGE, INTERRUPTED) or (code == LOCAL and name is None)
            parts = [name, None if own else code, message]
            line = "blobgate: " + ": ".join(part for part in parts if part is not None)
        print(line, file=sys.stderr, flush=True)

    def call_failed(self, exc: BlobgateError, *, name: str | None = None) -> int:
        """Report a failed call; its exit status."""
        status = exit_code(exc.code)
        problem = exc.problem.name.lower() if exc.problem is not None else None
        self.failure(exc.code.name, error_message(exc), status, name=name, problem=problem)
        return status
