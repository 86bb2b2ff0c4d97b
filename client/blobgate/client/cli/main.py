"""The ``blobgate`` command: put, get, cat, list, describe, presign, copy,
move and delete objects, and whole trees of them (``blobgate --help``).

When some files or keys of a tree command fail, the others still go; each
failure is a line on stderr, ``blobgate: NAME: CODE: message`` (``LOCAL``
for a local file error), and the exit status is that code's, or 1 when they
differ. Any other failure is one line, ``blobgate: CODE: message``, and the
exit status is the one ``--help`` and README.md list for the code.
"""

from __future__ import annotations

# First: gRPC must not be imported before its C core's log lines are off.
from blobgate.client.cli import quiet_grpc  # noqa: F401  # isort: skip

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from blobgate.client.cli.commands import PartialFailure, UsageError
from blobgate.client.cli.failures import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    INTERRUPTED,
    LOCAL,
    USAGE,
    Reporter,
    exit_code,
)
from blobgate.client.cli.parser import DEFAULT_SERVER, build_parser
from blobgate.client.client import Client
from blobgate.client.errors import BlobgateError
from blobgate.shared.tls import check_pem

__all__ = [
    "DEFAULT_SERVER",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "build_parser",
    "exit_code",
    "main",
]

_TLS_FILES = (
    ("root_certificates", "ca_file", "--ca-file"),
    ("certificate_chain", "cert_file", "--cert-file"),
    ("private_key", "key_file", "--key-file"),
)


async def _run(args: argparse.Namespace) -> None:
    server = args.server or os.environ.get("BLOBGATE_SERVER") or DEFAULT_SERVER
    if (args.cert_file is None) != (args.key_file is None):
        raise UsageError("--cert-file and --key-file go together")
    pems: dict[str, bytes | None] = {}
    names: dict[str, str] = {}
    for keyword, attribute, flag in _TLS_FILES:
        path = getattr(args, attribute)
        names[keyword] = f"{flag} {path}"
        pems[keyword] = await _read_pem(path, names[keyword])
    try:
        check_pem(**pems, names=names)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        client = Client(
            server,
            timeout=args.timeout,
            bucket=args.bucket,
            tls=args.tls,
            server_name_override=args.tls_server_name,
            token=os.environ.get("BLOBGATE_TOKEN") or None,
            root_certificates=pems["root_certificates"],
            certificate_chain=pems["certificate_chain"],
            private_key=pems["private_key"],
        )
    except ValueError as exc:
        where = "BLOBGATE_TOKEN" if str(exc).startswith("token ") else "--server"
        raise UsageError(f"{where}: {exc}") from None
    async with client:
        await args.handler(client, args)


async def _read_pem(path: str | None, name: str) -> bytes | None:
    if path is None:
        return None
    try:
        return await asyncio.to_thread(Path(path).read_bytes)
    except OSError as exc:
        raise UsageError(f"{name}: {exc.strerror or exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Known before parsing, so that a bad command line is reported as asked.
    report = Reporter(json_lines="--json" in argv)
    args = build_parser(json_errors=report.json_lines).parse_args(argv)
    try:
        asyncio.run(_run(args))
    except BlobgateError as exc:
        return report.call_failed(exc)
    except UsageError as exc:
        report.failure(USAGE, str(exc), EXIT_USAGE)
        return EXIT_USAGE
    except PartialFailure as exc:
        statuses = set()
        for failure in exc.failures:
            if failure.code is None:
                report.failure(LOCAL, failure.message, EXIT_FAILURE, name=failure.name)
                statuses.add(EXIT_FAILURE)
            else:
                status = exit_code(failure.code)
                report.failure(failure.code.name, failure.message, status, name=failure.name)
                statuses.add(status)
        return statuses.pop() if len(statuses) == 1 else EXIT_FAILURE
    except KeyboardInterrupt:
        report.failure(INTERRUPTED, "interrupted", EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. "| head"): not worth a message. Point
        # stdout at /dev/null so the interpreter's final flush fails quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        report.failure(LOCAL, f"{where}{exc.strerror or exc}", EXIT_FAILURE)
        return EXIT_FAILURE
    except Exception as exc:
        report.failure(LOCAL, f"unexpected {type(exc).__name__}: {exc}", EXIT_FAILURE)
        return EXIT_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
