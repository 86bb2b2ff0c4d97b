"""The bucket lifecycle rules the gateway owns, as settings: one rule per
allowed lifetime (``expiry_days_allowed``, filtered by the expiry tag, see
``core.tags``) and the operator's rules per key prefix (``lifecycle_rules``,
config file only). Every owned rule's ID starts with ``RULE_ID_PREFIX``; rules
with other IDs are never touched (``storage.s3.lifecycle``)."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from blobgate.server.core.reserved_keys import RESERVED_PREFIX
from blobgate.server.core.storage_classes import validate_storage_class

RULE_ID_PREFIX = "blobgate:"
MAX_DAYS = 36_500  # a hundred years: beyond, a typo


def expiry_rule_id(days: int) -> str:
    """The ID of the rule that expires objects tagged with ``days``."""
    return f"{RULE_ID_PREFIX}expire-{days}d"


class PrefixRule(BaseModel):
    """One operator rule for the keys under ``prefix`` (of every served
    bucket, or of ``bucket`` only); at least one action."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = ""
    bucket: str | None = None
    expire_days: int | None = Field(None, ge=1, le=MAX_DAYS)
    noncurrent_expire_days: int | None = Field(None, ge=1, le=MAX_DAYS)
    transition_days: int | None = Field(None, ge=0, le=MAX_DAYS)
    transition_class: str | None = None
    abort_multipart_days: int | None = Field(None, ge=1, le=MAX_DAYS)

    @field_validator("transition_class")
    @classmethod
    def _known_class(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return validate_storage_class(value, "transition_class") or None
        except Exception as exc:  # InvalidArgument's message, as a setting's error
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _consistent(self) -> PrefixRule:
        actions = (
            self.expire_days,
            self.noncurrent_expire_days,
            self.transition_days,
            self.abort_multipart_days,
        )
        if all(action is None for action in actions):
            raise ValueError(
                f"lifecycle rule for prefix {self.prefix!r} has no action: set expire_days, "
                "noncurrent_expire_days, transition_days with transition_class, or "
                "abort_multipart_days"
            )
        if (self.transition_days is None) != (self.transition_class is None):
            raise ValueError(
                f"lifecycle rule for prefix {self.prefix!r}: transition_days and "
                "transition_class go together"
            )
        if self.prefix.startswith(RESERVED_PREFIX):
            raise ValueError(
                f"lifecycle rule prefix {self.prefix!r} is under the gateway's records "
                f"({RESERVED_PREFIX!r})"
            )
        return self

    @property
    def rule_id(self) -> str:
        """A stable ID: the same rule gets the same ID on every start."""
        body = json.dumps(self.model_dump(), sort_keys=True).encode()
        return f"{RULE_ID_PREFIX}prefix-{hashlib.sha256(body).hexdigest()[:16]}"

    def applies_to(self, bucket: str) -> bool:
        return self.bucket is None or self.bucket == bucket


def check_expiry_days(days: list[int]) -> list[int]:
    """The allowed lifetimes, each 1..MAX_DAYS, sorted and unique."""
    for day in days:
        if not 1 <= day <= MAX_DAYS:
            raise ValueError(f"expiry_days_allowed: {day} is not between 1 and {MAX_DAYS}")
    return sorted(set(days))
