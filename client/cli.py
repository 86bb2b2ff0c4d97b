"""The ``blobgate`` command: put, get, cat, list, describe, presign, copy,
move and delete objects, and whole trees of them.

    blobgate put q1.csv reports/q1.csv        # LOCAL "-" reads stdin
    blobgate get reports/q1.csv copy.csv      # LOCAL "-" writes stdout
    blobgate ls -l reports/ --delimiter /
    blobgate --json stat reports/q1.csv
    blobgate cp reports/q1.csv archive/ --to-bucket cold   # inside S3
    blobgate put -r ./site site/ -j 8         # a tree; a re-run skips unchanged files
    blobgate get -r site/ ./copy
    blobgate du site/ --delimiter /
    blobgate rm -r site/

The server is ``--server`` host:port, else ``$BLOBGATE_SERVER``, else
127.0.0.1:50051; ``consul://NAME`` (or ``consul://NAME?tag=TAG``) spreads the
calls over the passing instances of that Consul service, found through the
agent at ``$CONSUL_HTTP_ADDR`` (default 127.0.0.1:8500) with
``$CONSUL_HTTP_TOKEN``. ``--tls`` (implied by the other TLS options) talks
TLS, trusting the system's CAs or ``--ca-file``; ``$BLOBGATE_TOKEN`` (a JWT,
needs TLS) is sent as a bearer token on every call. ``--bucket`` empty means the
server's default. The global options may come before or after the subcommand.
``--json`` prints machine output: one JSON object for put, get, stat and
presign, cp, mv, du and the ``-r`` forms, one JSON object per line for ls (a
common prefix is ``{"prefix": ...}``). put and get (one bar for a whole tree)
draw a progress bar on stderr when it is a terminal, unless ``--json`` or
``--no-progress`` is given. A tree's PREFIX names a folder: ``site`` means
the keys under ``site/``.

When some files or keys of a tree command fail, the others still go; each
failure is a line on stderr, ``blobgate: NAME: CODE: message`` (``LOCAL`` for
a local file error), and the exit status is that code's, or 1 when they
differ.

A failure prints one line on stderr, ``blobgate: CODE: message``, and exits:

  0    success
  1    any other failure (INTERNAL, DATA_LOSS, RESOURCE_EXHAUSTED, local I/O, ...)
  2    usage: a bad command line, INVALID_ARGUMENT, OUT_OF_RANGE
  3    NOT_FOUND
  4    FAILED_PRECONDITION, PERMISSION_DENIED, UNAUTHENTICATED
  5    UNAVAILABLE, DEADLINE_EXCEEDED: the server or S3 is down or slow, try later
  130  interrupted
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import grpc

from blobgate.client import cli_commands, cli_trees
from blobgate.client.cli_commands import Command, PartialFailure, UsageError
from blobgate.client.client import Client
from blobgate.client.errors import BlobgateError

DEFAULT_SERVER = "127.0.0.1:50051"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4
EXIT_UNAVAILABLE = 5
EXIT_INTERRUPTED = 130

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


def exit_code(code: grpc.StatusCode) -> int:
    """The exit status for a call that failed with ``code``."""
    return _EXIT_CODES.get(code, EXIT_FAILURE)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other failure.
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _metadata_item(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _jobs(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be 1 to 64, got {text}")
    return value


def _recursive(single: Command, tree: Command) -> Command:
    """The handler of a command whose ``-r`` form works on a tree."""

    async def run(client: Client, args: argparse.Namespace) -> None:
        await (tree if args.recursive else single)(client, args)

    return run


def _add_tree_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("-r", "--recursive", action="store_true", help=what)
    parser.add_argument(
        "-j", "--jobs", type=_jobs, default=4, metavar="N", help="with -r: files at once (4)"
    )


def _add_global_options(parser: argparse.ArgumentParser, *, subcommand: bool) -> None:
    # On a subcommand the defaults are suppressed, so that an option given
    # before the subcommand is not overwritten by the subcommand's default.
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if subcommand else value

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--server",
        default=default(None),
        metavar="ADDRESS",
        help="gateway HOST:PORT, or consul://SERVICE[?tag=TAG] for the passing instances "
        f"of a Consul service (default: $BLOBGATE_SERVER, else {DEFAULT_SERVER})",
    )
    group.add_argument(
        "--bucket", default=default(""), help="bucket (default: the server's default bucket)"
    )
    group.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON for machines"
    )
    group.add_argument(
        "--tls",
        action="store_true",
        default=default(False),
        help="connect with TLS (implied by the other TLS options)",
    )
    group.add_argument(
        "--ca-file",
        default=default(None),
        metavar="PEM",
        help="CA certificates to trust (default: the system's)",
    )
    group.add_argument(
        "--cert-file",
        default=default(None),
        metavar="PEM",
        help="client certificate chain, for servers that require one (with --key-file)",
    )
    group.add_argument(
        "--key-file", default=default(None), metavar="PEM", help="client private key"
    )
    group.add_argument(
        "--tls-server-name",
        default=default(None),
        metavar="NAME",
        help="name the server's certificate must carry (default: the host of --server)",
    )
    group.add_argument(
        "--timeout",
        type=_positive,
        default=default(60.0),
        metavar="SECONDS",
        help="deadline of each call except transfers (default: 60)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``blobgate``."""
    parser = _Parser(prog="blobgate", description="Store and fetch objects through blobgate.")
    _add_global_options(parser, subcommand=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        _add_global_options(sub, subcommand=True)
        return sub

    put = command(
        "put",
        _recursive(cli_commands.put, cli_trees.put_tree),
        "upload a file (or stdin) as an object, or a directory (-r) under a prefix",
    )
    put.add_argument("local", metavar="LOCAL", help="file to upload, - for stdin; with -r: DIR")
    put.add_argument("key", metavar="KEY", help="with -r: PREFIX")
    _add_tree_options(put, "upload every file under DIR as PREFIX/its path; skip unchanged ones")
    put.add_argument("--content-type", default="", help="default: guessed from KEY")
    put.add_argument(
        "--metadata",
        type=_metadata_item,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="user metadata; repeat for more",
    )
    put.add_argument("--if-none-match", action="store_true", help="fail if KEY exists")
    put.add_argument("--if-match", default="", metavar="ETAG", help="replace only this version")
    put.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")

    get = command(
        "get",
        _recursive(cli_commands.get, cli_trees.get_tree),
        "download an object to a file (or stdout), or a prefix (-r) into a directory",
    )
    get.add_argument("key", metavar="KEY", help="with -r: PREFIX")
    get.add_argument(
        "local", metavar="LOCAL", help="file or directory to write, - for stdout; with -r: DIR"
    )
    _add_tree_options(get, "download every object under PREFIX into DIR; skip unchanged files")
    get.add_argument("--offset", type=int, default=0, help="first byte; negative: from the end")
    get.add_argument("--limit", type=int, default=0, help="most bytes (default: to the end)")
    get.add_argument("--if-match", default="", metavar="ETAG", help="only this version")
    get.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")

    cat = command("cat", cli_commands.cat, "write an object to stdout")
    cat.add_argument("key", metavar="KEY")
    cat.add_argument("--offset", type=int, default=0, help="first byte; negative: from the end")
    cat.add_argument("--limit", type=int, default=0, help="most bytes (default: to the end)")
    cat.add_argument("--if-match", default="", metavar="ETAG", help="only this version")

    ls = command("ls", cli_commands.ls, "list objects under a prefix")
    ls.add_argument("prefix", metavar="PREFIX", nargs="?", default="")
    ls.add_argument("--delimiter", default="", help='group keys by this, e.g. "/"')
    ls.add_argument("-l", "--long", action="store_true", help="show size and time")
    ls.add_argument("--page-size", type=int, default=0, help=argparse.SUPPRESS)

    stat = command("stat", cli_commands.stat, "describe an object")
    stat.add_argument("key", metavar="KEY")

    presign = command("presign", cli_commands.presign, "print a URL for a plain HTTP client")
    presign.add_argument("key", metavar="KEY")
    presign.add_argument("--method", type=str.upper, choices=["GET", "PUT"], default="GET")
    presign.add_argument(
        "--expires", type=_positive, metavar="SECONDS", help="default: the server's 15 minutes"
    )
    presign.add_argument("--content-type", default="", help="PUT only; the uploader must send it")

    rm = command(
        "rm",
        _recursive(cli_commands.rm, cli_trees.rm_tree),
        "delete an object, or every object under a prefix (-r)",
    )
    rm.add_argument("key", metavar="KEY", help="with -r: PREFIX")
    rm.add_argument("--if-match", default="", metavar="ETAG", help="delete only this version")
    rm.add_argument(
        "-r", "--recursive", action="store_true", help="delete every object under PREFIX"
    )

    for name, handler, help_text in (
        ("cp", cli_commands.cp, "copy an object inside the server's S3"),
        ("mv", cli_commands.mv, "copy an object, then delete the source if it did not change"),
    ):
        move = command(name, handler, help_text)
        move.add_argument("source", metavar="SRC")
        move.add_argument("destination", metavar="DST", help='ending in "/": SRC\'s name is added')
        move.add_argument(
            "--to-bucket", default="", metavar="BUCKET", help="DST's bucket (default: --bucket)"
        )
        move.add_argument("--if-none-match", action="store_true", help="fail if DST exists")
        move.add_argument("--if-match", default="", metavar="ETAG", help="replace only this DST")
        if name == "cp":
            move.add_argument(
                "--source-if-match", default="", metavar="ETAG", help="copy only this version"
            )
            move.add_argument(
                "--content-type", default="", help="replace the content type and metadata"
            )
            move.add_argument(
                "--metadata",
                type=_metadata_item,
                action="append",
                default=[],
                metavar="NAME=VALUE",
                help="replace the metadata (repeat for more; the checksums stay)",
            )

    du = command("du", cli_trees.du, "count the objects and bytes under a prefix")
    du.add_argument("prefix", metavar="PREFIX", nargs="?", default="")
    du.add_argument("--delimiter", default="", help='also per group one level down, e.g. "/"')
    return parser


async def _run(args: argparse.Namespace) -> None:
    server = args.server or os.environ.get("BLOBGATE_SERVER") or DEFAULT_SERVER
    if (args.cert_file is None) != (args.key_file is None):
        raise UsageError("--cert-file and --key-file go together")
    try:
        client = Client(
            server,
            timeout=args.timeout,
            bucket=args.bucket,
            tls=args.tls,
            root_certificates=await _read_pem(args.ca_file),
            certificate_chain=await _read_pem(args.cert_file),
            private_key=await _read_pem(args.key_file),
            server_name_override=args.tls_server_name,
            token=os.environ.get("BLOBGATE_TOKEN") or None,
        )
    except ValueError as exc:
        tls_files = (args.ca_file, args.cert_file, args.key_file)
        where = "TLS files" if any(tls_files) and "PEM" in str(exc) else "--server"
        if str(exc).startswith("token "):
            where = "BLOBGATE_TOKEN"
        raise UsageError(f"{where}: {exc}") from None
    async with client:
        await args.handler(client, args)


async def _read_pem(path: str | None) -> bytes | None:
    return None if path is None else await asyncio.to_thread(Path(path).read_bytes)


def _fail(message: str) -> None:
    print(f"blobgate: {' '.join(message.split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(_run(args))
    except BlobgateError as exc:
        _fail(f"{exc.code.name}: {exc.message or 'no details'}")
        return exit_code(exc.code)
    except UsageError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except PartialFailure as exc:
        codes = set()
        for failure in exc.failures:
            code = failure.code.name if failure.code is not None else "LOCAL"
            _fail(f"{failure.name}: {code}: {failure.message or 'no details'}")
            codes.add(exit_code(failure.code) if failure.code is not None else EXIT_FAILURE)
        return codes.pop() if len(codes) == 1 else EXIT_FAILURE
    except KeyboardInterrupt:
        _fail("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. "| head"): not worth a message. Point
        # stdout at /dev/null so the interpreter's final flush fails quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{exc.strerror or exc}")
        return EXIT_FAILURE
    except Exception as exc:
        _fail(f"unexpected {type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
