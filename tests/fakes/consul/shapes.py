"""Services, checks and the node as the agent's JSON answers show them."""

from __future__ import annotations

from typing import Any

from .go_formats import format_duration
from .records import DATACENTER, NODE_ADDRESS, PASSING, Check, Service


def agent_service_json(svc: Service) -> dict[str, Any]:
    """A service as /v1/agent/services shows it (Tags [] and Meta {} when unset)."""
    data: dict[str, Any] = {
        "ID": svc.id,
        "Service": svc.name,
        "Tags": list(svc.tags),
        "Meta": dict(svc.meta),
        "Port": svc.port,
        "Address": svc.address,
        "Weights": dict(svc.weights),
        "EnableTagOverride": svc.enable_tag_override,
        "Datacenter": DATACENTER,
    }
    if svc.tagged_addresses:
        data["TaggedAddresses"] = dict(svc.tagged_addresses)
    return data


def health_service_json(svc: Service) -> dict[str, Any]:
    """A service as /v1/health/service shows it (Meta null when unset)."""
    data: dict[str, Any] = {
        "ID": svc.id,
        "Service": svc.name,
        "Tags": list(svc.tags),
        "Address": svc.address,
        "Meta": dict(svc.meta) if svc.meta else None,
        "Port": svc.port,
        "Weights": dict(svc.weights),
        "EnableTagOverride": svc.enable_tag_override,
        "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
        "Connect": {},
        "PeerName": "",
        "CreateIndex": svc.create_index,
        "ModifyIndex": svc.modify_index,
    }
    if svc.tagged_addresses:
        data["TaggedAddresses"] = dict(svc.tagged_addresses)
    return data


def check_json(chk: Check, node_name: str) -> dict[str, Any]:
    """A check as /v1/agent/checks and /v1/health/service show it."""
    return {
        "Node": node_name,
        "CheckID": chk.check_id,
        "Name": chk.name,
        "Status": chk.status,
        "Notes": chk.notes,
        "Output": chk.output,
        "ServiceID": chk.service_id,
        "ServiceName": chk.service_name,
        "ServiceTags": list(chk.service_tags),
        "Type": chk.type,
        "Interval": format_duration(chk.interval_ns) if chk.interval_ns else "",
        "Timeout": format_duration(chk.timeout_ns) if chk.timeout_ns else "",
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": chk.create_index,
        "ModifyIndex": chk.modify_index,
    }


def serf_check_json(node_name: str) -> dict[str, Any]:
    """The node's own check, always passing: the agent is alive."""
    return {
        "Node": node_name,
        "CheckID": "serfHealth",
        "Name": "Serf Health Status",
        "Status": PASSING,
        "Notes": "",
        "Output": "Agent alive and reachable",
        "ServiceID": "",
        "ServiceName": "",
        "ServiceTags": [],
        "Type": "",
        "Interval": "",
        "Timeout": "",
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": 1,
        "ModifyIndex": 1,
    }


def node_json(node_name: str, node_id: str) -> dict[str, Any]:
    """The agent's node, as /v1/health/service shows it."""
    return {
        "ID": node_id,
        "Node": node_name,
        "Address": NODE_ADDRESS,
        "Datacenter": DATACENTER,
        "TaggedAddresses": {
            "lan": NODE_ADDRESS,
            "lan_ipv4": NODE_ADDRESS,
            "wan": NODE_ADDRESS,
            "wan_ipv4": NODE_ADDRESS,
        },
        "Meta": {"consul-network-segment": ""},
        "CreateIndex": 1,
        "ModifyIndex": 1,
    }
