"""Instances a client cannot use, for discovery tests: a server with a
certificate of the test's choice that records every call reaching it, a port
that accepts TCP and never answers, and their registration with the Consul
stand-in as passing, whatever the client makes of them."""

from __future__ import annotations

import asyncio

import consul
import consul.aio
import grpc

from .consul import ConsulAgent
from .pki import Issued


class Counting(grpc.GenericRpcHandler):
    """Records every call that reaches a server, and serves none."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> None:
        self.methods.append(handler_call_details.method)


class BlackHole:
    """Accepts TCP connections and never sends a byte."""

    def __init__(self) -> None:
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        while await reader.read(65536):  # whatever the client says, no answer
            pass

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


async def tls_server(
    issued: Issued, handler: grpc.GenericRpcHandler
) -> tuple[grpc.aio.Server, int]:
    """A started gRPC server on a loopback port, with ``issued`` as its
    certificate and ``handler`` for every call; the server and its port."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials([(issued.key, issued.cert)])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, port


async def register_passing(
    agent: ConsulAgent, service_id: str, address: str, service: str = "blobgate"
) -> None:
    """Register ``address`` as an instance of ``service`` with a TTL check
    marked passing: Consul lists it whatever the client makes of it."""
    host, _, port = address.rpartition(":")
    api = consul.aio.Consul(host="127.0.0.1", port=agent.port)
    try:
        await api.agent.service.register(
            service,
            service_id=service_id,
            address=host,
            port=int(port),
            check=consul.Check.ttl("60s"),
        )
        await api.agent.check.ttl_pass(f"service:{service_id}")
    finally:
        await api.close()
