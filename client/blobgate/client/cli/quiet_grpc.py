"""Imported by the ``blobgate`` command before anything else imports gRPC:
gRPC's C core writes its own log lines to stderr (six ``E1206 ... Invalid
private key`` lines for one bad key, a line per failed handshake), and it
reads ``GRPC_VERBOSITY`` only once, when grpc is imported. The command says
what went wrong in one line of its own, so those lines are off, unless
``GRPC_VERBOSITY`` is set (to debug gRPC itself). The variable is removed
again, so that the processes the command starts do not inherit it."""

from __future__ import annotations

import os

if "GRPC_VERBOSITY" not in os.environ:
    os.environ["GRPC_VERBOSITY"] = "NONE"
    try:
        import grpc  # noqa: F401
    finally:
        del os.environ["GRPC_VERBOSITY"]
