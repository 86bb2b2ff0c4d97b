"""The command line the benchmarks share: the parser, the options that start
the gateway, and how a run was started."""

from __future__ import annotations

import argparse
import shlex
import sys


def bench_parser(module: str, description: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m MODULE``, its description (the module's
    docstring) shown as written."""
    return argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_gateway_options(parser: argparse.ArgumentParser) -> None:
    """--gateway-cmd and --gateway-log-level: how the gateway process starts."""
    parser.add_argument(
        "--gateway-cmd", help="command that starts the gateway (default: blobgate-server)"
    )
    parser.add_argument("--gateway-log-level", default="WARNING")


def command_line(module: str) -> str:
    """The command that started this run of ``python -m MODULE``."""
    return shlex.join([sys.executable, "-m", module, *sys.argv[1:]])
