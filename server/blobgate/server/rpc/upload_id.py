"""The upload_id a caller holds for a resumable upload session: the bucket
and the session's secret id, base64url-encoded. It is the only handle on the
session and is never logged or listed: whoever holds it can write or cancel.
"""

from __future__ import annotations

import base64
import binascii
import re

from blobgate.server.core.errors import InvalidArgument

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
_MALFORMED = "upload_id is malformed: pass the upload_id that StartResumableUpload returned"


def encode(bucket: str, session_id: str) -> str:
    return base64.urlsafe_b64encode(f"{bucket}/{session_id}".encode()).decode().rstrip("=")


def decode(upload_id: str) -> tuple[str, str]:
    """The bucket and session id in ``upload_id``; InvalidArgument if it is
    not one this service issued."""
    if not upload_id:
        raise InvalidArgument("upload_id is empty: start a session with StartResumableUpload")
    try:
        raw = base64.urlsafe_b64decode(upload_id + "=" * (-len(upload_id) % 4))
        bucket, _, session_id = raw.decode("ascii").rpartition("/")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument(_MALFORMED) from None
    if not bucket or not _SESSION_ID.fullmatch(session_id):
        raise InvalidArgument(_MALFORMED)
    return bucket, session_id
