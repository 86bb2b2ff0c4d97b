"""List page tokens: S3's continuation token bound to the listing it came
from and signed, so a token reused with another bucket, prefix or delimiter,
or changed in any way, is refused with INVALID_ARGUMENT before anything
reaches S3.

A token is base64url of an HMAC-SHA256 over a JSON payload (version,
bucket, prefix, delimiter, whether it lists versions, S3's continuation
token or a versions listing's key and version-id markers), then that payload. The
key is shared by every instance through the store (``page_token_key``), so
a token issued by one instance continues on any other. Without the
signature a forged continuation token went to S3 as it was: S3 refuses it
(400 InvalidArgument), but other stores do not agree (moto answers 500,
which botocore retries; Ceph and others take any string as a start key),
and a caller must not be able to make S3 spend retries or guess at keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from blobgate.server.core.errors import InvalidArgument

_VERSION = 2
_MAC_BYTES = hashlib.sha256().digest_size
# Tokens this service issues hold an S3 continuation token (S3's are a few
# hundred characters) and the listing's prefix and delimiter (each at most a
# key's 1024 bytes, up to 6 characters each once JSON-escaped), and a 32-byte
# signature, in base64: well under 32 KiB. Anything longer was not issued here.
MAX_TOKEN_LENGTH = 32 * 1024

_NOT_ISSUED = "page_token is not a token this service issued: pass next_page_token unchanged"


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def encode(
    key: bytes, bucket: str, prefix: str, delimiter: str, s3_token: str, *, versions: bool = False
) -> str:
    """The page token continuing a listing at ``s3_token`` ("" on the last
    page); ``versions``: a versions listing (its token holds S3's key and
    version-id markers), which a token binds as it binds the prefix."""
    if not s3_token:
        return ""
    body: dict[str, object] = {"v": _VERSION, "b": bucket, "p": prefix, "d": delimiter}
    if versions:
        body["versions"] = True
    body["t"] = s3_token
    payload = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(_mac(key, payload) + payload).decode().rstrip("=")


def decode(
    key: bytes, token: str, bucket: str, prefix: str, delimiter: str, *, versions: bool = False
) -> str:
    """The S3 continuation token inside ``token`` ("" for the first page);
    InvalidArgument unless this service issued it, signed with ``key``, for
    this very listing."""
    if not token:
        return ""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidArgument(
            "page_token is longer than any this service issues: pass next_page_token unchanged"
        )
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidArgument(_NOT_ISSUED) from None
    mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
    if not payload or not hmac.compare_digest(mac, _mac(key, payload)):
        raise InvalidArgument(_NOT_ISSUED)
    # Signed by this service: what follows holds unless the code changed.
    try:
        body = json.loads(payload)
        if not isinstance(body, dict) or body.get("v") != _VERSION:
            raise ValueError("unknown token version")
        s3_token = body["t"]
        bound = (body["b"], body["p"], body["d"], body.get("versions", False))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidArgument(_NOT_ISSUED) from None
    if not isinstance(s3_token, str) or not s3_token:
        raise InvalidArgument("page_token is malformed: pass next_page_token unchanged")
    if bound != (bucket, prefix, delimiter, versions):
        raise InvalidArgument(
            "page_token belongs to another listing: keep bucket, prefix, delimiter and "
            "versions the same across pages"
        )
    return s3_token
