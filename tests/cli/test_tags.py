"""``blobgate`` tags, storage classes and lifetimes, as a real subprocess
against a real gateway: put (and put -r, cp) with --tag, --storage-class and
--expire-days, tag KEY NAME=VALUE..., stat --tags, with --json and the exit
codes of refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blobgate.server.app import Gateway
from blobgate.server.core.tags import EXPIRY_TAG
from tests.support.cli import Run, assert_one_line_error, run_cli


@pytest.fixture
def server(gateway: Gateway) -> str:
    return f"127.0.0.1:{gateway.port}"


async def cli(server: str, *args: str, stdin: bytes | None = None) -> Run:
    result = await run_cli("--server", server, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result


async def stat_json(server: str, key: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads((await cli(server, "--json", "stat", "--tags", key)).stdout)
    return doc


async def test_put_with_tags_class_and_lifetime_then_tag_and_stat(server: str) -> None:
    put = await cli(
        server,
        "--json",
        "put",
        "-",
        "t/a.txt",
        "--tag",
        "team=data",
        "--tag",
        "note=a b",
        "--storage-class",
        "standard_ia",
        "--expire-days",
        "30",
        stdin=b"hello",
    )
    assert json.loads(put.stdout)["storage_class"] == "STANDARD_IA"
    doc = await stat_json(server, "t/a.txt")
    assert doc["tags"] == {"team": "data", "note": "a b", EXPIRY_TAG: "30"}
    assert doc["storage_class"] == "STANDARD_IA"

    tagged = await cli(server, "tag", "t/a.txt", "team=ml", "owner=ana")
    assert tagged.text.startswith("tag t/a.txt: ")
    assert "owner=ana" in tagged.text and f"{EXPIRY_TAG}=30" in tagged.text
    assert (await stat_json(server, "t/a.txt"))["tags"] == {
        "team": "ml",
        "owner": "ana",
        EXPIRY_TAG: "30",
    }
    human = await cli(server, "stat", "--tags", "t/a.txt")
    assert "tag team:" in human.text and "storage-class:" in human.text
    cleared = await cli(server, "--json", "tag", "t/a.txt")
    assert json.loads(cleared.stdout)["tags"] == {EXPIRY_TAG: "30"}


async def test_cp_keeps_or_replaces_tags_and_sets_the_class(server: str) -> None:
    await cli(server, "put", "-", "src", "--tag", "keep=1", stdin=b"x")
    await cli(server, "cp", "src", "kept", "--storage-class", "ONEZONE_IA")
    kept = await stat_json(server, "kept")
    assert kept["tags"] == {"keep": "1"} and kept["storage_class"] == "ONEZONE_IA"
    await cli(server, "cp", "src", "replaced", "--tag", "new=2")
    assert (await stat_json(server, "replaced"))["tags"] == {"new": "2"}
    await cli(server, "cp", "src", "bare", "--replace-tags")
    assert (await stat_json(server, "bare"))["tags"] == {}


async def test_put_tree_tags_every_file(server: str, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_bytes(b"b")
    await cli(server, "put", "-r", str(tmp_path), "tree/", "--tag", "batch=7", "--expire-days", "7")
    for key in ("tree/a.txt", "tree/sub/b.txt"):
        assert (await stat_json(server, key))["tags"] == {"batch": "7", EXPIRY_TAG: "7"}


async def test_refusals_exit_with_their_codes(server: str) -> None:
    await cli(server, "put", "-", "x", stdin=b"x")
    result = await run_cli("--server", server, "tag", "x", "aws:owner=me")
    assert_one_line_error(result, 2, "blobgate: INVALID_ARGUMENT: ")
    result = await run_cli("--server", server, "put", "-", "y", "--expire-days", "3", stdin=b"y")
    assert_one_line_error(result, 2, "blobgate: INVALID_ARGUMENT: ")
    assert "1, 7, 30, 90, 365" in result.stderr
    result = await run_cli("--server", server, "put", "-", "y", "--storage-class", "COLD")
    assert_one_line_error(result, 2, "blobgate: INVALID_ARGUMENT: ")
    result = await run_cli("--server", server, "tag", "missing", "a=b")
    assert_one_line_error(result, 3, "blobgate: NOT_FOUND: ")
    result = await run_cli("--server", server, "tag", "x", "a=b", "--if-match", "nope")
    assert_one_line_error(result, 4, "blobgate: FAILED_PRECONDITION: ")
    result = await run_cli("--server", server, "--json", "tag", "x", "novalue")
    assert result.returncode == 2
    assert json.loads(result.stderr)["code"] == "USAGE"
