"""The command line of ``blobgate``: its options, subcommands and help."""

from __future__ import annotations

import argparse
import importlib.metadata
import textwrap
from typing import Any, NoReturn

from blobgate.client.cli import commands as cli_commands
from blobgate.client.cli import trees as cli_trees
from blobgate.client.cli.commands import Command
from blobgate.client.cli.failures import EXIT_CODE_HELP, EXIT_USAGE, USAGE, Reporter
from blobgate.client.client import Client
from blobgate.client.targets import DEFAULT_PORT

DEFAULT_SERVER = f"127.0.0.1:{DEFAULT_PORT}"

DESCRIPTION = """\
Store and fetch objects through blobgate.

The server is --server, else $BLOBGATE_SERVER, else 127.0.0.1:50051; a host
without a port means port 50051. consul://NAME (or consul://NAME?tag=TAG)
spreads the calls over the passing instances of that Consul service. --tls
(implied by the other TLS options) talks TLS, trusting the system's CAs or
--ca-file. The global options may come before or after the subcommand.
--json prints machine output on stdout, and each failure as a JSON object
on stderr. Without --json, a failure is one line on stderr,
"blobgate: CODE: message"."""

ENVIRONMENT = (
    ("BLOBGATE_SERVER", f"the server when --server is not given (default {DEFAULT_SERVER})"),
    ("BLOBGATE_TOKEN", "a bearer token (a JWT) sent on every call; needs TLS"),
    ("CONSUL_HTTP_ADDR", "the Consul agent for consul:// servers (default 127.0.0.1:8500)"),
    ("CONSUL_HTTP_TOKEN", "the ACL token sent to that agent"),
    ("CONSUL_HTTP_SSL", "true: talk HTTPS to that agent"),
    ("GRPC_VERBOSITY", "set (e.g. to debug) to see gRPC's own log lines, off by default"),
)

EXAMPLES = """\
  blobgate put q1.csv reports/q1.csv        # LOCAL "-" reads stdin
  blobgate get reports/q1.csv copy.csv      # LOCAL "-" writes stdout
  blobgate ls -l reports/ --delimiter /
  blobgate --json stat reports/q1.csv
  blobgate cp reports/q1.csv archive/ --to-bucket cold   # inside S3
  blobgate ls --versions reports/q1.csv     # every version (a versioned bucket)
  blobgate restore reports/q1.csv --version-id ID         # undo an overwrite
  blobgate put x.csv tmp/x.csv --tag team=data --storage-class STANDARD_IA
  blobgate put x.csv tmp/x.csv --expire-days 30   # S3 deletes it after 30 days
  blobgate tag tmp/x.csv team=ml owner=ana        # replaces the tags
  blobgate stat --tags tmp/x.csv
  blobgate put -r ./site site/ -j 8         # a tree; a re-run skips unchanged files
  blobgate get -r site/ ./copy
  blobgate du site/ --delimiter /
  blobgate rm -r site/
  BLOBGATE_TOKEN=$(cat token.jwt) blobgate --server gw.internal --ca-file ca.crt ls"""


def version() -> str:
    """The installed distribution's version."""
    try:
        return importlib.metadata.version("blobgate")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def epilog() -> str:
    """The end of ``--help``: the variables read, the exit codes, examples."""
    width = max(len(name) for name, _ in ENVIRONMENT)
    lines = ["environment:"]
    lines += [f"  {name:<{width}}  {meaning}" for name, meaning in ENVIRONMENT]
    lines += ["", "exit codes:"]
    lines += [
        textwrap.fill(meaning, 79, initial_indent=f"  {code:<3}  ", subsequent_indent=" " * 7)
        for code, meaning in EXIT_CODE_HELP
    ]
    lines += ["", "examples:", EXAMPLES]
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other
    failure: JSON when the command line asks for ``--json``."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        Reporter(json_lines=self.json_errors).failure(
            USAGE, f"{message} (see '{self.prog} --help')", EXIT_USAGE
        )
        self.exit(EXIT_USAGE)


def _metadata_item(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _add_write_options(parser: argparse.ArgumentParser, *, copy: bool = False) -> None:
    """--tag, --storage-class and --expire-days of put and cp."""
    what = "the copy's tags, replacing the source's" if copy else "an object tag"
    parser.add_argument(
        "--tag",
        type=_metadata_item,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"{what}; repeat for more (S3 allows 10)",
    )
    parser.add_argument(
        "--storage-class",
        default="",
        metavar="CLASS",
        help="S3 storage class, e.g. STANDARD_IA, GLACIER_IR (default: STANDARD)",
    )
    keeps = " (default: the source's)" if copy else ""
    parser.add_argument(
        "--expire-days",
        type=int,
        default=0,
        metavar="N",
        help=f"S3 deletes the object N days after it is written; N must be one the "
        f"server allows{keeps}",
    )


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


def _add_version_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--version-id", default="", metavar="ID", help=what)


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
        help="gateway HOST[:PORT] (port 50051 if none), or consul://SERVICE[?tag=TAG] for the "
        "passing instances of a Consul service (default: $BLOBGATE_SERVER, else "
        f"{DEFAULT_SERVER})",
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


def build_parser(*, json_errors: bool = False) -> argparse.ArgumentParser:
    """The command line of ``blobgate``; its own errors are JSON lines with
    ``json_errors``."""
    parser = _Parser(
        prog="blobgate",
        description=DESCRIPTION,
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.json_errors = json_errors
    parser.add_argument("--version", action="version", version=f"blobgate {version()}")
    _add_global_options(parser, subcommand=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        assert isinstance(sub, _Parser)
        sub.json_errors = json_errors
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
    _add_write_options(put)
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
    _add_version_option(get, "download this version of KEY (see ls --versions)")
    get.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")

    cat = command("cat", cli_commands.cat, "write an object to stdout")
    cat.add_argument("key", metavar="KEY")
    cat.add_argument("--offset", type=int, default=0, help="first byte; negative: from the end")
    cat.add_argument("--limit", type=int, default=0, help="most bytes (default: to the end)")
    cat.add_argument("--if-match", default="", metavar="ETAG", help="only this version")
    _add_version_option(cat, "write this version of KEY (see ls --versions)")

    ls = command("ls", cli_commands.ls, "list objects under a prefix")
    ls.add_argument("prefix", metavar="PREFIX", nargs="?", default="")
    ls.add_argument("--delimiter", default="", help='group keys by this, e.g. "/"')
    ls.add_argument("-l", "--long", action="store_true", help="show size and time")
    ls.add_argument(
        "--versions",
        action="store_true",
        help="every version and delete marker of each key, newest first (* marks the "
        "latest); a bucket that is not versioned shows one version, null, per key",
    )
    ls.add_argument("--page-size", type=int, default=0, help=argparse.SUPPRESS)

    stat = command("stat", cli_commands.stat, "describe an object")
    stat.add_argument("key", metavar="KEY")
    _add_version_option(stat, "describe this version of KEY")
    stat.add_argument("--tags", action="store_true", help="also show the object's tags")

    tag = command("tag", cli_commands.tag, "replace an object's tags (none given: remove them)")
    tag.add_argument("key", metavar="KEY")
    tag.add_argument("tags", type=_metadata_item, nargs="*", metavar="NAME=VALUE")
    tag.add_argument("--if-match", default="", metavar="ETAG", help="only this version")

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
    _add_version_option(
        rm,
        "remove this version of KEY for good (needs the purge right); without it a "
        "versioned bucket keeps a delete marker and every version (restorable)",
    )
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
            _add_version_option(move, "copy this version of SRC (see ls --versions)")
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
            _add_write_options(move, copy=True)
            move.add_argument(
                "--replace-tags", action="store_true", help="the copy gets --tag's tags only"
            )

    undo = command(
        "restore",
        cli_commands.restore,
        "make an earlier version of a key current again (a copy of it onto the key)",
    )
    undo.add_argument("key", metavar="KEY")
    undo.add_argument(
        "--version-id", required=True, metavar="ID", help="the version to restore (ls --versions)"
    )

    du = command("du", cli_trees.du, "count the objects and bytes under a prefix")
    du.add_argument("prefix", metavar="PREFIX", nargs="?", default="")
    du.add_argument("--delimiter", default="", help='also per group one level down, e.g. "/"')
    return parser
