"""The gateway's own small records (quota markers, the page-token key, sha256
records) as the backends keep them: the ``Records`` protocol, its listing
entries, and where a record may live (only under ``RESERVED_PREFIX``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from blobgate.server.core.reserved_keys import RESERVED_PREFIX
from blobgate.server.storage.object_values import ObjectRef


def record_ref(bucket: str, key: str) -> ObjectRef:
    """Where one of the gateway's records lives; ValueError for a key outside
    the reserved prefix (a record must never be a caller's object)."""
    if not key.startswith(RESERVED_PREFIX):
        raise ValueError(f"the gateway's records live under {RESERVED_PREFIX!r}, not at {key!r}")
    return ObjectRef(bucket, key)


@dataclass(frozen=True)
class RecordEntry:
    """One of the gateway's records as a listing shows it."""

    key: str
    written: datetime
    etag: str


class Records(Protocol):
    """The gateway's own small records under ``RESERVED_PREFIX`` (quota
    markers, the page-token key), kept in the backend's store beneath every
    decorator: keeping them is not a caller's act, and callers can neither
    reach nor list them. Keys are whole keys, each under the prefix."""

    async def put(
        self, bucket: str, key: str, data: bytes, *, if_none_match: bool = False, if_match: str = ""
    ) -> str:
        """Write one record and return its ETag. With ``if_none_match``,
        FailedPrecondition when it exists already (so instances racing to
        create it agree, and exactly one of them wins); with ``if_match``,
        FailedPrecondition unless it exists with that ETag."""
        ...

    async def get(self, bucket: str, key: str) -> bytes:
        """One record's bytes; NotFound when there is none."""
        ...

    async def delete(self, bucket: str, key: str, *, if_match: str = "") -> None:
        """Remove one record; a missing one is not an error, unless
        ``if_match`` is given: then FailedPrecondition unless it exists with
        that ETag."""
        ...

    async def list(self, bucket: str, prefix: str, limit: int) -> list[RecordEntry]:
        """Up to ``limit`` records under ``prefix`` in key order, each with
        when it was written and its ETag."""
        ...
