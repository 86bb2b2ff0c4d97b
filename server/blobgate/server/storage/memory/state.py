"""What the in-memory backend holds, per bucket: committed objects, their
keys in order, and the records of open upload sessions. The store
(``memory.store``) and the sessions (``memory.sessions``) share it."""

from __future__ import annotations

from dataclasses import dataclass, field

from blobgate.server.storage.protocols import Session, SessionSpec, StoredObject


@dataclass
class StoredBytes:
    """One committed object: its bytes (never changed once committed) and
    its description."""

    data: bytearray
    info: StoredObject
    tags: dict[str, str] = field(default_factory=dict)  # the expiry tag included


@dataclass
class SessionRecord:
    """One live session: what it will commit and the whole parts it holds."""

    session_id: str
    spec: SessionSpec
    part_size: int
    data: bytearray  # the persisted whole parts, in order
    sha256_state: str  # Hasher state after ``data``
    crc32c: int
    revision: int
    touched: float  # time.monotonic() of the last change: idle time counts from it

    def session(self) -> Session:
        return Session(
            bucket=self.spec.ref.bucket,
            session_id=self.session_id,
            spec=self.spec,
            persisted_size=len(self.data),
            part_size=self.part_size,
            revision=str(self.revision),
        )


@dataclass
class MemoryBucket:
    """A bucket's objects, its keys in order, and its upload sessions."""

    objects: dict[str, StoredBytes] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)  # sorted: listing walks it
    sessions: dict[str, SessionRecord] = field(default_factory=dict)
