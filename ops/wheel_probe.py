"""The base install's checks, as ops/wheel-test runs them: with the fresh
virtualenv's Python, in isolated mode (-I), from a folder outside the
checkout, so that only what the wheel installed can be imported.

    python -I ops/wheel_probe.py HOST:PORT

Checks that blobgate.client comes from the virtualenv, that the server's
dependencies are absent, that every portion ships py.typed, and that the
Python client (async and sync) round-trips an object through the gateway
at HOST:PORT. Exits 1 with one line per failed check.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import sys
from importlib import resources
from pathlib import Path

# What `pip install blobgate` must not bring: the gateway's dependencies.
SERVER_ONLY = ("aioboto3", "opentelemetry.sdk", "prometheus_client", "jwt", "uvloop")
PORTIONS = ("blobgate.v1", "blobgate.shared", "blobgate.client", "blobgate.server")
KEY = "wheel-test/client.bin"


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its parent package is absent
        return False


def installed_checks() -> list[str]:
    """What is wrong with the installed packages (nothing: empty)."""
    import blobgate.client

    problems: list[str] = []
    where = Path(blobgate.client.__file__ or "").resolve()
    if not where.is_relative_to(Path(sys.prefix).resolve()):
        problems.append(f"blobgate.client imported from {where}, not from {sys.prefix}")
    present = [name for name in SERVER_ONLY if importable(name)]
    if present:
        problems.append(f"the base install brings the server's dependencies: {present}")
    for portion in PORTIONS:
        if not (resources.files(portion) / "py.typed").is_file():
            problems.append(f"{portion} has no py.typed in the installed package")
    return problems


async def async_round_trip(target: str, payload: bytes) -> None:
    from blobgate.client import Client

    async with Client(target) as blobs:
        info = await blobs.upload(KEY, payload)
        assert info.size == len(payload), f"upload reported {info.size} bytes"
        assert info.sha256 == hashlib.sha256(payload).digest(), "upload's sha256 differs"
        back = b"".join([chunk async for chunk in blobs.download(KEY)])
        assert back == payload, f"downloaded {len(back)} bytes that differ from the upload"


def sync_round_trip(target: str) -> None:
    from blobgate.client import BlobgateError, SyncClient

    with SyncClient(target) as blobs:
        assert blobs.stat(KEY).size > 0
        blobs.delete(KEY)
        try:
            blobs.stat(KEY)
        except BlobgateError as exc:
            assert exc.code.name == "NOT_FOUND", f"stat after delete: {exc.code.name}"
        else:
            raise AssertionError("the object is still there after delete")


def main() -> int:
    target = sys.argv[1]
    problems = installed_checks()
    payload = os.urandom(3 * 1024 * 1024 + 17)  # several chunks and a partial one
    try:
        asyncio.run(async_round_trip(target, payload))
        sync_round_trip(target)
    except Exception as exc:  # any failure is a failed check, said in one line
        problems.append(f"client round trip through {target}: {type(exc).__name__}: {exc}")
    for problem in problems:
        print(f"wheel-test: FAILED: {problem}", file=sys.stderr)
    if not problems:
        print(
            "wheel-test: base install: blobgate.client from the virtualenv, none of "
            f"{', '.join(SERVER_ONLY)}, py.typed in every portion, Client and SyncClient "
            f"round trip ({len(payload)} bytes)",
            flush=True,
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
