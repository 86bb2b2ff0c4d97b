"""What the server's logging set-up lets through: the operator's level for
the gateway, never botocore's DEBUG records (they hold request signatures
and presigned URLs), and the embedded S3's request lines only at DEBUG; and
in JSON, nothing but JSON on stderr, gRPC's own lines and what clients put
in them included."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blobgate.server.logs import JsonFormatter, configure_logging
from blobgate.server.native_stderr import MAX_MESSAGE, log_write
from tests.fakes.pki import CA, Issued
from tests.support.helpers import eventually
from tests.support.server_process import ServerProcess

LIBRARIES = ["botocore", "botocore.auth", "aiobotocore.endpoint", "urllib3.connectionpool"]


@pytest.fixture
def restored() -> Iterator[None]:
    names = ["", "werkzeug", "blobgate.audit", *LIBRARIES]
    saved = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("restored")
def test_debug_never_reaches_signing_libraries() -> None:
    configure_logging("DEBUG")
    assert logging.getLogger("blobgate.server").isEnabledFor(logging.DEBUG)
    for name in LIBRARIES:
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
        assert logging.getLogger(name).isEnabledFor(logging.INFO), name
    assert logging.getLogger("werkzeug").isEnabledFor(logging.INFO)


@pytest.mark.usefixtures("restored")
def test_the_embedded_s3_logs_only_warnings_by_default() -> None:
    configure_logging("INFO")
    assert not logging.getLogger("werkzeug").isEnabledFor(logging.INFO)
    assert logging.getLogger("werkzeug").isEnabledFor(logging.WARNING)
    assert logging.getLogger("blobgate.server").isEnabledFor(logging.INFO)


@pytest.mark.usefixtures("restored")
def test_the_audit_log_stays_on_above_info() -> None:
    configure_logging("WARNING")
    assert not logging.getLogger("blobgate.access").isEnabledFor(logging.INFO)
    assert logging.getLogger("blobgate.audit").isEnabledFor(logging.INFO)


# --- the server process: every line on stderr in the log format ----------------------


@dataclass
class TlsFiles:
    ca: bytes
    args: list[str]
    policy: Path
    foreign: Issued


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    ca = CA()
    cert, key = ca.server().write(tmp_path, "server")
    policy = tmp_path / "policy.toml"
    policy.write_text(GRANT)
    args = [
        "--tls-cert-file", str(cert),
        "--tls-key-file", str(key),
        "--tls-client-ca-file", str(ca.write(tmp_path)),
        "--auth-policy-file", str(policy),
        "--drain-delay", "0",
    ]  # fmt: skip
    return TlsFiles(ca.pem, args, policy, CA("foreign CA").client("intruder"))


# gRPC's failed-handshake lines are INFO: shown whatever the runner's environment says.
GRPC_INFO = {"GRPC_VERBOSITY": "INFO"}
GRANT = '[[grant]]\nprincipals = ["*"]\nbuckets = ["b-any"]\nprefixes = [""]\nactions = ["read"]\n'
# A TLS server name with a newline and what looks like a gRPC line of its own.
FORGED_SNI = "evil\nE1206 10:12:03.412345 9884 forged.cc:1] forged line"


async def failed_handshakes(port: int, files: TlsFiles) -> None:
    """A plaintext client, a client certificate from a foreign CA, and a TLS
    server name the certificate does not carry, with a newline in it."""
    own = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=own),
        grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            grpc.ssl_channel_credentials(files.ca, files.foreign.key, files.foreign.cert),
            options=own,
        ),
    ]
    for channel in channels:
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    def wrong_name() -> None:
        context = ssl.create_default_context(cadata=files.ca.decode())
        context.check_hostname = False  # let the server, not this client, refuse
        context.set_alpn_protocols(["h2"])
        # mTLS without a client certificate: the server ends it (in TLS 1.3
        # once the client thinks it is done); the log shows the name.
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            contextlib.suppress(ssl.SSLError, OSError),
            context.wrap_socket(raw, server_hostname=FORGED_SNI) as tls,
        ):
            tls.recv(1)

    await asyncio.to_thread(wrong_name)


async def provoke(server: ServerProcess, files: TlsFiles, expected: list[str]) -> None:
    """Failed handshakes and a broken policy reload, then a clean stop;
    returns once every ``expected`` fragment is in the log."""
    port = await server.wait_listening()
    await failed_handshakes(port, files)
    fresh = files.policy.with_suffix(".new")
    fresh.write_text("[[grant]")  # not TOML
    fresh.replace(files.policy)

    async def logged() -> None:
        text = server.text()
        assert all(fragment in text for fragment in expected), text

    await eventually(logged, within=15)
    server.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(server.proc.wait(), 30) == 0
    await server.kill()  # collects the rest of the log


async def test_json_mode_leaves_only_json_lines_on_stderr(
    moto_endpoint: str, bucket: str, tls_files: TlsFiles, processes: list[ServerProcess]
) -> None:
    server = await ServerProcess.gateway(
        moto_endpoint, bucket, "--log-format", "json", *tls_files.args, env=GRPC_INFO
    )
    processes.append(server)
    await provoke(server, tls_files, ["Handshake failed", "forged", "does not load"])
    lines = server.text().splitlines()
    records = [json.loads(line) for line in lines]  # every line, or this fails
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)

    grpc_lines = [r for r in records if r["logger"] == "grpc.core"]
    assert any("Handshake failed" in r["message"] for r in grpc_lines), grpc_lines
    assert all(r["source"].endswith(tuple("0123456789")) for r in grpc_lines)
    # What the client sent stays inside one INFO record: its newline did not
    # make a second line, nor its fake prefix a record of another level.
    [named] = [r for r in records if "forged" in r["message"]]
    assert named["logger"] == "grpc.core" and named["level"] == "INFO"
    assert named["message"].startswith("No match found for server name: evil\nE1206")
    assert all(r.get("source") != "forged.cc:1" for r in records)

    [broken] = [r for r in records if "does not load" in r["message"]]
    assert broken["level"] == "WARNING" and "not TOML" in broken["message"]
    assert records[-1]["message"] == "stopped"


async def test_text_mode_is_unchanged(
    moto_endpoint: str, bucket: str, tls_files: TlsFiles, processes: list[ServerProcess]
) -> None:
    server = await ServerProcess.gateway(moto_endpoint, bucket, *tls_files.args, env=GRPC_INFO)
    processes.append(server)
    await provoke(server, tls_files, ["Handshake failed", "does not load"])
    lines = server.text().splitlines()
    ours = [line for line in lines if TEXT_LINE.match(line)]
    assert any("WARNING blobgate.server.core.access_policy: policy file does not load" in line
               for line in ours)  # fmt: skip
    assert ours[-1].endswith("INFO blobgate.server.app: stopped")
    # gRPC's own lines are its own, as they always were.
    assert any(GRPC_LINE.match(line) and "Handshake failed" in line for line in lines)
    assert not any(line.startswith("{") for line in lines)


TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")
GRPC_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")


def test_one_write_is_one_record_bounded_and_escaped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log_write(b"E1206 10:12:03.412345 9884 chttp2_server.cc:1] bind failed\n")
    log_write(b"W1206 10:12:03.412345 9884 a.cc:7] " + b"x" * (MAX_MESSAGE + 10) + b"\xff\n")
    log_write(b"Traceback (most recent call last):\n  File ...\nValueError: \xc3\n")
    first, second, third = caplog.records
    assert (first.name, first.levelno, first.getMessage()) == (
        "grpc.core", logging.ERROR, "bind failed"
    )  # fmt: skip
    assert first.source == "chttp2_server.cc:1"  # type: ignore[attr-defined]
    assert second.levelno == logging.WARNING
    assert second.getMessage() == "x" * MAX_MESSAGE + " [11 more bytes]"
    assert (third.name, third.levelno) == ("stderr", logging.WARNING)
    assert third.getMessage().endswith("ValueError: \\xc3")
    entry = json.loads(JsonFormatter().format(third))
    assert entry["message"].count("\n") == 2 and "\n" not in JsonFormatter().format(third)
