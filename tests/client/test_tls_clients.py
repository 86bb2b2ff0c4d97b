"""What the Python client and the ``blobgate`` command say when their TLS
settings do not fit the server: one line with a hint (a TLS server dialled
in plaintext, an mTLS server without a client certificate, a certificate
that does not name the server...), bad local TLS files refused before any
connection with exit status 2 and the file named, and gRPC's own log lines
kept off the command's stderr. Also which server certificates a client can
verify: a DNS or IP SAN, never a SPIFFE ID alone (docs/security.md)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from blobgate.client import BlobgateError, Client
from blobgate.client.connect_problems import ConnectProblem, diagnose, hint
from blobgate.server.app import Gateway, start_gateway
from blobgate.shared.tls import TLSConfig, check_pem
from tests.fakes.pki import CA, Issued
from tests.support.cli import Run, assert_one_line_error, run_cli
from tests.support.gateways import gateway_settings

SPIFFE_ID = "spiffe://example.org/ns/storage/sa/blobgate"
SERVER_NAME = "blobgate.internal"


@dataclass
class Files:
    """A CA, its file, and client certificates written to files."""

    ca: CA
    dir: Path

    def write(self, issued: Issued, stem: str) -> tuple[str, str]:
        cert, key = issued.write(self.dir, stem)
        return str(cert), str(key)

    @property
    def ca_file(self) -> str:
        return str(self.ca.write(self.dir))


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(CA(), tmp_path)


@asynccontextmanager
async def gateway_with(
    moto_endpoint: str, bucket: str, files: Files, kind: str, leaf: Issued | None = None
) -> AsyncIterator[Gateway]:
    """A gateway speaking ``kind``: plain, tls or mtls (clients of ``files.ca``)."""
    overrides: dict[str, Any] = {}
    if kind != "plain":
        cert, key = files.write(leaf or files.ca.server(), "server")
        overrides = {"tls_cert_file": Path(cert), "tls_key_file": Path(key)}
    if kind == "mtls":
        overrides["tls_client_ca_file"] = Path(files.ca_file)
    gateway = await start_gateway(gateway_settings(moto_endpoint, bucket, **overrides))
    try:
        yield gateway
    finally:
        await gateway.stop(grace=0.5)


# What each client brings, as Python keywords and as CLI options.
CASES: dict[str, tuple[str, ConnectProblem]] = {
    "plaintext-to-tls": ("tls", ConnectProblem.NEEDS_TLS),
    "tls-to-plaintext": ("plain", ConnectProblem.NOT_TLS),
    "no-client-certificate": ("mtls", ConnectProblem.NEEDS_CLIENT_CERTIFICATE),
    "foreign-client-certificate": ("mtls", ConnectProblem.CLIENT_CERTIFICATE_REFUSED),
    "name-mismatch": ("tls", ConnectProblem.NAME_MISMATCH),
    "untrusted-server": ("tls", ConnectProblem.UNTRUSTED),
}


def client_settings(case: str, files: Files) -> tuple[dict[str, Any], list[str]]:
    """The Python client's keywords and the CLI's options for ``case``."""
    if case == "plaintext-to-tls":
        return {}, []
    if case == "tls-to-plaintext":
        return {"tls": True}, ["--tls"]
    keywords: dict[str, Any] = {"root_certificates": files.ca.pem}
    options = ["--ca-file", files.ca_file]
    if case == "foreign-client-certificate":
        foreign = CA("foreign CA").client("stranger")
        keywords |= {"certificate_chain": foreign.cert, "private_key": foreign.key}
        cert, key = files.write(foreign, "stranger")
        options += ["--cert-file", cert, "--key-file", key]
    elif case == "name-mismatch":
        keywords["server_name_override"] = "wrong.example"
        options += ["--tls-server-name", "wrong.example"]
    elif case == "untrusted-server":
        other = CA("another CA")
        keywords["root_certificates"] = other.pem
        options[1] = str(other.write(files.dir, "other-ca"))
    return keywords, options


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
async def test_a_connection_that_cannot_be_set_up_says_why(
    moto_endpoint: str, bucket: str, files: Files, case: str
) -> None:
    server_kind, problem = CASES[case]
    keywords, options = client_settings(case, files)
    async with gateway_with(moto_endpoint, bucket, files, server_kind) as gateway:
        address = f"127.0.0.1:{gateway.port}"
        async with Client(address, max_attempts=1, timeout=5, **keywords) as client:
            with pytest.raises(BlobgateError) as caught:
                await client.stat("k")
        error = caught.value
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert error.problem is problem
        assert error.message == f"{error.details}; {hint(problem)}"
        assert isinstance(error.__cause__, grpc.aio.AioRpcError)

        result = await run_cli("--server", address, *options, "--timeout", "5", "stat", "k")
        assert_one_line_error(result, 5, "blobgate: UNAVAILABLE: ")
        assert result.stderr.rstrip().endswith(hint(problem, cli=True)), result.stderr

        as_json = await run_cli(
            "--json", "--server", address, *options, "--timeout", "5", "stat", "k"
        )
        assert as_json.returncode == 5 and as_json.stderr.count("\n") == 1, as_json.stderr
        document = json.loads(as_json.stderr)
        assert (document["code"], document["exit_code"]) == ("UNAVAILABLE", 5)
        assert document["problem"] == problem.name.lower()
        assert document["message"].endswith(hint(problem, cli=True))


# Run as the command runs: its module imported first, then a channel with a
# key that is not the certificate's, which gRPC's C core logs six lines
# about (the issue this guards against). The command itself refuses such a
# key before gRPC sees it, so only a program that skips that check shows it.
_MISMATCHED_KEY_PROGRAM = """
import asyncio, sys
from blobgate.client.cli import main as cli
import grpc

async def main():
    ca, cert, key = (open(name, "rb").read() for name in sys.argv[1:4])
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    async with grpc.aio.secure_channel("127.0.0.1:1", credentials) as channel:
        try:
            await channel.unary_unary("/x/y")(b"", timeout=5)
        except grpc.aio.AioRpcError as exc:
            print(exc.code().name, file=sys.stderr)

asyncio.run(main())
"""


@pytest.mark.slow
async def test_grpc_log_lines_stay_off_the_cli_stderr(files: Files) -> None:
    """gRPC reads GRPC_VERBOSITY once, at import: the command's module sets
    it first, so gRPC's lines stay off its stderr unless the variable asks."""
    cert, _ = files.write(files.ca.client("me"), "me")
    _, other_key = files.write(files.ca.client("other"), "other")
    program = ("-c", _MISMATCHED_KEY_PROGRAM, files.ca_file, cert, other_key)
    quiet = await run_cli(*program, program=(sys.executable,))
    assert quiet.stderr == "UNAVAILABLE\n", quiet.stderr
    loud = await run_cli(*program, program=(sys.executable,), env={"GRPC_VERBOSITY": "ERROR"})
    assert "Invalid private key" in loud.stderr, loud.stderr
    assert loud.stderr.endswith("UNAVAILABLE\n")
    # The variable is gone again once gRPC has read it: processes the
    # command starts do not inherit it.
    inherited = await run_cli(
        "-c",
        "import os; import blobgate.client.cli.main; print(os.environ.get('GRPC_VERBOSITY'))",
        program=(sys.executable,),
    )  # fmt: skip
    assert inherited.text == "None\n", inherited.stderr


def _bad_files(files: Files) -> dict[str, tuple[list[str], str]]:
    """Local TLS mistakes: the options, and the start of the one line."""
    good_cert, good_key = files.write(files.ca.client("me"), "me")
    _, other_key = files.write(files.ca.client("other"), "other")
    expired_cert, expired_key = files.write(files.ca.client("old", expired=True), "old")
    junk = files.dir / "junk.pem"
    junk.write_bytes(b"not PEM at all")
    torn = files.dir / "torn.key"
    torn.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    locked = files.dir / "locked.key"
    locked.write_bytes(_encrypted_key())
    missing = str(files.dir / "missing.crt")
    ca = files.ca_file
    pair = ["--ca-file", ca, "--cert-file", good_cert]
    return {
        "key-of-another-certificate": (
            [*pair, "--key-file", other_key],
            f"blobgate: --key-file {other_key} is not the key of the first certificate "
            f"in --cert-file {good_cert}",
        ),
        "key-not-pem": (
            [*pair, "--key-file", str(junk)],
            f"blobgate: --key-file {junk} is not PEM",
        ),
        "key-does-not-parse": (
            [*pair, "--key-file", str(torn)],
            f"blobgate: --key-file {torn}: the private key does not parse",
        ),
        "key-encrypted": (
            [*pair, "--key-file", str(locked)],
            f"blobgate: --key-file {locked} is encrypted",
        ),
        "certificate-expired": (
            ["--ca-file", ca, "--cert-file", expired_cert, "--key-file", expired_key],
            f"blobgate: --cert-file {expired_cert}: the certificate expired on ",
        ),
        "ca-not-pem": (["--ca-file", str(junk)], f"blobgate: --ca-file {junk} is not PEM"),
        "ca-missing": (["--ca-file", missing], f"blobgate: --ca-file {missing}: No such file"),
        "key-without-certificate": (
            ["--key-file", good_key],
            "blobgate: --cert-file and --key-file go together",
        ),
    }


def _encrypted_key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


@pytest.mark.slow
async def test_bad_tls_files_are_a_usage_error_naming_the_file(files: Files) -> None:
    # Port 1: nothing listens; every case must fail before dialling anyway.
    for case, (options, starts) in _bad_files(files).items():
        result = await run_cli("--server", "127.0.0.1:1", *options, "stat", "k")
        assert_one_line_error(result, 2, starts)
        assert "UNAVAILABLE" not in result.stderr, (case, result.stderr)


def test_the_python_client_refuses_the_same_files(files: Files) -> None:
    me, other = files.ca.client("me"), files.ca.client("other")
    with pytest.raises(ValueError, match="private_key is not the key of the first certificate"):
        Client("127.0.0.1:1", root_certificates=files.ca.pem, certificate_chain=me.cert,
               private_key=other.key)  # fmt: skip
    with pytest.raises(ValueError, match="private_key is encrypted"):
        TLSConfig(certificate_chain=me.cert, private_key=_encrypted_key())
    with pytest.raises(ValueError, match="certificate_chain: the certificate expired on"):
        old = files.ca.client("old", expired=True)
        TLSConfig(certificate_chain=old.cert, private_key=old.key)
    with pytest.raises(ValueError, match=r"root_certificates: certificate 2 does not parse"):
        TLSConfig(files.ca.pem + b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    # A key file that also holds its certificate (and an EC PARAMETERS
    # block), as some tools write them, is fine.
    check_pem(None, me.cert, b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n"
              b"-----END EC PARAMETERS-----\n" + me.key + me.cert)  # fmt: skip


def test_only_set_up_failures_get_a_hint() -> None:
    refused = (
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
        "Failed to connect to remote host: Connection refused"
    )
    assert diagnose(refused, None) is None
    # A connection that broke during a call is not a set-up problem.
    assert diagnose("Socket closed", None) is None
    closed = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:x: Socket closed"
    assert diagnose(closed, None) is ConnectProblem.NEEDS_TLS


# --- which names a server certificate needs: SPIFFE --------------------------------------


async def test_a_spiffe_only_server_certificate_cannot_be_verified(
    moto_endpoint: str, bucket: str, files: Files
) -> None:
    """An SVID carrying only its SPIFFE ID (SPIRE's default) fails gRPC's
    name check whatever name the client expects: it never looks at URI SANs."""
    svid = files.ca.svid(SPIFFE_ID)
    async with gateway_with(moto_endpoint, bucket, files, "tls", svid) as gateway:
        for name in [None, SPIFFE_ID, "example.org"]:
            async with Client(
                f"127.0.0.1:{gateway.port}",
                root_certificates=files.ca.pem,
                server_name_override=name,
                max_attempts=1,
                timeout=5,
            ) as client:
                with pytest.raises(BlobgateError) as caught:
                    await client.stat("k")
            assert caught.value.problem is ConnectProblem.NAME_MISMATCH, name


@pytest.mark.slow
async def test_an_svid_with_a_dns_name_is_verified_as_documented(
    moto_endpoint: str, bucket: str, files: Files
) -> None:
    """docs/security.md's way: SPIRE adds a DNS name to the server's SVID
    (the registration entry's -dns); clients trust the bundle and expect
    that name, here over mTLS with an SVID of their own."""
    server_svid = files.ca.svid(SPIFFE_ID, dns_names=(SERVER_NAME,))
    client_svid = files.ca.svid("spiffe://example.org/ns/reports/sa/uploader")
    async with gateway_with(moto_endpoint, bucket, files, "mtls", server_svid) as gateway:
        address = f"127.0.0.1:{gateway.port}"
        async with Client(
            address,
            root_certificates=files.ca.pem,
            certificate_chain=client_svid.cert,
            private_key=client_svid.key,
            server_name_override=SERVER_NAME,
        ) as client:
            await client.upload("spiffe/object", b"verified")
            assert (await client.stat("spiffe/object")).size == len(b"verified")
        cert, key = files.write(client_svid, "uploader")
        result: Run = await run_cli(
            "--server", address, "--ca-file", files.ca_file, "--cert-file", cert,
            "--key-file", key, "--tls-server-name", SERVER_NAME, "cat", "spiffe/object",
        )  # fmt: skip
        assert (result.returncode, result.stdout, result.stderr) == (0, b"verified", "")
