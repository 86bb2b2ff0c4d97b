"""``blobgate-probe``: ask a gateway's standard health service whether it is
SERVING; exit 0 if so, 1 otherwise (2: bad arguments). For container
HEALTHCHECKs and scripts (grpc_health_probe and grpcurl are not needed).

With any TLS option (or its BLOBGATE_TLS_* variable) the probe connects over
TLS: it trusts --tls-ca-file (else the system's roots), presents
--tls-cert-file and --tls-key-file to a server that asks for client
certificates, and expects --tls-server-name in the server's certificate (else
the address's host). In a container the server's own BLOBGATE_TLS_CERT_FILE
and BLOBGATE_TLS_KEY_FILE are inherited: see docs/security.md. --plaintext
ignores every TLS option and variable, for the plaintext health listener
(``health_listen``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blobgate.server.health import SERVICE_NAME
from blobgate.shared.tls import TLSConfig

MAX_PEM_BYTES = 1024 * 1024
_TLS_OPTIONS = ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_server_name")


class ProbeError(Exception):
    """Bad probe arguments; the message names the option."""


def _read(option: str, path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ProbeError(
            f"--{option.replace('_', '-')}: cannot read {path}: {exc.strerror}"
        ) from None
    if len(data) > MAX_PEM_BYTES:
        raise ProbeError(f"--{option.replace('_', '-')}: {path} is larger than 1MiB")
    return data


def tls_config(args: argparse.Namespace) -> TLSConfig | None:
    """The TLS the options ask for; None: plaintext."""
    if args.plaintext or not any(getattr(args, name) for name in _TLS_OPTIONS):
        return None
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        raise ProbeError("--tls-cert-file and --tls-key-file go together: give both or neither")
    try:
        return TLSConfig(
            root_certificates=_read("tls_ca_file", args.tls_ca_file),
            private_key=_read("tls_key_file", args.tls_key_file),
            certificate_chain=_read("tls_cert_file", args.tls_cert_file),
            server_name_override=args.tls_server_name or None,
        )
    except ValueError as exc:
        raise ProbeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blobgate-probe", description=__doc__)
    parser.add_argument("--address", default="127.0.0.1:50051", help="gateway host:port")
    parser.add_argument("--service", default=SERVICE_NAME, help='service to ask about ("" = all)')
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait")
    parser.add_argument(
        "--plaintext",
        action="store_true",
        help="connect without TLS whatever the TLS options say (the health_listen port)",
    )
    helps = {
        "tls_ca_file": "PEM CA certificates to verify the server with",
        "tls_cert_file": "PEM client certificate, for servers that require one",
        "tls_key_file": "PEM private key of --tls-cert-file",
        "tls_server_name": "name expected in the server's certificate",
    }
    for name, text in helps.items():
        variable = "BLOBGATE_" + name.upper()
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=os.environ.get(variable) or None,
            help=f"{text} (also {variable})",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        tls = tls_config(args)
    except ProbeError as exc:
        print(f"blobgate-probe: {exc}", file=sys.stderr)
        return 2
    try:
        if tls is None:
            channel = grpc.insecure_channel(args.address)
        else:
            channel = grpc.secure_channel(
                args.address, tls.credentials(), options=tls.channel_options()
            )
        with channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
    except grpc.RpcError as exc:
        details = (exc.details() or "").replace("\n", " ")
        print(f"blobgate-probe: {args.address}: {exc.code().name}: {details}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{args.address} {args.service or '(server)'}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
