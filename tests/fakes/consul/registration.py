"""A service registration's body read as the agent reads it: the service, its
checks, and the agent's rules for both (refusals are BadRequest)."""

from __future__ import annotations

import re
from typing import Any

from .go_formats import parse_duration_ns
from .records import STATUSES, BadRequest, CheckSpec, Service, norm_keys

UNSUPPORTED_CHECK_KEYS = (
    "http",
    "tcp",
    "udp",
    "args",
    "scriptargs",
    "script",
    "dockercontainerid",
    "h2ping",
    "aliasservice",
    "aliasnode",
    "osservice",
)
_META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")


def parse_service(body: dict[str, Any]) -> Service:
    """The service of a registration body whose keys are folded (norm_keys)."""
    name = body.get("name")
    if not isinstance(name, str | None):
        raise BadRequest("Request decode failed: Name must be a string")
    if not name:
        raise BadRequest("Missing service name")
    service_id = body.get("id") or name
    address = body.get("address") or ""
    port = body.get("port") or 0
    tags = body.get("tags") or []
    meta = body.get("meta") or {}
    if not isinstance(service_id, str) or not isinstance(address, str):
        raise BadRequest("Request decode failed: ID and Address must be strings")
    if isinstance(port, bool) or not isinstance(port, int):
        raise BadRequest(f"Request decode failed: Port must be an integer, not {port!r}")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BadRequest("Request decode failed: Tags must be a list of strings")
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise BadRequest("Request decode failed: Meta must map strings to strings")
    if address in ("0.0.0.0", "::", "[::]"):
        raise BadRequest("Invalid service address")
    validate_meta(meta)
    weights = {"Passing": 1, "Warning": 1}
    raw_weights = body.get("weights")
    if raw_weights:
        if not isinstance(raw_weights, dict):
            raise BadRequest("Request decode failed: Weights must be an object")
        folded = norm_keys(raw_weights)
        weights = {"Passing": folded.get("passing", 0), "Warning": folded.get("warning", 0)}
        if weights["Passing"] < 1:
            raise BadRequest("Invalid Weights: Passing must be greater than 0")
        if weights["Warning"] < 0:
            raise BadRequest("Invalid Weights: Warning must be greater or equal than 0")
    tagged = body.get("taggedaddresses") or {}
    return Service(
        id=service_id,
        name=name,
        tags=list(tags),
        address=address,
        port=port,
        meta=dict(meta),
        weights=weights,
        enable_tag_override=bool(body.get("enabletagoverride")),
        tagged_addresses=tagged if isinstance(tagged, dict) else {},
    )


def validate_meta(meta: dict[str, str]) -> None:
    """The agent's rules for service metadata."""
    if len(meta) > 64:
        raise BadRequest(
            "Invalid Service Meta: Node metadata cannot contain more than 64 key/value pairs"
        )
    for key, value in meta.items():
        problem = None
        if not key:
            problem = "Key cannot be blank"
        elif not _META_KEY.match(key):
            problem = "Key contains invalid characters"
        elif len(key) > 128:
            problem = "Key is too long (limit: 128 characters)"
        elif key.startswith("consul-"):
            problem = "Key prefix 'consul-' is reserved for internal use"
        elif len(value) > 512:
            problem = "Value is too long (limit: 512 characters)"
        if problem:
            raise BadRequest(
                f"Invalid Service Meta: Couldn't load metadata pair ('{key}', '{value}'): {problem}"
            )


def parse_checks(body: dict[str, Any]) -> list[CheckSpec]:
    """``Check`` then ``Checks``, as the agent orders them; empty ones skipped."""
    raw: list[Any] = []
    if body.get("check"):
        raw.append(body["check"])
    checks = body.get("checks") or []
    if not isinstance(checks, list):
        raise BadRequest("Request decode failed: Checks must be a list")
    raw.extend(checks)
    specs = []
    for item in raw:
        if not isinstance(item, dict):
            raise BadRequest("Request decode failed: a check must be an object")
        if any(item.values()):
            specs.append(parse_check(norm_keys(item)))
    return specs


def parse_check(check: dict[str, Any]) -> CheckSpec:
    """One check definition whose keys are folded (norm_keys)."""
    for key in UNSUPPORTED_CHECK_KEYS:
        if check.get(key):
            raise BadRequest(
                f"Invalid check: the Consul stand-in runs only GRPC and TTL checks, not {key}"
            )
    use_tls = check.get("grpcusetls") or False
    server_name = check.get("tlsservername") or ""
    if not isinstance(use_tls, bool):
        raise BadRequest("Request decode failed: GRPCUseTLS must be a boolean")
    if not isinstance(server_name, str):
        raise BadRequest("Request decode failed: TLSServerName must be a string")
    if check.get("tlsskipverify"):
        raise BadRequest("Invalid check: the Consul stand-in always verifies TLS (TLSSkipVerify)")
    durations: dict[str, int] = {}
    for key in ("interval", "timeout", "ttl", "deregistercriticalserviceafter"):
        value = check.get(key)
        try:
            durations[key] = parse_duration_ns(value) if value not in (None, "") else 0
        except ValueError as exc:
            raise BadRequest(f"Request decode failed: {exc}") from exc
    status = check.get("status") or ""
    if status and status not in STATUSES:
        raise BadRequest("Status for checks must 'passing', 'warning', 'critical'")
    target = check.get("grpc") or ""
    if not isinstance(target, str):
        raise BadRequest("Request decode failed: GRPC must be a string")
    if durations["interval"] > 0 and durations["ttl"] > 0:
        raise BadRequest("Invalid check: Interval and TTL cannot both be specified")
    if target and durations["interval"] <= 0:
        raise BadRequest(
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks"
        )
    if not target and durations["ttl"] <= 0:
        raise BadRequest("Invalid check: TTL must be > 0 for TTL checks")
    return CheckSpec(
        check_id=str(check.get("checkid") or check.get("id") or ""),
        name=str(check.get("name") or ""),
        notes=str(check.get("notes") or ""),
        status=status,
        type="grpc" if target else "ttl",
        interval_ns=durations["interval"],
        timeout_ns=durations["timeout"],
        ttl_ns=durations["ttl"],
        grpc=target,
        deregister_after_ns=durations["deregistercriticalserviceafter"],
        grpc_use_tls=use_tls,
        tls_server_name=server_name,
    )
