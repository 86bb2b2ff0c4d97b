"""Object tags as S3 allows them, and the gateway's one tag of its own: the
expiry tag, which gives an object its lifetime (a bucket lifecycle rule per
allowed number of days, see ``core.lifecycle``). Each check raises
InvalidArgument with a message that says what to fix."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode

from blobgate.server.core.errors import InvalidArgument

MAX_TAGS = 10  # S3's limit per object
MAX_TAG_KEY = 128  # Unicode characters
MAX_TAG_VALUE = 256
# The tag the gateway sets for an object's lifetime; callers may not set it.
EXPIRY_TAG = "blobgate-expire-days"
_RESERVED_TAG_PREFIX = "aws:"
# Besides letters, separators (spaces) and numbers: S3's [\p{L}\p{Z}\p{N}_.:/=+\-@].
_TAG_PUNCTUATION = frozenset("_.:/=+-@")


def _allowed(text: str) -> bool:
    return all(ch in _TAG_PUNCTUATION or unicodedata.category(ch)[0] in "LZN" for ch in text)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def validate_tags(tags: Mapping[str, str], *, expiring: bool = False) -> dict[str, str]:
    """The caller's tags, checked as S3 would: at most ``MAX_TAGS`` (one
    fewer when ``expiring``, whose expiry tag counts too), keys of 1..128
    and values of 0..256 allowed characters, no ``aws:`` key, not the
    expiry tag. A map's keys are unique already."""
    room = MAX_TAGS - 1 if expiring else MAX_TAGS
    if len(tags) > room:
        why = f" (the expiry tag {EXPIRY_TAG!r} takes one of S3's {MAX_TAGS})" if expiring else ""
        raise InvalidArgument(f"{len(tags)} tags: an object takes at most {room}{why}")
    for key, value in tags.items():
        if not 1 <= len(key) <= MAX_TAG_KEY:
            raise InvalidArgument(
                f"tag key {_shown(key)} must be 1 to {MAX_TAG_KEY} characters long"
            )
        if len(value) > MAX_TAG_VALUE:
            raise InvalidArgument(
                f"the value of tag {_shown(key)} is {len(value)} characters; "
                f"the limit is {MAX_TAG_VALUE}"
            )
        for what, text in (("key", key), ("value", value)):
            if not _allowed(text):
                raise InvalidArgument(
                    f"tag {what} {_shown(text)} has a character S3 does not allow in tags: "
                    "use letters, digits, spaces and _ . : / = + - @"
                )
        if key.lower().startswith(_RESERVED_TAG_PREFIX):
            raise InvalidArgument(f"tag key {_shown(key)}: keys starting 'aws:' belong to AWS")
        if key == EXPIRY_TAG:
            raise InvalidArgument(
                f"tag key {EXPIRY_TAG!r} is the gateway's: set expire_days instead"
            )
    return dict(tags)


def validate_expire_days(days: int, allowed: Iterable[int]) -> int:
    """``days`` (0: no lifetime) if the server allows it, else InvalidArgument
    naming the allowed values."""
    choices = sorted(set(allowed))
    if days == 0 or days in choices:
        return days
    if not choices:
        raise InvalidArgument(
            f"expire_days {days}: this server gives objects no lifetime; leave it 0"
        )
    shown = ", ".join(str(day) for day in choices)
    raise InvalidArgument(f"expire_days {days} is not allowed: use 0 (none) or one of {shown}")


def with_expiry(tags: Mapping[str, str], days: int) -> dict[str, str]:
    """``tags`` and, for a lifetime of ``days`` (> 0), the expiry tag."""
    stored = {key: value for key, value in tags.items() if key != EXPIRY_TAG}
    if days > 0:
        stored[EXPIRY_TAG] = str(days)
    return stored


def stored_tags(tags: Mapping[str, str], days: int) -> dict[str, str]:
    """The tags a write stores: ``tags`` and the expiry tag for ``days``;
    InvalidArgument when they are more than S3 takes."""
    stored = with_expiry(tags, days)
    if len(stored) > MAX_TAGS:
        raise InvalidArgument(
            f"{len(stored)} tags with the expiry tag {EXPIRY_TAG!r}: an object takes at "
            f"most {MAX_TAGS}; drop one"
        )
    return stored


def expiry_of(tags: Mapping[str, str]) -> int:
    """The lifetime in days an object's tags give it; 0 for none."""
    value = tags.get(EXPIRY_TAG, "")
    return int(value) if value.isdigit() else 0


def tagging_header(tags: Mapping[str, str]) -> str:
    """Tags as S3's x-amz-tagging header carries them (a URL query string)."""
    return urlencode(sorted(tags.items()))


def parse_tagging_header(header: str) -> dict[str, str]:
    return dict(parse_qsl(header, keep_blank_values=True))
