"""The contract from a client nobody here wrote: tests/node/client.mjs, a Node.js
program on @grpc/grpc-js and @grpc/proto-loader that loads storage.proto at run
time, drives a live gateway (Upload, Download, Stat, List, Presign, error
statuses, a resumable session cut and resumed, Copy and BatchDelete), and this
test checks that what it uploaded and copied reached S3 byte-exact.

Node and npm are required, not optional: without them this test fails. Its
packages come from tests/node/package-lock.json via ``npm ci``, run here once
per session when tests/node/node_modules is missing or older than the lock."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from blobgate.server.app import Gateway

NODE_DIR = Path(__file__).parent / "node"
CLIENT = NODE_DIR / "client.mjs"
NPM_CI_TIMEOUT = 180.0
CLIENT_TIMEOUT = 60.0


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not on PATH: the Node client test needs Node.js and npm")
    return path


@pytest.fixture(scope="session")
def node_client() -> Path:
    """tests/node/client.mjs with its node_modules installed from the lock."""
    node = _require("node")
    npm = _require("npm")
    lock = NODE_DIR / "package-lock.json"
    # npm ci writes node_modules/.package-lock.json; older than the lock = stale.
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=NPM_CI_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm ci in {NODE_DIR} took over {NPM_CI_TIMEOUT:g}s")
        if done.returncode != 0:
            pytest.fail(f"npm ci in {NODE_DIR} failed ({done.returncode}):\n{done.stderr}")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < 18:
        pytest.fail(f"the Node client needs Node.js 18 or later, found {version.stdout.strip()}")
    return CLIENT


async def run_node(client: Path, *args: str) -> tuple[int, str, str]:
    """Run the Node client without blocking the loop the gateway serves on."""
    proc = await asyncio.create_subprocess_exec(
        _require("node"),
        str(client),
        *args,
        cwd=client.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLIENT_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"the Node client did not finish in {CLIENT_TIMEOUT:g}s")
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.timeout(NPM_CI_TIMEOUT + CLIENT_TIMEOUT + 30)
async def test_node_client_round_trip(
    node_client: Path, gateway: Gateway, bucket: str, s3: Any, tmp_path: Path
) -> None:
    prefix = "from-node/"
    code, out, err = await run_node(node_client, f"127.0.0.1:{gateway.port}", str(tmp_path), prefix)
    assert code == 0, f"Node client exited {code}\nstderr:\n{err}\nstdout:\n{out}"
    # proto-loader resolved google/protobuf/*.proto from its bundled copies.
    assert "not found in any of the include paths" not in err, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    result = json.loads(lines[0])
    assert result["ok"] is True

    big = (tmp_path / "big.bin").read_bytes()
    small = (tmp_path / "small.bin").read_bytes()
    assert len(big) > 3 * 1024 * 1024
    uploads = result["uploads"]
    for name, blob in (("big", big), ("small", small)):
        up = uploads[name]
        # int64 reaches Node as a decimal string (longs: String).
        assert up["size"] == str(len(blob))
        assert up["sha256"] == hashlib.sha256(blob).hexdigest()
        assert up["initial_metadata"]["blobgate-upload"] == "accepted"
    assert uploads["big"]["content_type"] == "application/x-node-test"
    assert uploads["big"]["metadata"] == {"owner": "Node", "build-id": "42"}
    assert uploads["small"]["content_type"] == "text/plain"  # guessed from ".txt"

    downloads = result["downloads"]
    assert downloads["big"] == {"messages": 1 + 4, "bytes": len(big)}  # Object, 4 chunks
    assert downloads["small"] == {"messages": 2, "bytes": len(small)}
    assert downloads["range"]["bytes"] == 70_000

    assert result["list"]["keys"] == [f"{prefix}big.bin", f"{prefix}notes/small.txt"]
    assert result["list"]["common_prefixes"] == [f"{prefix}notes/"]
    assert result["presign"]["http_status"] == 200

    errors = result["errors"]
    assert (errors["stat_missing"]["code"], errors["stat_missing"]["name"]) == (5, "NOT_FOUND")
    assert f"{prefix}no-such-key" in errors["stat_missing"]["details"]
    assert errors["stat_empty_key"]["code"] == 3
    assert errors["download_missing"]["code"] == 5
    assert errors["upload_bad_sha256"]["code"] == 3
    assert errors["upload_wrong_size"]["code"] == 11
    assert errors["upload_empty_key"]["code"] == 3

    # Behind the gateway's back: S3 holds exactly the bytes Node sent, and
    # nothing from the failed uploads.
    for key, blob, etag in (
        (f"{prefix}big.bin", big, uploads["big"]["etag"]),
        (f"{prefix}notes/small.txt", small, uploads["small"]["etag"]),
    ):
        got = await s3.get_object(Bucket=bucket, Key=key)
        async with got["Body"] as body:
            assert await body.read() == blob, key
        assert got["ETag"].strip('"') == etag
    session = result["session"]
    assert session["persisted"] == session["part_size"] == 5 * 1024 * 1024
    blob = (tmp_path / "session.bin").read_bytes()
    assert session["size"] == str(len(blob))
    got = await s3.get_object(Bucket=bucket, Key=session["key"])
    async with got["Body"] as body:
        assert hashlib.sha256(await body.read()).digest() == hashlib.sha256(blob).digest()
    copies = result["copy"]
    assert [r["code"] for r in copies["results"]] == [0, 0, 9]  # OK, OK, FAILED_PRECONDITION
    assert copies["errors"]["missing_source"]["code"] == 5
    assert copies["errors"]["exists"]["code"] == 9
    assert copies["errors"]["too_many"]["code"] == 3
    # The replaced copy survived its stale if_match; the kept one is gone.
    got = await s3.get_object(Bucket=bucket, Key=copies["replaced"])
    async with got["Body"] as body:
        assert await body.read() == small
    assert got["Metadata"]["copied"] == "yes"
    assert got["Metadata"]["sha256"] == hashlib.sha256(small).hexdigest()
    listing = await s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert sorted(o["Key"] for o in listing["Contents"]) == sorted(
        [*result["list"]["keys"], session["key"], copies["replaced"]]
    )
    assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []
