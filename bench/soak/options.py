"""What a soak runs: the mix of operations, the gateway's settings, and the
memory bound its peak RSS is held to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench import MiB
from bench.common.services import ServicePlan, plan_services
from bench.soak.identity import JwtIdentity

BUCKET = "blobgate-soak"
KINDS = ("upload", "download", "stat", "list", "delete")
# Worker n does ROLES[n % 8]: 3 of 8 upload, 3 of 8 download, 2 of 8 stat or list
# (two stats to one list). Fixed roles keep the mix of what runs at once
# steady: with a random kind per operation, the slow uploads would soon hold
# nearly every worker.
ROLES = ("upload", "download", "unary", "upload", "download", "unary", "upload", "download")
UNARY = {"stat": 2, "list": 1}

# The gateway's peak RSS must stay under
#     memory_budget + OVERHEAD_MIB + max_streams x STREAM_OVERHEAD_MIB.
# memory_budget bounds the part buffers of all uploads together; OVERHEAD_MIB
# is what a gateway needs whatever its streams count, measured on this
# project's machine kind (2 cores, AMD EPYC, Python 3.11.7, aioboto3 15.5.0)
# by this benchmark's calibration step (printed by every run) and
# bench/throughput/:
# - the idle gateway (interpreter, grpcio, botocore, aiohttp) is 91-92 MiB
#   RSS with grpcio 1.85.3 (86 MiB in a throughput run with grpcio 1.85.1);
# - one upload alone peaks, less its budgeted part buffers ((1 +
#   parts_in_flight) x part_size = 40 MiB by default), at 97-118 MiB (one
#   64 MiB upload in this benchmark's runs: 136.7 - 40 to 158.1 - 40, from
#   idle 91-92) and 114-128 MiB (256 MiB uploads in the throughput runs:
#   153.6 - 40 to 167.6 - 40, from idle 92): idle plus 6-36 MiB that a
#   transfer costs beyond its parts (its gRPC receive window, the message
#   being handled, BytesIO slack, aiohttp and botocore buffers, allocator and
#   connection state kept after the first transfer).
# 128 MiB is the highest of those. The bound adds STREAM_OVERHEAD_MIB for
# every stream on top, the first one included, so for one upload it is
# 128 + 40 + 8 = 176 MiB against the 167.6 measured.
OVERHEAD_MIB = 128
# What one open Upload or Download stream holds outside memory_budget, with
# 1 MiB messages: an upload's gRPC receive window (4 MiB,
# server/blobgate/server/listeners.py), which its client fills while the
# upload waits for budget or S3, and the message in hand; a download's message
# waiting for a slow client and what aiohttp read ahead from S3. Measured by
# `python -m bench.soak --stream-cost 64` (bench/soak/stream_cost.py), 64
# streams at once, per stream: an upload waiting for budget 3.8-3.9 MiB
# steady and 5.8-6.9 MiB at the peak of the phase (while the waiting uploads
# go through, one part at a time); a download whose client stopped reading
# 2.6-5.4 MiB (two modes, run to run). 6.9 MiB (also the highest of 5 runs
# with 16 and 32 streams), rounded up to 8.
STREAM_OVERHEAD_MIB = 8

# The attacks of an attack run (bench/soak/attacks.py), in the order "all"
# runs them: unfinished-messages last, as the memory it makes the gateway take
# is not all given back to the system (the RSS of later phases would start
# high). Those in NEEDS_IDENTITY act as principals: they need --identity jwt.
ATTACKS = ("watch-flood", "idle-sockets", "trickle-uploads", "many-principals",
           "unfinished-messages")  # fmt: skip
NEEDS_IDENTITY = frozenset({"trickle-uploads", "many-principals"})
IDENTITIES = ("none", "jwt")


@dataclass(frozen=True)
class AttackPlan:
    """An attack run: a baseline phase, then one phase per attack, each
    ``phase_seconds`` long, while ``victims`` workers (a principal of their
    own in JWT mode) each connect anew and Upload, Stat, Download and Delete
    one ``victim_size``-byte object, again and again, every call under
    ``victim_timeout`` seconds."""

    attacks: tuple[str, ...]
    phase_seconds: float = 15.0
    victims: int = 4
    victim_size: int = 64 * 1024
    victim_timeout: float = 10.0
    watch_streams: int = 300  # watch-flood: Health Watch streams without a token
    idle_sockets: int = 300  # idle-sockets: TCP connections that send nothing
    unfinished_messages: int = 40  # unfinished-messages: Uploads without a token
    announced: int = 8 * MiB  # ... each announcing a message of this size
    trickle_uploads: int = 8  # trickle-uploads: Upload streams of one principal
    trickle_interval: float = 5.0  # seconds between the 1-byte messages
    principals: int = 16  # many-principals: principals with trickle_uploads each
    require_victims_ok: bool = False  # fail the run if a victim's call failed


@dataclass(frozen=True)
class SoakOptions:
    """What to run. Sizes are in bytes."""

    duration: float = 60.0  # seconds during which new operations start
    streams: int = 64  # concurrent workers, each with one operation at a time
    min_size: int = 1 * MiB
    max_size: int = 64 * MiB
    budget: int = 256 * MiB  # the gateway's memory_budget
    max_streams: int | None = None  # the gateway's max_streams (None: streams)
    part_size: int = 8 * MiB
    parts_in_flight: int = 4
    seed: int = 1
    max_live: int | None = None  # objects kept in S3 at once (None: half the streams)
    reads_per_object: int = 6  # downloads and stats before an object is deleted
    op_timeout: float = 300.0  # seconds allowed per operation
    log_dir: Path | None = None  # for moto.log and gateway.log (None: a new temp dir)
    gateway_log_level: str = "WARNING"
    gateway_cmd: tuple[str, ...] = ()  # () : blobgate-server beside this Python
    abusers: int = 0  # misbehaving clients alongside the workers (bench/soak/abusers.py)
    idle_timeout: float = 30.0  # the gateway's stream_idle_timeout
    identity: str = "none"  # "jwt": TLS and a bearer token per principal (identity.py)
    max_calls: int | None = None  # the gateway's max_calls (None: its default)
    max_connections: int | None = None  # the gateway's max_connections (None: its default)
    attack: AttackPlan | None = None  # an attack run instead of the mixed soak

    @property
    def gateway_max_streams(self) -> int:
        """Room for every worker and every misbehaving client."""
        return self.streams + self.abusers if self.max_streams is None else self.max_streams

    @property
    def live_cap(self) -> int:
        return max(self.streams // 2, 1) if self.max_live is None else self.max_live

    @property
    def bound_mib(self) -> float:
        """memory_budget + OVERHEAD_MIB + max_streams x STREAM_OVERHEAD_MIB."""
        return self.budget / MiB + OVERHEAD_MIB + self.gateway_max_streams * STREAM_OVERHEAD_MIB

    def services_plan(self, log_prefix: str, identity: JwtIdentity | None = None) -> ServicePlan:
        """moto and a gateway configured from these options; in TLS and JWT
        mode under ``identity``."""
        settings = [
            "--part-size", str(self.part_size), "--parts-in-flight", str(self.parts_in_flight),
            "--memory-budget", str(self.budget), "--max-streams", str(self.gateway_max_streams),
            "--log-level", self.gateway_log_level,
            "--stream-idle-timeout", str(self.idle_timeout),
        ]  # fmt: skip
        if self.max_calls is not None:
            settings += ["--max-calls", str(self.max_calls)]
        if self.max_connections is not None:
            settings += ["--max-connections", str(self.max_connections)]
        if identity is not None:
            settings += identity.gateway_settings()
            if self.attack is None:  # the mixed soak's workers are one principal
                settings += ["--max-streams-per-principal", str(self.gateway_max_streams)]
        return plan_services(
            bucket=BUCKET, settings=settings, gateway_cmd=self.gateway_cmd,
            log_dir=self.log_dir, log_prefix=log_prefix,
            root_certificates=None if identity is None else identity.ca_pem,
        )  # fmt: skip
