"""The address this instance registers in Consul: one the agent's checks and
other hosts can reach, never loopback when the listen address is not.

In order: the ``advertise_address`` setting; else the listen host when it is
a specific one; else (a wildcard listen host such as ``0.0.0.0``) the source
address the kernel picks towards the Consul agent when the agent is on
another host (none of its addresses is this host's), or towards the default
route when it is local. The host name is
never resolved for this: on Debian and Ubuntu it maps to 127.0.1.1 in
/etc/hosts. A loopback address registered with an agent on another host
could never be checked or called, so it stops start-up.

Finding the source address sends nothing: ``connect`` on a UDP socket only
asks the kernel for the route.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass

from blobgate.server.core.settings import Settings
from blobgate.server.tls import is_loopback
from blobgate.shared.consul_config import ConsulConfig

log = logging.getLogger(__name__)

# Global addresses only the default route leads to (Google's public DNS);
# nothing is sent to them.
_DEFAULT_ROUTE = {socket.AF_INET: "8.8.8.8", socket.AF_INET6: "2001:4860:4860::8888"}
_SETTING = "advertise_address (--advertise-address / BLOBGATE_ADVERTISE_ADDRESS)"


class AdvertiseError(Exception):
    """No address other hosts can reach; the message says what to set."""


@dataclass(frozen=True)
class Advertised:
    """The address to register, and why it was chosen (for the log)."""

    address: str
    reason: str


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _usable(address: str) -> bool:
    """An address another host may reach this one at."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


def source_address(destination: str, port: int = 9) -> str | None:
    """The address this host sends from towards ``destination`` (an IP), or
    None when no route leads there or it is not one others can reach."""
    try:
        with socket.socket(_family(destination), socket.SOCK_DGRAM) as probe:
            probe.connect((destination, port))
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    return address if _usable(address) else None


def on_this_host(ip: str) -> bool:
    """Whether ``ip`` is one of this host's addresses (loopback, or one a
    socket can bind to)."""
    if is_loopback(ip):
        return True
    try:
        with socket.socket(_family(ip), socket.SOCK_DGRAM) as probe:
            probe.bind((ip, 0))
    except OSError:
        return False
    return True


def agent_addresses(agent: ConsulConfig) -> list[str]:
    """The IP addresses the agent's host name resolves to (none if it does not)."""
    try:
        infos = socket.getaddrinfo(agent.host, agent.port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _from_routes(
    families: list[socket.AddressFamily], agent: ConsulConfig, remote: list[str]
) -> Advertised | None:
    for ip in remote:
        if _family(ip) in families and (address := source_address(ip, agent.port)):
            return Advertised(
                address, f"the address this host reaches the Consul agent at {agent} from"
            )
    for family in families:
        if address := source_address(_DEFAULT_ROUTE[family]):
            return Advertised(address, "this host's address on its default route")
    return None


def choose_address(settings: Settings) -> Advertised:
    """The address to register for ``settings`` (this may resolve the
    agent's host name: call it off the event loop). Raises AdvertiseError
    when it would be loopback and the agent is on another host."""
    agent = ConsulConfig.parse(settings.consul_http_addr, ssl=settings.consul_http_ssl)
    resolved = agent_addresses(agent)
    remote = [ip for ip in resolved if not on_this_host(ip)]
    host = settings.listen.rpartition(":")[0].strip("[]")
    if settings.advertise_address:
        chosen = Advertised(settings.advertise_address, f"the setting {_SETTING}")
    elif not _is_wildcard(host):
        chosen = Advertised(host, f"the host of listen {settings.listen}")
    else:
        # [::] accepts IPv4 too (gRPC listens dual-stack), and IPv4 is the likelier route.
        ipv4_only = _family(host) == socket.AF_INET
        families = [socket.AF_INET] if ipv4_only else [socket.AF_INET, socket.AF_INET6]
        chosen = _from_routes(families, agent, remote) or Advertised(
            "127.0.0.1" if ipv4_only else "::1",
            "this host has no route to other hosts: reachable from this host only",
        )
    if remote and is_loopback(chosen.address):
        raise AdvertiseError(
            f"refusing to register the loopback address {chosen.address} ({chosen.reason}) "
            f"with the Consul agent at {agent}: the agent is on another host and could never "
            f"reach it; listen on an address other hosts reach, or set {_SETTING}"
        )
    if not resolved:
        log.warning("the Consul agent's host %s does not resolve (yet)", agent.host)
    unreachable = is_loopback(chosen.address) and _is_wildcard(host)
    log.log(
        logging.WARNING if unreachable else logging.INFO,
        "Consul: registering address %s (%s; listen %s)",
        chosen.address,
        chosen.reason,
        settings.listen,
    )
    return chosen


__all__ = ["AdvertiseError", "Advertised", "choose_address", "on_this_host", "source_address"]
