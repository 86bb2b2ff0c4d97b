"""Where a client's target leads: ``host[:port]`` (the port defaults to the
server's 50051, not gRPC's 443), ``consul://NAME[?tag=TAG]``, or any other
gRPC target (``dns:///...``, ``unix:...``), and the transport for it."""

from __future__ import annotations

import ipaddress

from blobgate.client.consul_transport import ConsulTransport
from blobgate.client.discovery import ConsulTarget
from blobgate.client.options import ClientOptions
from blobgate.client.pool import Balancing
from blobgate.client.transport import StaticTransport, Transport
from blobgate.client.wire import CHANNEL_OPTIONS
from blobgate.shared.consul_config import ConsulConfig

DEFAULT_PORT = 50051
# gRPC's own target schemes: such targets are passed on as they are.
_GRPC_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:", "xds:")


def dial_address(target: str) -> str:
    """``target`` with the default port added when it names a host alone:
    ``127.0.0.1``, ``gw.internal``, ``[::1]`` or a bare ``::1``. A target
    in one of gRPC's schemes (``dns:///...``, ``unix:...``) is left as it is. Raises
    ValueError for an empty host or a port that is not 1 to 65535."""
    if target.lower().startswith(_GRPC_SCHEMES):
        return target
    if target.startswith("["):
        host, bracket, rest = target[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"expected [IPV6]:PORT, got {target!r}")
        return f"[{host}]:{_port(target, rest[1:])}"
    if target.count(":") >= 2:  # an IPv6 address without brackets (and so without a port)
        try:
            ipaddress.IPv6Address(target)
        except ValueError:
            raise ValueError(f"expected HOST:PORT or [IPV6]:PORT, got {target!r}") from None
        return f"[{target}]:{DEFAULT_PORT}"
    host, _, port = target.partition(":")
    if not host:
        raise ValueError(f"expected HOST:PORT, got {target!r}")
    return f"{host}:{_port(target, port)}"


def _port(target: str, port: str) -> int:
    if not port:
        return DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{target!r}: the port must be 1 to 65535, not {port!r}")
    return int(port)


def open_transport(target: str, options: ClientOptions) -> Transport:
    """The transport for ``target``: Consul discovery for
    ``consul://NAME[?tag=TAG]``, else the one address (see
    ``dial_address``). Raises ValueError for a malformed target or Consul
    address."""
    channel_options = CHANNEL_OPTIONS
    credentials = None
    if options.tls is not None:
        channel_options = [*channel_options, *options.tls.channel_options()]
        credentials = options.tls.credentials(options.token)
    balancing = Balancing.of(options)
    service = ConsulTarget.parse(target)
    if service is None:
        return StaticTransport(dial_address(target), channel_options, credentials, balancing)
    agent = ConsulConfig.from_environment(options.consul_addr, options.consul_token)
    return ConsulTransport(target, service, agent, channel_options, credentials, balancing)
