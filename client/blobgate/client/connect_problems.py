"""What a failed connection most likely means, told from gRPC's words and
the client's own TLS settings: gRPC reports a TLS server dialled in
plaintext, or an mTLS server dialled without a client certificate, only as
"Socket closed". A failed call whose connection could not be set up gets a
hint in its message, and its ``problem`` for programs (the CLI words the
hint with its own options)."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from blobgate.client.errors import BlobgateError
from blobgate.shared.tls import TLSConfig


class ConnectProblem(enum.Enum):
    """Why the connection to the server could not be set up; the value
    says what the client saw."""

    NEEDS_TLS = "the server may require TLS"
    NOT_TLS = "the server does not speak TLS"
    NEEDS_CLIENT_CERTIFICATE = "the server may require a client certificate"
    CLIENT_CERTIFICATE_REFUSED = "the server may not accept this client certificate"
    NAME_MISMATCH = "the server's certificate does not carry the name the client expects"
    UNTRUSTED = "the client could not verify the server's certificate"


# How to fix each problem, in the words of the Python client and of the CLI.
_ADVICE: dict[ConnectProblem, tuple[str, str]] = {
    ConnectProblem.NEEDS_TLS: (
        "connect with tls=True, or root_certificates= with its CA",
        "pass --tls, or --ca-file with its CA",
    ),
    ConnectProblem.NOT_TLS: (
        "connect without TLS",
        "leave out --tls and the other TLS options",
    ),
    ConnectProblem.NEEDS_CLIENT_CERTIFICATE: (
        "give certificate_chain= and private_key=",
        "pass --cert-file and --key-file",
    ),
    ConnectProblem.CLIENT_CERTIFICATE_REFUSED: (
        "is it signed by a CA the server trusts?",
        "is --cert-file signed by a CA the server trusts?",
    ),
    ConnectProblem.NAME_MISMATCH: (
        "it needs a DNS or IP subject alternative name for the host dialled, or for "
        "server_name_override= (a SPIFFE ID alone is never checked)",
        "it needs a DNS or IP subject alternative name for the host of --server, or for "
        "--tls-server-name (a SPIFFE ID alone is never checked)",
    ),
    ConnectProblem.UNTRUSTED: (
        "give root_certificates= with the CA that signed it (and check that it has not expired)",
        "pass --ca-file with the CA that signed it (and check that it has not expired)",
    ),
}


def diagnose(details: str, tls: TLSConfig | None) -> ConnectProblem | None:
    """The problem gRPC's ``details`` of an UNAVAILABLE call point to, for a
    client with the TLS settings ``tls`` (None: plaintext); None when they
    point to none (e.g. nothing listens there)."""
    if "Hostname Verification Check failed" in details:
        return ConnectProblem.NAME_MISMATCH
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return ConnectProblem.UNTRUSTED
    if "WRONG_VERSION_NUMBER" in details:  # a TLS hello answered in plaintext HTTP/2
        return ConnectProblem.NOT_TLS
    set_up = details.startswith("failed to connect")
    if set_up and ("Socket closed" in details or "Connection reset" in details):
        # The server hung up while the connection was set up: it could not
        # read a plaintext preface as TLS, or it refused the handshake.
        if tls is None:
            return ConnectProblem.NEEDS_TLS
        if tls.certificate_chain is None:
            return ConnectProblem.NEEDS_CLIENT_CERTIFICATE
        return ConnectProblem.CLIENT_CERTIFICATE_REFUSED
    return None


def hint(problem: ConnectProblem, *, cli: bool = False) -> str:
    """What ``problem`` means and how to fix it, worded for the Python
    client or (``cli``) for the command line."""
    python, command_line = _ADVICE[problem]
    return f"{problem.value}: {command_line if cli else python}"


def explain(error: BlobgateError, tls: TLSConfig | None) -> BlobgateError:
    """``error`` with a hint when it is a connection that could not be set
    up for a reason ``diagnose`` recognises; else ``error`` itself."""
    if error.code != grpc.StatusCode.UNAVAILABLE or error.problem is not None:
        return error
    problem = diagnose(error.details, tls)
    if problem is None:
        return error
    explained = BlobgateError(
        error.code,
        f"{error.details}; {hint(problem)}",
        status_lost=error.status_lost,
        retryable=error.retryable,
        request_id=error.request_id,
        problem=problem,
        details=error.details,
        unsent=error.unsent,
    )
    explained.__cause__ = error.__cause__
    return explained


@contextmanager
def hinted(tls: TLSConfig | None) -> Iterator[None]:
    """Re-raise a ``BlobgateError`` from the block with a hint (``explain``)
    for a client with the TLS settings ``tls``."""
    try:
        yield
    except BlobgateError as exc:
        explained = explain(exc, tls)
        if explained is exc:
            raise
        raise explained from exc.__cause__
