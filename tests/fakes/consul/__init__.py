"""A stand-in for the HashiCorp Consul agent's HTTP API, for tests.

No Consul binary can be installed here, so tests start this instead: a real
HTTP server on 127.0.0.1, in its own thread with its own event loop (it keeps
answering while a test's loop is busy, like a separate agent process). It
follows the real agent closely enough that the same client code (py-consul,
``consul.aio.Consul(host=, port=)``) works against both:

- ``PUT /v1/agent/service/register[?replace-existing-checks]`` (PascalCase or
  snake_case keys), ``PUT /v1/agent/service/deregister/<id>``,
  ``GET /v1/agent/services``, ``GET /v1/agent/service/<id>``,
  ``GET /v1/agent/checks``, ``PUT /v1/agent/service/maintenance/<id>``;
- TTL checks: ``PUT /v1/agent/check/pass|warn|fail/<check-id>[?note=]`` and
  ``PUT /v1/agent/check/update/<check-id>``; an expired TTL is critical;
- gRPC checks run by the agent itself (``grpc.health.v1.Health/Check`` every
  Interval, SERVING is passing, anything else critical);
- ``GET /v1/health/service/<name>[?passing][&tag=][&index=&wait=]`` with
  blocking queries and ``X-Consul-Index``;
- DeregisterCriticalServiceAfter, enforced by a reaper.

Check types other than gRPC and TTL (HTTP, TCP, script...) are refused with a
400 rather than silently never run. Durations are Go duration strings.

The modules, by concern: ``agent`` (ConsulAgent, its thread and lifecycle),
``http_api`` (routes and handlers), ``catalog`` (services, checks and the
index), ``check_runner`` (gRPC checks, TTLs, the reaper), ``blocking``
(blocking queries), ``registration`` (reading a registration body),
``shapes`` (the JSON answers), ``records`` and ``go_formats``.
"""

from .agent import ConsulAgent
from .go_formats import format_duration, parse_duration, parse_duration_ns
from .records import CRITICAL, PASSING, WARNING

__all__ = [
    "CRITICAL",
    "PASSING",
    "WARNING",
    "ConsulAgent",
    "format_duration",
    "parse_duration",
    "parse_duration_ns",
]
