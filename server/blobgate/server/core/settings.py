"""The service's one settings object, built once at start-up.

Sources, highest priority first: command-line flags, ``BLOBGATE_*``
environment variables, an optional TOML config file (``--config`` or
``BLOBGATE_CONFIG``), then the defaults below. pydantic-settings does the
typing, parsing of sizes such as ``8MiB``, and validation; this module only
adds the flags and the file. AWS credentials are not settings: botocore's own
chain (``AWS_*`` variables, profiles, instance roles) supplies them.

This module holds the fields; their checks, and the values derived from
them, are in ``core.settings_checks``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, ByteSize, Field
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from blobgate.server.core.lifecycle import PrefixRule
from blobgate.server.core.settings_checks import MiB as MiB
from blobgate.server.core.settings_checks import SettingsChecks

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["text", "json"]
EventLoop = Literal["auto", "asyncio", "uvloop"]
ChecksumMode = Literal["when_required", "when_supported"]
AddressingStyle = Literal["auto", "path", "virtual"]
ConditionalDelete = Literal["auto", "native", "emulate"]


# Settings given only in the config file (tables have no flag form).
FILE_ONLY = frozenset({"lifecycle_rules"})


class Settings(SettingsChecks, BaseSettings):
    """Everything the service can be told. Field names double as flag names
    (``--part-size``), environment variables (``BLOBGATE_PART_SIZE``) and
    config-file keys (``part_size``)."""

    model_config = SettingsConfigDict(env_prefix="BLOBGATE_", extra="forbid", frozen=True)

    listen: str = Field("0.0.0.0:50051", description="gRPC listen address, host:port")
    s3_endpoint: str | None = Field(
        None, description="S3 endpoint URL (MinIO, moto, ...); unset means AWS"
    )
    s3_public_endpoint: str | None = Field(
        None, description="endpoint that presigned URLs are signed for; unset: s3_endpoint"
    )
    s3_region: str | None = Field(None, description="S3 region; unset: AWS_REGION or us-east-1")
    s3_addressing_style: AddressingStyle = Field(
        "auto", description="bucket addressing: auto, path (MinIO) or virtual"
    )
    s3_connect_timeout: float = Field(5.0, gt=0, description="seconds to connect to S3")
    s3_read_timeout: float = Field(60.0, gt=0, description="seconds to wait for S3 to answer")
    s3_max_attempts: int = Field(
        4, ge=1, le=10, description="attempts per S3 request (botocore standard retries)"
    )
    s3_max_connections: int = Field(
        64, ge=1, description="S3 connections for the bytes of uploads and downloads"
    )
    s3_connections_per_principal: int | None = Field(
        None,
        ge=1,
        description="of s3_max_connections, the S3 data requests (part uploads, GETs) one caller "
        "may have at once; more wait; unset: a quarter of s3_max_connections, at least 1",
    )
    s3_control_connections: int = Field(
        16,
        ge=1,
        description="S3 connections for everything else (Stat, List, Delete, session records, "
        "the health probe): transfers never use them",
    )
    checksum_mode: ChecksumMode = Field(
        "when_required",
        description="botocore request/response checksums; when_required suits MinIO, Ceph, B2",
    )
    s3_full_object_checksums: bool = Field(
        True,
        description="multipart uploads carry S3's full-object CRC32C and the sha256 lives in a "
        "record; false: plain multipart and a self-copy (stores without ChecksumType FULL_OBJECT)",
    )
    s3_conditional_delete: ConditionalDelete = Field(
        "auto",
        description="deletes on an ETag: native (DeleteObject If-Match), emulate (a HEAD, then "
        "a plain delete) or auto (native, emulate in a bucket whose store answers NotImplemented)",
    )
    default_bucket: str = Field("blobgate", min_length=3, description="bucket for empty requests")
    allowed_buckets: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated buckets clients may use; the default bucket always is",
    )
    create_buckets: bool = Field(False, description="create missing allowed buckets at start-up")
    direct_transfers: bool = Field(
        False,
        description="a Download that asks for it (direct) is answered with a presigned GET, "
        "and the caller reads the bytes straight from S3 (s3_public_endpoint)",
    )
    direct_url_lifetime: int = Field(
        60,
        ge=1,
        le=3600,
        description="seconds a direct download's URL stays valid (1 to 3600); S3 checks it "
        "when the GET starts, so a short lifetime suits any object size",
    )
    bucket_versioning: bool = Field(
        False,
        description="with create_buckets: turn S3 versioning on in every allowed bucket "
        "at start-up (false leaves each bucket's versioning as it is)",
    )
    expiry_days_allowed: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [1, 7, 30, 90, 365],
        description="comma-separated lifetimes in days an object may be given (expire_days); "
        "empty: none",
    )
    manage_lifecycle: bool = Field(
        False,
        description="at start-up, write the gateway's lifecycle rules (the expiry rules and "
        "lifecycle_rules) into each served bucket, keeping every rule it does not own",
    )
    lifecycle_rules: list[PrefixRule] = Field(
        default_factory=list,
        description="config file only: [[lifecycle_rules]] tables, each a prefix (and "
        "optional bucket) with expire_days, noncurrent_expire_days, transition_days and "
        "transition_class, or abort_multipart_days",
    )
    part_size: ByteSize = Field(ByteSize(8 * MiB), description="multipart part size (>= 5MiB)")
    parts_in_flight: int = Field(4, ge=1, le=64, description="parts uploaded at once per upload")
    copy_threshold: ByteSize = Field(
        ByteSize(5 * 1024 * MiB),
        description="Copy of a larger object goes part by part (UploadPartCopy), 5MiB to 5GiB",
    )
    max_object_size: ByteSize | None = Field(
        None, description="largest object accepted; unset: 10000 parts of part_size"
    )
    max_message_size: ByteSize = Field(
        ByteSize(8 * MiB), description="largest gRPC message accepted (>= 4MiB + framing)"
    )
    memory_budget: ByteSize = Field(
        ByteSize(1024 * MiB),
        description="bytes buffered across all uploads; past it uploads wait (>= part_size)",
    )
    memory_budget_per_principal: ByteSize | None = Field(
        None,
        description="bytes of memory_budget one caller may hold (part_size to memory_budget); "
        "unset: a quarter of memory_budget, at least part_size",
    )
    max_streams: int = Field(
        256, ge=1, description="concurrent Upload/Download streams; more get RESOURCE_EXHAUSTED"
    )
    max_streams_per_principal: int | None = Field(
        None,
        ge=1,
        description="concurrent Upload/Download streams of one identified caller (mTLS or JWT); "
        "unset: a quarter of max_streams; callers without an identity are not counted",
    )
    max_sessions_per_principal: int = Field(
        100,
        ge=1,
        le=1000,
        description="open resumable upload sessions of one identified caller, across the fleet; "
        "callers without an identity are not counted",
    )
    max_calls: int = Field(
        512,
        ge=1,
        description="calls open at once, of every kind, counted from their first bytes; "
        "more get RESOURCE_EXHAUSTED",
    )
    max_anonymous_calls: int = Field(
        16,
        ge=2,
        description="calls open at once that carry no identity (health, reflection; with "
        "jwt_jwks_file, StorageService calls without a valid token), apart from max_calls",
    )
    max_health_watches: int = Field(
        4,
        ge=1,
        description="health Watch streams open at once on each listener (more get "
        "UNIMPLEMENTED); fewer than max_anonymous_calls, so health Check always has room",
    )
    health_watch_lifetime: float = Field(
        600.0,
        gt=0,
        description="seconds a health Watch stays open; then it ends with OK and standard "
        "clients open a new one",
    )
    anonymous_request_timeout: float = Field(
        5.0,
        gt=0,
        description="seconds a call without an identity (health) has to deliver its request "
        "message; later, it ends with DEADLINE_EXCEEDED",
    )
    handshake_timeout: float = Field(
        5.0,
        gt=0,
        le=120,
        description="seconds a new connection has to finish its TLS handshake and send its "
        "HTTP/2 settings; slower ones are closed",
    )
    max_streams_per_connection: int = Field(
        128, ge=1, description="calls one client connection may have open at once"
    )
    max_connections: int = Field(512, ge=1, description="client connections open at once")
    max_unary_calls: int = Field(
        256, ge=1, description="concurrent unary calls other than List; more wait in line"
    )
    max_list_calls: int = Field(
        16, ge=1, description="concurrent List calls; more wait in line, apart from other calls"
    )
    max_unary_calls_per_principal: int | None = Field(
        None,
        ge=1,
        description="of max_unary_calls, how many one identified caller may hold; more of its "
        "calls wait in a line of their own; unset: a quarter of max_unary_calls",
    )
    max_list_calls_per_principal: int | None = Field(
        None,
        ge=1,
        description="of max_list_calls, how many one identified caller may hold; more of its "
        "Lists wait in a line of their own; unset: a quarter of max_list_calls",
    )
    unary_queue_timeout: float = Field(
        5.0,
        gt=0,
        description="seconds a unary call may wait in line before RESOURCE_EXHAUSTED",
    )
    stream_idle_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds an Upload may send nothing, or a Download's client read nothing, "
        "before the stream is ended with DEADLINE_EXCEEDED",
    )
    session_expiry: float = Field(
        7 * 86400.0,
        gt=0,
        description="seconds a resumable upload session may sit idle before it is aborted",
    )
    janitor_interval: float = Field(
        3600.0,
        ge=0,
        description="seconds between sweeps for expired sessions and orphaned multipart "
        "uploads; 0: never",
    )
    health_interval: float = Field(5.0, gt=0, description="seconds between S3 health probes")
    shutdown_grace: float = Field(
        30.0, ge=0, description="seconds in-flight calls get to finish on SIGTERM"
    )
    drain_delay: float = Field(
        5.0,
        ge=0,
        description="seconds between NOT_SERVING/deregistering and refusing calls on SIGTERM",
    )
    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    metrics_listen: str = Field(
        "",
        description="Prometheus metrics endpoint, host:port (e.g. 0.0.0.0:9464); empty: off",
    )
    health_listen: str = Field(
        "",
        description="a second, plaintext listener serving only grpc.health.v1, host:port "
        "(e.g. 127.0.0.1:50052), for probes without a client certificate; empty: off",
    )
    log_format: LogFormat = Field(
        "text", description="text, or json: one JSON object a line (docs/operations.md, Logs)"
    )
    event_loop: EventLoop = Field(
        "auto",
        description="auto (uvloop when it is installed, else asyncio's), asyncio, or uvloop",
    )

    tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain to serve TLS with (with tls_key_file)"
    )
    tls_key_file: Path | None = Field(
        None, description="PEM private key of tls_cert_file (unencrypted)"
    )
    tls_client_ca_file: Path | None = Field(
        None,
        description="PEM CA certificates; set: clients must present a certificate they signed "
        "(mTLS)",
    )
    insecure: bool = Field(
        False, description="allow plaintext gRPC on an address beyond loopback (no TLS)"
    )
    jwt_jwks_file: Path | None = Field(
        None,
        description="JWKS file (RS256, ES256, HS256 keys); set: every call needs a bearer JWT "
        "signed by one (needs TLS, jwt_issuer, jwt_audience)",
    )
    jwt_issuer: str | None = Field(None, description="the iss a bearer JWT must carry")
    jwt_audience: str | None = Field(None, description="the aud a bearer JWT must carry")
    reflection: bool = Field(False, description="serve gRPC server reflection (--dev: on)")
    auth_policy_file: Path | None = Field(
        None,
        description="TOML file of grants: who may read, list, write, delete, presign where; "
        "set, everything else is refused (needs tls_client_ca_file or jwt_jwks_file)",
    )

    consul: bool = Field(False, description="register this instance with the local Consul agent")
    consul_http_addr: str = Field(
        "127.0.0.1:8500",
        validation_alias=AliasChoices("consul_http_addr", "CONSUL_HTTP_ADDR"),
        description="Consul agent address, host:port or URL (CONSUL_HTTP_ADDR)",
    )
    consul_http_token: str | None = Field(
        None,
        validation_alias=AliasChoices("consul_http_token", "CONSUL_HTTP_TOKEN"),
        description="Consul ACL token (CONSUL_HTTP_TOKEN)",
    )
    consul_http_ssl: bool = Field(
        False,
        validation_alias=AliasChoices("consul_http_ssl", "CONSUL_HTTP_SSL"),
        description="talk to Consul over HTTPS (CONSUL_HTTP_SSL)",
    )
    service_name: str = Field("blobgate", min_length=1, description="Consul service name")
    service_tags: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated Consul service tags"
    )
    advertise_address: str | None = Field(
        None,
        description="address registered in Consul; unset: the listen host, else this host's "
        "address towards the agent (remote) or the default route, never loopback",
    )
    advertise_port: int | None = Field(
        None, ge=1, le=65535, description="port registered in Consul; unset: the listen port"
    )
    check_interval: float = Field(10.0, gt=0, description="seconds between Consul's gRPC checks")
    check_timeout: float = Field(5.0, gt=0, description="seconds Consul waits for a gRPC check")
    check_tls_server_name: str | None = Field(
        None,
        description="with TLS: the name Consul's gRPC check expects in the server's "
        "certificate; unset: the advertised address",
    )
    deregister_critical_after: float = Field(
        60.0, gt=0, description="seconds critical before Consul drops the instance (Consul: >= 60)"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags arrive as init arguments; the config file arrives as the
        # reserved init key "_file" and ranks below the environment.
        file_values = init_settings.init_kwargs.pop("_file", {})  # type: ignore[attr-defined]
        return init_settings, env_settings, InitSettingsSource(settings_cls, file_values)
