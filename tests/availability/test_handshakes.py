"""Connections that never become connections: sockets that never start a
handshake, and TLS connections that never speak HTTP/2, hold a place in
``max_connections`` (32 on the health listener) from the moment they are
accepted. They are closed after ``handshake_timeout``, and an identified
caller connects again."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import grpc
import pytest

from tests.fakes.pki import CA
from tests.support.availability import (
    OWN_CONNECTION,
    SERVING,
    check,
    client_tls,
    tls_channel,
    tls_gateway,
    token,
    victim_works,
)


@pytest.fixture
def ca() -> CA:
    return CA()


def _idle_sockets(port: int, count: int) -> list[socket.socket]:
    """``count`` TCP connections that will never send a byte."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


async def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(within):
            while await loop.sock_recv(sock, 4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def _idle_sockets_are_closed(port: int, count: int) -> None:
    sockets = _idle_sockets(port, count)
    try:
        closed = await asyncio.gather(*(_closed_by_server(s, 8.0) for s in sockets))
        assert all(closed), f"{closed.count(False)} of {count} idle sockets still open"
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize("mode", ["jwt", "mtls"])
async def test_sockets_that_never_handshake_are_closed_and_free_the_limit(
    tmp_path: Path, ca: CA, mode: str
) -> None:
    """Sockets that never start TLS used to hold max_connections for grpc
    core's default handshake timeout, 120 s, and new connections from
    everyone else failed UNAVAILABLE meanwhile; the attacker reconnects.
    They are closed after handshake_timeout now."""
    async with tls_gateway(tmp_path, ca, mode, max_connections=4, handshake_timeout=1.0) as gateway:
        sockets = _idle_sockets(gateway.port, 4)
        try:
            closed = await asyncio.gather(*(_closed_by_server(s, 8.0) for s in sockets))
            assert all(closed), f"{closed.count(False)} of 4 idle sockets still open"
        finally:
            for sock in sockets:
                sock.close()
        if mode == "jwt":
            victim = tls_channel(gateway.port, ca, bearer=token())
        else:
            victim = tls_channel(gateway.port, ca, client=ca.client("victim"))
        async with victim:
            await victim_works(victim, "after-idle-sockets")


async def test_a_tls_connection_that_never_speaks_http2_is_closed(tmp_path: Path, ca: CA) -> None:
    """The handshake timeout also covers the wait for the client's HTTP/2
    preface and settings after TLS: a connection that completes TLS and
    then says nothing is closed too."""
    async with tls_gateway(tmp_path, ca, "jwt", handshake_timeout=1.0) as gateway:
        tls = client_tls(ca)
        tls.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gateway.port, ssl=tls, server_hostname="localhost"
        )
        try:
            started = time.monotonic()
            await asyncio.wait_for(reader.read(), 8)  # the server's settings, then the end
            assert time.monotonic() - started < 5
        finally:
            writer.transport.abort()


async def test_idle_sockets_on_the_health_listener_are_closed(tmp_path: Path, ca: CA) -> None:
    """The health listener allows 32 connections: 32 idle sockets used to
    fail the probe for two minutes."""
    async with tls_gateway(
        tmp_path, ca, "mtls", health_listen="127.0.0.1:0", handshake_timeout=1.0
    ) as gateway:
        assert gateway.health_port is not None
        await _idle_sockets_are_closed(gateway.health_port, 32)
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{gateway.health_port}", options=OWN_CONNECTION
        ) as probe:
            assert await check(probe) == SERVING
