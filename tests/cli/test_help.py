"""The ``blobgate`` command's own surface: ``--version``, a ``--help`` that
lists the variables it reads, its exit codes (the same list as README.md's)
and examples; failures as one JSON line with ``--json``; and server
addresses, where a host alone means port 50051."""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path

import grpc
import pytest

from blobgate.client import Client
from blobgate.client.cli.failures import EXIT_CODE_HELP, exit_code
from blobgate.client.targets import dial_address
from blobgate.server.app import Gateway
from tests.support import ROOT
from tests.support.cli import assert_one_line_error, run_cli


@pytest.fixture
def server(gateway: Gateway) -> str:
    return f"127.0.0.1:{gateway.port}"


def readme_exit_codes() -> list[tuple[int, str]]:
    """The rows of README.md's exit code table: (code, meaning)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(\d+)` \| (.+?) \|$", section, re.MULTILINE)
    assert rows, "README.md has no exit code table under '### Exit codes'"
    return [(int(code), meaning) for code, meaning in rows]


async def test_version_is_the_installed_distributions() -> None:
    result = await run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.text == f"blobgate {importlib.metadata.version('blobgate')}\n"


async def test_help_shows_variables_exit_codes_and_examples() -> None:
    result = await run_cli("--help")
    assert result.returncode == 0, result.stderr
    text = result.text
    for variable in ["BLOBGATE_SERVER", "BLOBGATE_TOKEN", "CONSUL_HTTP_ADDR", "GRPC_VERBOSITY"]:
        assert f"\n  {variable} " in text, variable
    flat = " ".join(text.split())
    for code, meaning in readme_exit_codes():
        assert f" {code} {meaning}" in flat, (code, meaning)
    assert "examples:\n  blobgate put " in text


def test_the_readme_lists_the_exit_codes_the_command_uses() -> None:
    """README.md's table is the one list: --help prints the same rows, and
    each gRPC status a row names exits with that row's code."""
    rows = readme_exit_codes()
    assert rows == [(code, meaning) for code, meaning in EXIT_CODE_HELP]
    named = {}
    for code, meaning in rows:
        for status in re.findall(r"\b[A-Z]{2,}(?:_[A-Z]+)*\b", meaning):
            if status in grpc.StatusCode.__members__:
                named[status] = code
                assert exit_code(grpc.StatusCode[status]) == code, status
    for status in grpc.StatusCode:
        if exit_code(status) != 1:  # each code other than "any other failure" is listed
            assert named.get(status.name) == exit_code(status), status


async def test_json_failures_are_one_json_line_on_stderr(server: str, tmp_path: Path) -> None:
    missing = await run_cli("--server", server, "--json", "stat", "nope.txt")
    assert (missing.returncode, missing.stdout) == (3, b"")
    assert missing.stderr.count("\n") == 1, missing.stderr
    document = json.loads(missing.stderr)
    assert (document["code"], document["exit_code"]) == ("NOT_FOUND", 3)
    assert document["message"]

    usage = await run_cli("--json", "stat")  # KEY missing: argparse's own error
    assert (usage.returncode, usage.stderr.count("\n")) == (2, 1), usage.stderr
    assert json.loads(usage.stderr)["code"] == "USAGE"

    local = await run_cli("--server", server, "put", str(tmp_path / "absent"), "k", "--json")
    assert (local.returncode, local.stderr.count("\n")) == (1, 1), local.stderr
    assert json.loads(local.stderr)["code"] == "LOCAL"
    assert "absent" in json.loads(local.stderr)["message"]


@pytest.mark.parametrize(
    ("given", "dialled"),
    [
        ("127.0.0.1", "127.0.0.1:50051"),
        ("gw.internal", "gw.internal:50051"),
        ("gw.internal:7000", "gw.internal:7000"),
        ("[::1]", "[::1]:50051"),
        ("::1", "[::1]:50051"),
        ("[::1]:7000", "[::1]:7000"),
        ("dns:///gw.internal:7000", "dns:///gw.internal:7000"),
        ("unix:/run/blobgate.sock", "unix:/run/blobgate.sock"),
    ],
)
async def test_a_host_alone_means_port_50051(given: str, dialled: str) -> None:
    assert dial_address(given) == dialled
    async with Client(given) as client:
        assert client.instances == (dialled,)


async def test_consul_targets_keep_their_form() -> None:
    async with Client("consul://blobgate?tag=blue", consul_addr="127.0.0.1:1") as client:
        assert client.target == "consul://blobgate?tag=blue"


@pytest.mark.parametrize("given", ["gw:abc", "gw:0", "gw:65536", "[::1", "[::1]x", ":7", "::zz"])
async def test_bad_server_addresses_are_usage_errors(given: str) -> None:
    with pytest.raises(ValueError):
        dial_address(given)
    result = await run_cli("--server", given, "stat", "k")
    assert_one_line_error(result, 2, "blobgate: --server: ")
