"""The ``blobgate`` tree commands (put -r, get -r, rm -r, du) and cp / mv,
run as real subprocesses against a gateway on moto, on a real directory tree:
nested folders, empty files, names with spaces and non-ASCII."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blobgate.server.app import start_gateway
from tests.support.cli import Run, run_cli
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import payload

# name below the tree -> size
TREE = {
    "top.txt": 11,
    "empty.bin": 0,
    "with space/file name.txt": 2_000,
    "ünïcødé/日本語 ファイル.dat": 70_000,
    "deep/a/b/c/d.bin": 300_000,
    "deep/a/empty too": 0,
}


@pytest.fixture
async def servers(moto_endpoint: str, bucket: str) -> AsyncIterator[tuple[str, str]]:
    """The gateway's address, and a second bucket it allows."""
    other = f"{bucket}-other"
    settings = gateway_settings(moto_endpoint, bucket, allowed_buckets=[other])
    gw = await start_gateway(settings)
    try:
        yield f"127.0.0.1:{gw.port}", other
    finally:
        await stop_gateway(gw)


def make_tree(root: Path, files: dict[str, int] = TREE) -> dict[str, bytes]:
    contents = {}
    for seed, (name, size) in enumerate(sorted(files.items())):
        path = root.joinpath(*name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        contents[name] = payload(size, seed=seed)
        path.write_bytes(contents[name])
    return contents


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def ok(server: str, *args: str) -> Run:
    result = await run_cli("--server", server, *args)
    assert result.returncode == 0, result.stderr
    return result


async def ok_json(server: str, *args: str) -> dict[str, object]:
    result = await ok(server, "--json", *args)
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


async def test_a_tree_goes_up_comes_back_and_is_skipped_when_unchanged(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    server, _ = servers
    source = tmp_path / "source"
    contents = make_tree(source)
    total = sum(TREE.values())

    up = await ok_json(server, "put", "-r", str(source), "trees", "-j", "3")
    assert up == {
        "files": len(TREE),
        "bytes": total,
        "skipped": 0,
        "skipped_bytes": 0,
        "failed": 0,
        "failures": [],
    }
    listed = await ok(server, "ls", "trees/")
    assert sorted(listed.text.splitlines()) == sorted(f"trees/{name}" for name in TREE)

    # A re-run sends nothing and says so; a changed file goes up again.
    again = await ok(server, "put", "-r", str(source), "trees/")
    assert "0 files sent" in again.text and f"{len(TREE)} unchanged skipped" in again.text
    (source / "top.txt").write_bytes(b"changed, and longer")
    contents["top.txt"] = b"changed, and longer"
    third = await ok_json(server, "put", "-r", str(source), "trees")
    assert (third["files"], third["skipped"]) == (1, len(TREE) - 1)

    target = tmp_path / "target"
    down = await ok_json(server, "get", "-r", "trees", str(target), "-j", "2")
    assert (down["files"], down["skipped"], down["failed"]) == (len(TREE), 0, 0)
    assert read_tree(target) == contents  # every file, empty ones included, no temp files
    rerun = await ok(server, "get", "-r", "trees/", str(target))
    assert f"{len(TREE)} unchanged skipped" in rerun.text


async def test_du_totals_equal_the_files_sizes(servers: tuple[str, str], tmp_path: Path) -> None:
    server, _ = servers
    make_tree(tmp_path / "t")
    await ok(server, "put", "-r", str(tmp_path / "t"), "du")
    total = sum(TREE.values())
    assert await ok_json(server, "du", "du/") == {
        "prefix": "du/",
        "objects": len(TREE),
        "bytes": total,
    }
    grouped = await ok_json(server, "du", "du/", "--delimiter", "/")
    groups = {g["prefix"]: (g["objects"], g["bytes"]) for g in grouped["groups"]}  # type: ignore[attr-defined,index]
    assert groups == {
        "du/deep/": (2, 300_000),
        "du/with space/": (1, 2_000),
        "du/ünïcødé/": (1, 70_000),
    }
    human = await ok(server, "du", "du/", "--delimiter", "/")
    lines = human.text.splitlines()
    assert lines[-1].startswith("total") and f"({total} bytes)" in lines[-1]
    assert any("(objects here)" in line and "(11 bytes)" in line for line in lines)


async def test_cp_and_mv(servers: tuple[str, str], tmp_path: Path) -> None:
    server, other = servers
    (tmp_path / "a.txt").write_bytes(b"alpha")
    await ok(server, "put", str(tmp_path / "a.txt"), "docs/a.txt", "--metadata", "team=x")
    copied = await ok_json(server, "cp", "docs/a.txt", "backup/", "--to-bucket", other)
    assert (copied["bucket"], copied["key"], copied["metadata"]) == (
        other,
        "backup/a.txt",
        {"team": "x"},
    )
    replaced = await ok_json(server, "cp", "docs/a.txt", "docs/b.txt", "--metadata", "team=y")
    assert replaced["metadata"] == {"team": "y"} and replaced["sha256"] == copied["sha256"]
    refused = await run_cli("--server", server, "cp", "docs/a.txt", "docs/b.txt", "--if-none-match")
    assert refused.returncode == 4 and "FAILED_PRECONDITION" in refused.stderr

    moved = await ok(server, "mv", "docs/a.txt", "moved/a.txt")
    assert moved.text.startswith("mv docs/a.txt -> ") and "moved/a.txt" in moved.text
    assert (await run_cli("--server", server, "stat", "docs/a.txt")).returncode == 3
    got = await ok(server, "cat", "moved/a.txt")
    assert got.stdout == b"alpha"
    missing = await run_cli("--server", server, "mv", "docs/none.txt", "x.txt")
    assert missing.returncode == 3 and missing.stderr.startswith("blobgate: NOT_FOUND")


async def test_rm_r_leaves_nothing(servers: tuple[str, str], tmp_path: Path) -> None:
    server, _ = servers
    make_tree(tmp_path / "t")
    await ok(server, "put", "-r", str(tmp_path / "t"), "gone")
    await ok(server, "put", "-", "gone-but-not-under.txt")  # a sibling the prefix must spare
    removed = await ok_json(server, "rm", "-r", "gone")
    assert (removed["deleted"], removed["bytes"], removed["failed"]) == (
        len(TREE),
        sum(TREE.values()),
        0,
    )
    assert (await ok(server, "ls", "gone/")).text == ""
    assert (await ok_json(server, "du", "gone/"))["objects"] == 0
    assert (await ok(server, "ls")).text.splitlines() == ["gone-but-not-under.txt"]
    again = await ok(server, "rm", "-r", "gone/")
    assert "0 objects deleted" in again.text
    empty = await run_cli("--server", server, "rm", "-r", "")
    assert empty.returncode == 2 and "PREFIX" in empty.stderr


async def test_one_of_a_kind_is_counted_in_the_singular(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    server, _ = servers
    make_tree(tmp_path / "one", {"only.txt": 3})
    sent = await ok(server, "put", "-r", str(tmp_path / "one"), "single")
    assert ": 1 file sent, 3 B (3 bytes)" in sent.text, sent.text
    usage = (await ok(server, "du", "single/")).text.splitlines()
    assert usage[-1].split()[:3] == ["total", "1", "object"], usage
    assert "1 objects" not in "\n".join(usage)
    removed = await ok(server, "rm", "-r", "single")
    assert ": 1 object deleted, 3 B" in removed.text, removed.text


async def test_partial_failures_name_each_file_and_the_rest_goes_through(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    server, _ = servers
    root = tmp_path / "t"
    long_name = "/".join(["d" * 200] * 6) + "/too-long.txt"  # a key over 1024 bytes
    make_tree(root, {"fine.txt": 5, long_name: 3})
    result = await run_cli("--server", server, "put", "-r", str(root), "part")
    assert result.returncode == 2, result.stderr  # INVALID_ARGUMENT
    assert "1 file sent" in result.text and "1 failed" in result.text
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "too-long.txt: INVALID_ARGUMENT:" in lines[0], lines
    assert (await ok(server, "ls", "part/")).text.splitlines() == ["part/fine.txt"]

    # A key that is a folder locally too: that file fails, locally; the rest arrives.
    await ok(server, "put", "-", "clash/x", "--if-none-match")
    await ok(server, "put", "-", "clash/x/inner")
    await ok(server, "put", "-", "clash/y")
    out = tmp_path / "out"
    got = await run_cli("--server", server, "--json", "get", "-r", "clash", str(out))
    assert got.returncode == 1, got.stderr
    document = json.loads(got.stdout)
    assert document["files"] == 2 and document["failed"] == 1
    assert document["failures"][0]["code"] is None
    # With --json the failure on stderr is a JSON line too, naming the key.
    [line] = got.stderr.splitlines()
    failure = json.loads(line)
    assert (failure["code"], failure["exit_code"]) == ("LOCAL", 1)
    assert failure["name"] == document["failures"][0]["name"]
