"""Direct reads: the caller GETs the selected bytes straight from S3 with a
presigned URL, and the gateway only describes the object and signs.

The description comes from one HeadObject (plus the sha256 record where the
object has one), so the checksums are those Stat reports. The URL is signed
for the public endpoint (``S3Connection.signer``) with two signed headers
the caller must send as given: ``If-Match`` with the ETag just described,
so S3 refuses (412) an object replaced between the answer and the GET,
and, for a part of the object, ``Range`` with absolute positions worked
out from the size described (a suffix range becomes the exact bytes). A
request naming a version signs a GET of that version (``versionId``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from blobgate.server.core.errors import OutOfRange, if_match_failed
from blobgate.server.core.storage_classes import ARCHIVED
from blobgate.server.storage.protocols import ByteRange, DirectRead, ObjectRef, PresignedRequest
from blobgate.server.storage.s3.errors import s3_errors
from blobgate.server.storage.s3.metadata import bare_etag, quoted_etag
from blobgate.server.storage.s3.sha256_records import describe
from blobgate.server.storage.s3.versions import version_args

if TYPE_CHECKING:
    from blobgate.server.storage.s3.connection import S3Connection


def selected(byte_range: ByteRange, size: int, key: str) -> tuple[int, int]:
    """The first byte and the number of bytes ``byte_range`` selects of an
    object of ``size`` bytes, as a Download reads them; OutOfRange past the end."""
    offset, limit = byte_range.offset, byte_range.limit
    start = max(0, size + offset) if offset < 0 else offset
    if start > size:
        raise OutOfRange(f"offset {offset} is past the end of {key!r} ({size} bytes)")
    length = size - start
    if limit > 0:
        length = min(length, limit)
    return start, length


async def direct_read(
    connection: S3Connection,
    ref: ObjectRef,
    byte_range: ByteRange,
    if_match: str,
    expires_in: int,
) -> DirectRead | None:
    """Describe ``ref`` and presign a GET of the bytes ``byte_range`` selects
    of that very object; None for a read of no bytes (S3 refuses an empty
    range) and for an object in an archive class (restored or not: its
    GetObject decides): the gateway answers those itself."""
    info = await describe(connection.client, ref)
    if if_match and info.etag != bare_etag(if_match):
        raise if_match_failed()
    start, length = selected(byte_range, info.size, ref.key)
    if length == 0 or info.storage_class in ARCHIVED:
        return None
    params: dict[str, str] = {
        "Bucket": ref.bucket,
        "Key": ref.key,
        "IfMatch": quoted_etag(info.etag),
        **version_args(ref),  # a named version: that one, as described
    }
    headers = {"If-Match": params["IfMatch"]}
    if length != info.size:
        params["Range"] = headers["Range"] = f"bytes={start}-{start + length - 1}"
    issued = datetime.now(UTC)
    with s3_errors(ref):
        url = await connection.signer.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_in
        )
    return DirectRead(
        info=info,
        request=PresignedRequest(url=url, headers=headers),
        offset=start,
        length=length,
        expires_at=issued + timedelta(seconds=expires_in),
    )
