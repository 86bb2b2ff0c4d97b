"""What the agent keeps: services, their checks, and the constants and errors
the rest of the stand-in shares."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
STATUSES = (PASSING, WARNING, CRITICAL)

DATACENTER = "dc1"
NODE_ADDRESS = "127.0.0.1"


class BadRequest(Exception):
    """A client error the real agent answers with 400 and a plain-text reason."""


def norm_keys(obj: dict[str, Any]) -> dict[str, Any]:
    """Keys folded the way the agent matches them: case-insensitive (Go's JSON
    decoder) and snake_case accepted ("grpc_use_tls" is GRPCUseTLS)."""
    return {key.replace("_", "").lower(): value for key, value in obj.items()}


@dataclass
class Service:
    id: str
    name: str
    tags: list[str]
    address: str
    port: int
    meta: dict[str, str]
    weights: dict[str, int]
    enable_tag_override: bool
    tagged_addresses: dict[str, Any]
    create_index: int = 0
    modify_index: int = 0


@dataclass
class Check:
    check_id: str
    name: str
    service_id: str
    service_name: str
    service_tags: list[str]
    type: str  # "grpc", "ttl" or "" (maintenance)
    status: str
    notes: str = ""
    output: str = ""
    interval_ns: int = 0
    timeout_ns: int = 0
    ttl_ns: int = 0
    grpc: str = ""
    grpc_use_tls: bool = False
    tls_server_name: str = ""
    deregister_after: float = 0.0  # effective, minimum applied; 0 = never
    critical_since: float | None = None  # time.monotonic()
    ttl_deadline: float | None = None  # time.monotonic()
    task: asyncio.Task[None] | None = field(default=None, repr=False, compare=False)
    create_index: int = 0
    modify_index: int = 0


@dataclass
class CheckSpec:
    """A check as a registration asks for it, before the agent adds it."""

    check_id: str
    name: str
    notes: str
    status: str
    type: str
    interval_ns: int
    timeout_ns: int
    ttl_ns: int
    grpc: str
    deregister_after_ns: int
    grpc_use_tls: bool = False
    tls_server_name: str = ""
