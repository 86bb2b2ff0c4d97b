"""The ``blobgate`` command's versions (ls --versions, --version-id on stat,
get, cat, cp and rm, restore) run as a real subprocess against a gateway on
a versioned bucket (bucket_versioning) on moto's S3."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from blobgate.server.app import start_gateway
from tests.support.cli import Run, assert_one_line_error, run_cli
from tests.support.gateways import gateway_settings, stop_gateway


@pytest.fixture
async def server(s3_endpoint: str, bucket: str) -> AsyncIterator[str]:
    gateway = await start_gateway(gateway_settings(s3_endpoint, bucket, bucket_versioning=True))
    try:
        yield f"127.0.0.1:{gateway.port}"
    finally:
        await stop_gateway(gateway)


async def cli(server: str, *args: str, stdin: bytes | None = None) -> Run:
    result = await run_cli("--server", server, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result


async def cli_json(server: str, *args: str, stdin: bytes | None = None) -> Any:
    return json.loads((await cli(server, "--json", *args, stdin=stdin)).stdout)


async def versions(server: str, key: str) -> list[dict[str, Any]]:
    result = await cli(server, "--json", "ls", "--versions", key)
    return [json.loads(line) for line in result.stdout.splitlines()]


async def test_undo_an_overwrite_and_a_delete(server: str, tmp_path: Path) -> None:
    first = await cli_json(server, "put", "-", "notes.txt", stdin=b"the first text")
    second = await cli_json(server, "put", "-", "notes.txt", stdin=b"an overwrite")
    assert first["version_id"] and first["version_id"] != second["version_id"]

    listed = await versions(server, "notes.txt")
    assert {d["version_id"] for d in listed} == {first["version_id"], second["version_id"]}
    latest = [d for d in listed if d["is_latest"]]
    assert [d["version_id"] for d in latest] == [second["version_id"]]
    assert not any(d["is_delete_marker"] for d in listed)
    human = await cli(server, "ls", "--versions", "-l", "notes.txt")
    assert f"* {second['version_id']}  notes.txt" in human.text

    old = first["version_id"]
    assert (await cli(server, "cat", "notes.txt", "--version-id", old)).stdout == b"the first text"
    await cli(server, "get", "notes.txt", str(tmp_path / "old.txt"), "--version-id", old)
    assert (tmp_path / "old.txt").read_bytes() == b"the first text"
    described = await cli_json(server, "stat", "notes.txt", "--version-id", old)
    assert (described["version_id"], described["size"]) == (old, 14)
    current = (await cli(server, "stat", "notes.txt")).text
    assert "version-id:" in current and second["version_id"] in current

    removed = await cli(server, "rm", "notes.txt")
    assert "delete marker" in removed.text
    gone = await run_cli("--server", server, "stat", "notes.txt")
    assert_one_line_error(gone, 3, "blobgate: NOT_FOUND: ")

    restored = await cli_json(server, "restore", "notes.txt", "--version-id", old)
    assert restored["version_id"] not in {old, second["version_id"]}
    assert restored["sha256"] == described["sha256"]
    assert (await cli(server, "cat", "notes.txt")).stdout == b"the first text"
    copied = await cli_json(
        server, "cp", "notes.txt", "older.txt", "--version-id", second["version_id"]
    )
    assert copied["key"] == "older.txt" and copied["size"] == len(b"an overwrite")

    purged = await cli_json(server, "rm", "notes.txt", "--version-id", old)
    assert purged == {
        "key": "notes.txt",
        "deleted": True,
        "version_id": old,
        "delete_marker": False,
    }
    missing = await run_cli("--server", server, "stat", "notes.txt", "--version-id", old)
    assert_one_line_error(missing, 3, "blobgate: NOT_FOUND: ")
    assert old not in {d["version_id"] for d in await versions(server, "notes.txt")}
    usage = await run_cli("--server", server, "restore", "notes.txt")
    assert usage.returncode == 2 and "--version-id" in usage.stderr
