"""List page tokens: S3's continuation token bound to the listing it came
from, so a token reused with another bucket, prefix or delimiter is refused
instead of silently listing the wrong thing."""

from __future__ import annotations

import base64
import binascii
import json

from blobgate.server.errors import InvalidArgument

_VERSION = 1
# Tokens this service issues hold an S3 continuation token (S3's are a few
# hundred characters) and the listing's prefix and delimiter (each at most a
# key's 1024 bytes, up to 6 characters each once JSON-escaped), in base64:
# well under 32 KiB. Anything longer was not issued here.
MAX_TOKEN_LENGTH = 32 * 1024


def encode(bucket: str, prefix: str, delimiter: str, s3_token: str) -> str:
    if not s3_token:
        return ""
    payload = {"v": _VERSION, "b": bucket, "p": prefix, "d": delimiter, "t": s3_token}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, bucket: str, prefix: str, delimiter: str) -> str:
    """The S3 continuation token inside ``token`` ("" for the first page)."""
    if not token:
        return ""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidArgument(
            "page_token is longer than any this service issues: pass next_page_token unchanged"
        )
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
        if not isinstance(payload, dict) or payload.get("v") != _VERSION:
            raise ValueError("unknown token version")
        s3_token = payload["t"]
        bound = (payload["b"], payload["p"], payload["d"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidArgument(
            "page_token is not a token this service issued: pass next_page_token unchanged"
        ) from None
    if not isinstance(s3_token, str) or not s3_token:
        raise InvalidArgument("page_token is malformed: pass next_page_token unchanged")
    if bound != (bucket, prefix, delimiter):
        raise InvalidArgument(
            "page_token belongs to another listing: keep bucket, prefix and delimiter "
            "the same across pages"
        )
    return s3_token
