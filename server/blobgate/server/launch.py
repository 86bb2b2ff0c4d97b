"""The server's console scripts (``blobgate-server``, ``blobgate-probe``):
check that the gateway's dependencies are installed before importing any
of them, so that a client-only install (``pip install blobgate``) gets one
line saying which extra to install, not a traceback."""

from __future__ import annotations

import importlib.metadata
import re
import sys

EXIT_SETTINGS = 2  # as blobgate-server's own: nothing was started (docs/operations.md)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def missing_server_dependencies() -> list[str]:
    """The distributions that ``blobgate[server]`` requires on this platform
    and that are not installed (none when blobgate's own metadata is absent,
    as in a bare checkout)."""
    try:
        requirements = importlib.metadata.requires("blobgate") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    missing = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        if 'extra == "server"' not in marker:
            continue
        if "sys_platform" in marker and sys.platform == "win32":
            continue  # uvloop's, the one platform-bound requirement
        match = _NAME.match(spec.strip())
        if match is None:
            continue
        try:
            importlib.metadata.distribution(match.group(0))
        except importlib.metadata.PackageNotFoundError:
            missing.append(match.group(0))
    return missing


def _refuse(command: str) -> int | None:
    missing = missing_server_dependencies()
    if not missing:
        return None
    print(
        f"{command}: the gateway's dependencies are not installed "
        f"(missing: {', '.join(missing)}); install them with: pip install 'blobgate[server]'",
        file=sys.stderr,
    )
    return EXIT_SETTINGS


def server() -> int:
    """``blobgate-server``."""
    refused = _refuse("blobgate-server")
    if refused is not None:
        return refused
    from blobgate.server.main import main

    return main()


def probe() -> int:
    """``blobgate-probe``."""
    refused = _refuse("blobgate-probe")
    if refused is not None:
        return refused
    from blobgate.server.probe import main

    return main()
