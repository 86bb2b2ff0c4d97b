"""The ``blobgate`` command run as a real subprocess against a real gateway.

The gateway runs in this test's event loop, so the CLI is started with
asyncio.create_subprocess_exec: a blocking subprocess.run would freeze it."""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

import grpc
import pytest

from blobgate.server.app import Gateway
from blobgate.v1 import storage_pb2_grpc
from tests.support.cli import Run, assert_one_line_error, run_cli
from tests.support.helpers import free_port
from tests.support.stat_server import TLS_NAME, StatOnly, issue

MiB = 1024 * 1024
CONSOLE_SCRIPT = Path(sys.executable).parent / "blobgate"


def names(directory: Path) -> list[str]:
    """The sorted file names in ``directory``."""
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def server(gateway: Gateway) -> str:
    return f"127.0.0.1:{gateway.port}"


async def cli(server: str, *args: str, stdin: bytes | None = None) -> Run:
    """Run the CLI against ``server`` and insist that it succeeded."""
    result = await run_cli("--server", server, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result


async def test_put_get_through_files(server: str, tmp_path: Path) -> None:
    data = random.Random(1).randbytes(2 * MiB + 5)
    source = tmp_path / "in.bin"
    source.write_bytes(data)

    put = await cli(server, "put", str(source), "files/in.bin")
    assert "files/in.bin" in put.text and "2.0 MiB" in put.text

    await cli(server, "get", "files/in.bin", str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == data

    # A directory as LOCAL gets the key's last segment as the file name.
    (tmp_path / "dir").mkdir()
    await cli(server, "get", "files/in.bin", str(tmp_path / "dir"))
    assert (tmp_path / "dir" / "in.bin").read_bytes() == data


async def test_put_stdin_get_stdout(server: str) -> None:
    data = random.Random(2).randbytes(MiB + 77) + b"\x00\r\n"
    await cli(server, "put", "-", "piped.bin", stdin=data)
    got = await cli(server, "get", "piped.bin", "-")
    assert got.stdout == data
    ranged = await cli(server, "get", "piped.bin", "-", "--offset", "10", "--limit", "5")
    assert ranged.stdout == data[10:15]


async def test_put_and_stat_json(server: str, bucket: str) -> None:
    put = await cli(
        server, "--json", "put", "-", "doc.json", "--metadata", "team=storage", stdin=b"{}"
    )
    put_doc = json.loads(put.stdout)
    assert put_doc["key"] == "doc.json"
    assert put_doc["size"] == 2

    stat = await cli(server, "stat", "doc.json", "--json")  # global option after the command
    doc = json.loads(stat.stdout)
    assert doc["bucket"] == bucket
    assert doc["key"] == "doc.json"
    assert doc["size"] == 2
    assert doc["etag"] == put_doc["etag"]
    assert doc["content_type"] == "application/json"
    assert doc["sha256"] == hashlib.sha256(b"{}").hexdigest()
    assert doc["metadata"]["team"] == "storage"
    assert doc["last_modified"]


async def test_stat_human(server: str) -> None:
    await cli(server, "put", "-", "h.txt", stdin=b"x" * 1536)
    out = (await cli(server, "stat", "h.txt")).text
    assert "1.5 KiB (1536 bytes)" in out
    assert "text/plain" in out
    assert hashlib.sha256(b"x" * 1536).hexdigest() in out


async def test_ls(server: str) -> None:
    for key in ["logs/a.txt", "logs/b.txt", "logs/old/c.txt", "top.txt"]:
        await cli(server, "put", "-", key, stdin=key.encode())

    everything = await cli(server, "ls", "--page-size", "2")
    assert everything.text.splitlines() == ["logs/a.txt", "logs/b.txt", "logs/old/c.txt", "top.txt"]

    grouped = await cli(server, "ls", "logs/", "--delimiter", "/")
    assert grouped.text.splitlines() == ["logs/old/", "logs/a.txt", "logs/b.txt"]

    long = (await cli(server, "ls", "-l", "logs/")).text.splitlines()
    assert len(long) == 3
    assert long[0].split()[:2] == ["10", "B"]
    assert long[0].endswith("logs/a.txt")

    lines = (await cli(server, "--json", "ls", "logs/", "--delimiter", "/")).text.splitlines()
    docs = [json.loads(line) for line in lines]
    assert docs[0] == {"prefix": "logs/old/"}
    assert [d["key"] for d in docs[1:]] == ["logs/a.txt", "logs/b.txt"]


async def test_presign(server: str) -> None:
    url = (await cli(server, "presign", "some/key.txt", "--expires", "60")).text.strip()
    assert url.startswith("http")
    assert "some/key.txt" in url

    put = await cli(
        server, "--json", "presign", "k.txt", "--method", "put", "--content-type", "text/plain"
    )
    doc = json.loads(put.stdout)
    assert doc["method"] == "PUT"
    assert doc["url"].startswith("http")
    assert doc["expires_at"]


async def test_rm(server: str) -> None:
    await cli(server, "put", "-", "doomed.txt", stdin=b"x")
    removed = await cli(server, "rm", "doomed.txt")
    assert removed.text == "rm doomed.txt: deleted\n"
    missing = await run_cli("--server", server, "stat", "doomed.txt")
    assert_one_line_error(missing, 3, "blobgate: NOT_FOUND: ")
    # Deleting a missing key is fine: it is gone either way.
    again = await cli(server, "--json", "rm", "doomed.txt")
    assert json.loads(again.stdout) == {"key": "doomed.txt", "deleted": True}


async def test_errors_are_one_line_with_distinct_exit_codes(server: str, tmp_path: Path) -> None:
    await cli(server, "put", "-", "exists.txt", stdin=b"x")

    result = await run_cli("--server", server, "get", "nope.txt", str(tmp_path / "nope.txt"))
    assert_one_line_error(result, 3, "blobgate: NOT_FOUND: ")
    assert names(tmp_path) == []

    result = await run_cli("--server", server, "put", "-", "exists.txt", "--if-none-match")
    assert_one_line_error(result, 4, "blobgate: FAILED_PRECONDITION: ")

    result = await run_cli("--server", server, "rm", "exists.txt", "--if-match", "wrong")
    assert_one_line_error(result, 4, "blobgate: FAILED_PRECONDITION: ")

    result = await run_cli("--server", server, "--bucket", "not-allowed-here", "ls")
    assert_one_line_error(result, 4, "blobgate: PERMISSION_DENIED: ")

    result = await run_cli("--server", server, "put", "-", "/bad-key", stdin=b"x")
    assert_one_line_error(result, 2, "blobgate: INVALID_ARGUMENT: ")

    result = await run_cli("--server", server, "put", str(tmp_path / "absent"), "k")
    assert_one_line_error(result, 1, "blobgate: ")
    assert "absent" in result.stderr


async def test_get_into_a_missing_folder_names_the_destination(server: str, tmp_path: Path) -> None:
    await cli(server, "put", "-", "into.txt", stdin=b"x")
    target = tmp_path / "absent" / "copy.txt"
    result = await run_cli("--server", server, "get", "into.txt", str(target))
    assert_one_line_error(
        result, 1, f"blobgate: {target}: the folder {target.parent} does not exist"
    )
    assert "blobgate-part" not in result.stderr
    assert names(tmp_path) == []


async def test_usage_errors_exit_2() -> None:
    for args in [(), ("frobnicate",), ("put", "only-one"), ("presign", "k", "--method", "POST")]:
        result = await run_cli(*args)
        assert_one_line_error(result, 2, "blobgate")


async def test_unreachable_server_exits_5() -> None:
    port = free_port()
    result = await run_cli("--server", f"127.0.0.1:{port}", "stat", "k")
    assert_one_line_error(result, 5, "blobgate: UNAVAILABLE: ")


async def test_server_from_environment(server: str) -> None:
    await cli(server, "put", "-", "env.txt", stdin=b"env")
    result = await run_cli("get", "env.txt", "-", env={"BLOBGATE_SERVER": server})
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"env"


async def test_console_script(server: str) -> None:
    await cli(server, "put", "-", "script.txt", stdin=b"via script")
    result = await run_cli(
        "--server", server, "get", "script.txt", "-", program=(str(CONSOLE_SCRIPT),)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"via script"


async def test_tls_options(server: str, tmp_path: Path) -> None:
    ca = issue("blobgate test CA")
    leaf = issue(TLS_NAME, ca)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert)
    tls_server = grpc.aio.server()
    storage_pb2_grpc.add_StorageServiceServicer_to_server(StatOnly(), tls_server)
    port = tls_server.add_secure_port(
        "127.0.0.1:0", grpc.ssl_server_credentials([(leaf.key, leaf.cert)])
    )
    await tls_server.start()
    try:
        address = f"127.0.0.1:{port}"
        stat = await cli(
            address, "--ca-file", str(ca_file), "--tls-server-name", TLS_NAME, "--json", "stat", "k"
        )
        assert json.loads(stat.text)["key"] == "k"
        # Without the CA the server is not trusted: one line, with the fix.
        untrusted = await run_cli(
            "--server", address, "--tls", "--tls-server-name", TLS_NAME, "--timeout", "3",
            "stat", "k",
        )  # fmt: skip
        assert_one_line_error(untrusted, 5, "blobgate: UNAVAILABLE: ")
        assert "pass --ca-file with the CA that signed it" in untrusted.stderr
    finally:
        await tls_server.stop(0)

    # TLS to the plaintext gateway fails fast and clearly.
    plain = await run_cli("--server", server, "--tls", "--timeout", "3", "stat", "k")
    assert_one_line_error(plain, 5, "blobgate: UNAVAILABLE: ")
    assert "the server does not speak TLS" in plain.stderr
    half = await run_cli("--server", server, "--cert-file", str(ca_file), "stat", "k")
    assert_one_line_error(half, 2, "blobgate: --cert-file and --key-file go together")
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"junk")
    bad = await run_cli("--server", server, "--ca-file", str(junk), "stat", "k")
    assert_one_line_error(bad, 2, f"blobgate: --ca-file {junk} is not PEM")


async def test_cat_writes_the_object_to_stdout(server: str) -> None:
    await cli(server, "put", "-", "cat.txt", stdin=b"0123456789")
    assert (await cli(server, "cat", "cat.txt")).stdout == b"0123456789"
    assert (await cli(server, "cat", "cat.txt", "--offset", "-4", "--limit", "2")).stdout == b"67"
    missing = await run_cli("--server", server, "cat", "missing.txt")
    assert missing.returncode == 3
    assert missing.stdout == b""
