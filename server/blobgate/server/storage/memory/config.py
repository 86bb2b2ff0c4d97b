"""What the in-memory backend is told: its own small config, built from the
settings by the storage factory (``storage.factory.memory_config``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryConfig:
    """How sessions persist and expire, and the bucket the health probe asks
    for; each field means what the setting named alike does."""

    default_bucket: str
    part_size: int
    session_expiry: float  # seconds a session may sit idle
