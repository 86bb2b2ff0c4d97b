"""The contract from a client nobody here wrote: tests/node/client.mjs, a Node.js
program on @grpc/grpc-js and @grpc/proto-loader that loads storage.proto at run
time, drives a live gateway (Upload, Download, Stat, List, Presign, error
statuses, a resumable session cut and resumed, Copy, BatchDelete and SetTags), and this
test checks that what it uploaded and copied reached S3 byte-exact; the same
over mTLS, with a client certificate (and refused without one).

Node and npm are required, not optional: without them this test fails. Its
packages come from tests/node/package-lock.json via ``npm ci``, run here once
per session when tests/node/node_modules is missing or older than the lock."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from blobgate.server.app import Gateway, start_gateway
from blobgate.server.logs import JsonFormatter
from tests.fakes.pki import CA
from tests.support import ROOT
from tests.support.gateways import gateway_settings, stop_gateway

NODE_DIR = ROOT / "tests" / "node"
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


async def run_node(
    client: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run the Node client without blocking the loop the gateway serves on;
    ``env`` adds to the environment (the BLOBGATE_TLS_* variables)."""
    proc = await asyncio.create_subprocess_exec(
        _require("node"),
        str(client),
        *args,
        cwd=client.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLIENT_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"the Node client did not finish in {CLIENT_TIMEOUT:g}s")
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def node_result(code: int, out: str, err: str) -> dict[str, Any]:
    """The Node client's one JSON line, once it exited 0."""
    assert code == 0, f"Node client exited {code}\nstderr:\n{err}\nstdout:\n{out}"
    # proto-loader resolved google/protobuf/*.proto from its bundled copies.
    assert "not found in any of the include paths" not in err, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    result: dict[str, Any] = json.loads(lines[0])
    assert result["ok"] is True
    return result


@pytest.mark.timeout(NPM_CI_TIMEOUT + CLIENT_TIMEOUT + 30)
async def test_node_client_round_trip(
    node_client: Path, gateway: Gateway, bucket: str, s3: Any, tmp_path: Path
) -> None:
    prefix = "from-node/"
    code, out, err = await run_node(node_client, f"127.0.0.1:{gateway.port}", str(tmp_path), prefix)
    result = node_result(code, out, err)
    assert (result["tls"], result["client_certificate"]) == (False, False)
    await check_round_trip(result, prefix, bucket, s3, tmp_path)


async def check_round_trip(
    result: dict[str, Any], prefix: str, bucket: str, s3: Any, tmp_path: Path
) -> None:
    """What the Node client reports matches what it sent, and S3 holds it."""
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
    # An unversioned bucket: no version ids on writes, one "null" version per key.
    assert uploads["big"]["version_id"] == uploads["small"]["version_id"] == ""
    assert sorted(result["versions"]) == [
        [f"{prefix}big.bin", "null", True, False],
        [f"{prefix}notes/small.txt", "null", True, False],
    ]

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
    tags = result["tags"]
    assert tags["key"] == copies["replaced"] and tags["refused"]["code"] == 3
    tagging = await s3.get_object_tagging(Bucket=bucket, Key=copies["replaced"])
    assert {t["Key"]: t["Value"] for t in tagging["TagSet"]} == {"team": "node", "note": "a b"}
    direct = result["direct_upload"]  # direct transfers are off on this gateway
    assert direct["direct"] is False
    assert direct["presign"]["name"] == direct["complete"]["name"] == "FAILED_PRECONDITION"
    assert direct["presignMany"]["name"] == "FAILED_PRECONDITION"
    listing = await s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert sorted(o["Key"] for o in listing["Contents"]) == sorted(
        [*result["list"]["keys"], session["key"], copies["replaced"]]
    )
    assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []


@pytest.mark.timeout(NPM_CI_TIMEOUT + 2 * CLIENT_TIMEOUT + 30)
async def test_node_client_over_mtls(
    node_client: Path,
    moto_endpoint: str,
    bucket: str,
    s3: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    ca = CA()
    spiffe = "spiffe://example.org/ns/tests/sa/node-client"
    pki = tmp_path / "pki"
    pki.mkdir()
    server_cert, server_key = ca.server().write(pki, "server")
    client_cert, client_key = ca.client("node-client", uris=(spiffe,)).write(pki, "client")
    settings = gateway_settings(
        moto_endpoint,
        bucket,
        tls_cert_file=server_cert,
        tls_key_file=server_key,
        tls_client_ca_file=ca.write(pki),
    )
    gateway = await start_gateway(settings)
    try:
        address = f"127.0.0.1:{gateway.port}"
        trust = {"BLOBGATE_TLS_CA_FILE": str(ca.write(pki))}
        # Without a client certificate the handshake fails: nothing is stored.
        code, out, err = await run_node(
            node_client,
            address,
            str(tmp_path / "refused"),
            "refused/",
            env={**trust, "BLOBGATE_CONNECT_TIMEOUT_MS": "3000"},
        )
        assert code == 1, f"stdout:\n{out}\nstderr:\n{err}"
        assert f"node client: FAILED: cannot connect to {address}" in err and out == ""
        listing = await s3.list_objects_v2(Bucket=bucket, Prefix="refused/")
        assert listing.get("Contents", []) == []

        prefix = "from-node-mtls/"
        env = {
            **trust,
            "BLOBGATE_TLS_CERT_FILE": str(client_cert),
            "BLOBGATE_TLS_KEY_FILE": str(client_key),
        }
        code, out, err = await run_node(node_client, address, str(tmp_path), prefix, env=env)
        result = node_result(code, out, err)
        assert (result["tls"], result["client_certificate"]) == (True, True)
        await check_round_trip(result, prefix, bucket, s3, tmp_path)
    finally:
        await stop_gateway(gateway)
    # Every call the Node client made was its certificate's SPIFFE ID's.
    access = [
        json.loads(JsonFormatter().format(record))
        for record in caplog.records
        if record.name == "blobgate.access"
    ]
    assert len(access) > 20
    assert {line["principal"] for line in access} == {spiffe}
    audited = [record for record in caplog.records if record.name == "blobgate.audit"]
    assert audited and {record.__dict__["principal"] for record in audited} == {spiffe}
