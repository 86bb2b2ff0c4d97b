"""What the S3 backend is told: its own small config, built from the
settings by the storage factory (``storage.factory.s3_config``), so nothing
here reads the gateway's whole settings."""

from __future__ import annotations

from dataclasses import dataclass

from blobgate.server.core.settings import AddressingStyle, ChecksumMode, ConditionalDelete


@dataclass(frozen=True)
class S3Config:
    """The S3 connection and how uploads are cut; the meaning of each field is
    that of the setting named alike (docs/configuration.md)."""

    endpoint: str | None  # s3_endpoint; None: AWS
    public_endpoint: str | None  # s3_public_endpoint; None: sign for ``endpoint``
    region: str | None  # s3_region
    addressing_style: AddressingStyle
    connect_timeout: float
    read_timeout: float
    max_attempts: int
    max_connections: int  # the transfers pool
    connections_per_principal: int  # of the transfers pool, one principal's data requests
    control_connections: int  # the pool for everything else
    checksum_mode: ChecksumMode
    full_object_checksums: bool
    conditional_delete: ConditionalDelete
    default_bucket: str  # the bucket the health probe asks for
    part_size: int
    parts_in_flight: int
    copy_threshold: int
    session_expiry: float  # seconds a session may sit idle
    bucket_versioning: bool = False  # with create_buckets: versioning turned on
    count_anonymous: bool = True  # callers without an identity share one principal's places
