"""The gRPC servers: the main server with its services and interceptors,
its options (connection limits, keepalive, the handshake timeout, message
sizes, the stream window), and the small health-only server behind
``health_listen``."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from blobgate.server.core.settings import Settings
from blobgate.server.health import SERVICE_NAME, BoundedHealth
from blobgate.server.rpc.admission import AdmissionInterceptor, grpc_call_limit
from blobgate.server.rpc.codecs import add_to_server
from blobgate.v1 import storage_pb2_grpc

# Connections: a client's idle connection is closed after 15 minutes; any
# connection is asked to go away after an hour (clients reconnect, which
# spreads them over the instances behind Consul), and calls in flight then get
# another hour to finish, so long transfers survive. The server pings a
# connection silent for a minute and drops it if no answer comes in 20 s (a
# peer that vanished); clients may ping at most every 10 s.
_MINUTE_MS = 60_000
_CONNECTION_OPTIONS = [
    ("grpc.max_connection_idle_ms", 15 * _MINUTE_MS),
    ("grpc.max_connection_age_ms", 60 * _MINUTE_MS),
    ("grpc.max_connection_age_grace_ms", 60 * _MINUTE_MS),
    ("grpc.keepalive_time_ms", _MINUTE_MS),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 2),
]


def handshake_options(settings: Settings) -> list[tuple[str, int]]:
    """How long a new connection may take before it is a connection: gRPC
    closes one that has not finished its TLS handshake and sent its HTTP/2
    settings (the client preface) within ``handshake_timeout``. gRPC's
    default, 120 s, let sockets that never start a handshake hold
    ``max_connections`` for two minutes each. Once a connection is set up,
    keepalive and max_connection_idle_ms (15 minutes, for every connection:
    a shorter one would close well-behaved idle clients too) bound it."""
    return [("grpc.server_handshake_timeout_ms", round(settings.handshake_timeout * 1000))]


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """The main server's gRPC options: connection limits and keepalive,
    the handshake timeout, streams per connection, message sizes and the
    stream window."""
    size = int(settings.max_message_size)
    return [
        *_CONNECTION_OPTIONS,
        *handshake_options(settings),
        # Calls a connection may have open at once (HTTP/2 streams), and
        # connections at once: with max_calls (the server's maximum
        # concurrent RPCs), what bounds the calls whose messages gRPC buffers
        # before any handler runs (docs/configuration.md, Memory).
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        # A second instance on the same port must fail, not share it silently.
        ("grpc.so_reuseport", 0),
        # BDP probing grows the receive window far past what an upload that is
        # waiting for S3 consumes, and gRPC buffers that data: measured, it
        # cost ~50 MiB of peak RSS per 256 MiB upload, at no loopback speed gain.
        ("grpc.http2.bdp_probe", 0),
        # The fixed receive window of each stream: what gRPC buffers for an
        # upload that is not being read (waiting for budget or S3), so most of
        # what an open upload costs outside memory_budget. Measured with
        # `python -m bench.soak --stream-cost 32`, per upload waiting for
        # budget: ~3.7 MiB at 4 MiB, ~1.7 at 2 MiB, ~0.8 at 1 MiB. On loopback
        # (bench/throughput/, 3 runs each) 1 and 2 MiB cost no measurable
        # upload or download throughput, but a window caps a stream at about
        # window / round-trip time: through a TCP proxy delaying each way by
        # half of 10 ms, one 64 MiB upload ran at ~73 MB/s with 4 MiB, ~67
        # with 2 MiB and ~49 with 1 MiB (20 ms: ~62, ~51, ~33). Clients are
        # rarely on loopback, so 4 MiB stays, and the memory bound
        # (docs/configuration.md, Memory) counts it per stream.
        ("grpc.http2.lookahead_bytes", 4 * 1024 * 1024),
    ]


# The health-only listener answers a few probes: small messages, few
# connections and calls; a second instance on its port must fail too. Its
# Watch streams take at most half its calls, so Check always has room.
_HEALTH_OPTIONS = [
    *_CONNECTION_OPTIONS,
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 4096),
    ("grpc.max_concurrent_streams", 8),
    ("grpc.max_allowed_incoming_connections", 32),
]
_HEALTH_MAX_CALLS = 64


def health_only_server(settings: Settings, health: HealthServicer) -> grpc.aio.Server:
    """A server with nothing but ``health``, the gateway's own health
    service, for the plaintext ``health_listen`` port: probes that cannot
    present a client certificate (the Docker health check, kubelet) reach it
    there. Not bound to a port yet."""
    # Every call here is anonymous: admission only holds each to delivering
    # its request within anonymous_request_timeout.
    admission = AdmissionInterceptor(
        1, _HEALTH_MAX_CALLS, lambda _details: False, settings.anonymous_request_timeout
    )
    server = grpc.aio.server(
        interceptors=[admission],
        options=[*_HEALTH_OPTIONS, *handshake_options(settings)],
        maximum_concurrent_rpcs=_HEALTH_MAX_CALLS,
    )
    watches = min(settings.max_health_watches, _HEALTH_MAX_CALLS // 2)
    health_pb2_grpc.add_HealthServicer_to_server(
        BoundedHealth(health, watches, settings.health_watch_lifetime), server
    )
    return server


@dataclass
class Servers:
    """The gateway's gRPC server and its health service; once listening
    (``app``), its port, and the plaintext health-only server and its port
    when ``health_listen`` is set."""

    server: grpc.aio.Server
    health: HealthServicer
    port: int = 0
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None


def build_servers(
    settings: Settings,
    servicer: storage_pb2_grpc.StorageServiceServicer,
    interceptors: list[grpc.aio.ServerInterceptor],
) -> Servers:
    """The gRPC server with the interceptor chain, the StorageService,
    health and, if asked, reflection; not listening yet. gRPC's own limit
    on open calls leaves room for both of admission's shares
    (``rpc.admission``)."""
    server = grpc.aio.server(
        interceptors=interceptors,
        options=server_options(settings),
        maximum_concurrent_rpcs=grpc_call_limit(settings.max_calls, settings.max_anonymous_calls),
    )
    add_to_server(servicer, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(
        BoundedHealth(health, settings.max_health_watches, settings.health_watch_lifetime), server
    )
    if settings.reflection:
        reflection.enable_server_reflection(
            [
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
    return Servers(server, health)
