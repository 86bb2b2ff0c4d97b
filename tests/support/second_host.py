"""Another host, as far as the network goes: a Linux network namespace joined
to this one by a veth pair, with its default route through this host. A
process started in it (``run``) reaches this host only through addresses
other hosts could use, never through this host's loopback.

Needs root and iproute2 (``ip netns``); ``SecondHost.create`` says why not
when either is missing, for the caller to skip on."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Sequence

from tests.support.server_process import SOURCE_PATH


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class SecondHost:
    """A network namespace with ``address``; this host is ``gateway`` to it."""

    def __init__(self, name: str, link: str, subnet: int) -> None:
        self.name = name
        self._link = link
        self.gateway = f"10.213.{subnet}.1"  # this host's end of the link
        self.address = f"10.213.{subnet}.2"  # the other host's

    @classmethod
    def create(cls) -> SecondHost | str:
        """A new second host, or why one cannot be made here."""
        if os.geteuid() != 0 or shutil.which("ip") is None:
            return "needs root and iproute2 (ip netns)"
        tag = secrets.token_hex(3)
        host = cls(f"bg-{tag}", f"bgh{tag}", secrets.randbelow(250) + 1)
        try:
            _ip("netns", "add", host.name)
        except (subprocess.CalledProcessError, OSError) as exc:
            return f"cannot create a network namespace: {exc}"
        try:
            peer = f"bgn{tag}"
            _ip("link", "add", host._link, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", host.name)
            _ip("addr", "add", f"{host.gateway}/30", "dev", host._link)
            _ip("link", "set", host._link, "up")
            inside = ("netns", "exec", host.name, "ip")
            _ip(*inside, "addr", "add", f"{host.address}/30", "dev", peer)
            _ip(*inside, "link", "set", peer, "up")
            _ip(*inside, "link", "set", "lo", "up")
            _ip(*inside, "route", "add", "default", "via", host.gateway)
        except BaseException:
            host.remove()
            raise
        return host

    def remove(self) -> None:
        """Delete the namespace and the link (its peer goes with it)."""
        subprocess.run(["ip", "link", "del", self._link], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)

    async def run(
        self, argv: Sequence[str], *, stdin: int | None = None
    ) -> asyncio.subprocess.Process:
        """Start ``argv`` (``python`` is this interpreter) on the second host,
        with this checkout importable."""
        argv = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
        return await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", self.name, *argv,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": SOURCE_PATH},
        )  # fmt: skip
