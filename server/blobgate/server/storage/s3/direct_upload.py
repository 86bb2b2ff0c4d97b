"""Direct uploads: a session whose parts the caller PUTs straight to S3.

The session is a resumable one (``sessions``: a multipart upload created
with S3's full-object CRC32C, and its record under ``.blobgate/uploads/``),
marked direct in its record. The gateway never sees the bytes:

- ``check_part`` checks a part against the session's layout (part_size
  each but the last; the declared size, when there is one) and
  ``presign_parts`` signs an UploadPart of each part for the public
  endpoint whose signed headers carry the part's CRC32C
  (``x-amz-checksum-crc32c``) and length, so S3 refuses a part whose bytes
  differ from what was declared (``part_urls`` signs them in bulk).
- ``persisted`` reads the session's progress from S3 itself (ListParts): the
  contiguous prefix of whole parts, so any instance, or the caller after a
  crash, knows where to go on.
- ``check_parts`` takes the parts S3 lists at the commit, checks that they
  are contiguous from 1, sized right and add up to the declared size, and
  combines their CRC32Cs (as S3 lists them) into the whole object's, which
  must be the declared one. The commit then sends that CRC32C with
  ChecksumType FULL_OBJECT, so S3 checks the assembled object as well; a
  store that lists no part checksums (moto) is left to that check alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from blobgate.server.core.errors import FailedPrecondition, InvalidArgument
from blobgate.server.storage.checksums import crc32c_combine, crc32c_from_s3
from blobgate.server.storage.protocols import (
    ContentChecksums,
    DirectPart,
    ObjectRef,
    PartSpec,
    PresignedRequest,
    SessionSpec,
    StoredObject,
)
from blobgate.server.storage.s3.commit import complete_multipart
from blobgate.server.storage.s3.errors import s3_errors
from blobgate.server.storage.s3.part_urls import sign_parts, signed_headers

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

    from blobgate.server.storage.s3.checkpoint import Checkpoint
    from blobgate.server.storage.s3.connection import S3Connection

MAX_PARTS = 10_000  # S3's limit on a multipart upload


class PartsMissing(FailedPrecondition):
    """A direct commit before S3 holds every part: the session stays open."""


def part_count(size: int, part_size: int) -> int:
    """How many parts an object of ``size`` bytes takes (an empty one: one)."""
    return max(1, -(-size // part_size))


def check_part(checkpoint: Checkpoint, part: PartSpec) -> None:
    """InvalidArgument unless ``part`` fits the session's layout: part
    numbers from 1, part_size bytes each but the last, whose size follows
    from the declared size when there is one; only an empty object's sole
    part is empty."""
    part_size, size = checkpoint.part_size, checkpoint.size
    if not 1 <= part.number <= MAX_PARTS:
        raise InvalidArgument(f"part_number must be 1..{MAX_PARTS}, got {part.number}")
    if not 0 <= part.size <= part_size:
        raise InvalidArgument(f"a part holds 0..{part_size} bytes (part_size), got {part.size}")
    if not 0 <= part.crc32c <= 0xFFFFFFFF:
        raise InvalidArgument("crc32c must be a 32-bit value")
    if size is not None:
        count = part_count(size, part_size)
        if part.number > count:
            raise InvalidArgument(
                f"the declared size of {size} bytes takes {count} parts of {part_size} bytes: "
                f"there is no part {part.number}"
            )
        expected = min(part_size, size - (part.number - 1) * part_size)
        if part.size != expected:
            raise InvalidArgument(
                f"part {part.number} of a {size}-byte object holds {expected} bytes, "
                f"not {part.size}"
            )
    elif part.size == 0 and part.number != 1:
        raise InvalidArgument("only an empty object's sole part (part 1) may be empty")


async def presign_parts(
    connection: S3Connection,
    ref: ObjectRef,
    upload_id: str,
    parts: list[PartSpec],
    expires_in: int,
) -> list[DirectPart]:
    """A presigned UploadPart of each of ``parts``, for the public endpoint,
    pinning its length and CRC32C in signed headers (``part_urls``)."""
    issued = datetime.now(UTC)
    with s3_errors(ref):
        urls = await sign_parts(connection.signer, ref, upload_id, parts, expires_in)
    expires_at = issued + timedelta(seconds=expires_in)
    return [
        DirectPart(
            request=PresignedRequest(
                url=url,
                # Content-Type is not signed; a client's default (a form
                # type) makes some stores misread the body.
                headers=signed_headers(part) | {"Content-Type": "application/octet-stream"},
            ),
            expires_at=expires_at,
        )
        for part, url in zip(parts, urls, strict=True)
    ]


async def list_all_parts(client: S3Client, ref: ObjectRef, upload_id: str) -> list[dict[str, Any]]:
    """Every part S3 holds of the upload, in part-number order."""
    parts: list[dict[str, Any]] = []
    marker = 0
    while True:
        with s3_errors(ref):
            response = await client.list_parts(
                Bucket=ref.bucket, Key=ref.key, UploadId=upload_id, PartNumberMarker=marker
            )
        listed = response.get("Parts", [])
        parts.extend(dict(part) for part in listed)
        if not response.get("IsTruncated") or not listed:
            break
        marker = int(response.get("NextPartNumberMarker", listed[-1]["PartNumber"]))
    parts.sort(key=lambda part: int(part["PartNumber"]))
    return parts


def persisted(parts: list[dict[str, Any]], part_size: int) -> int:
    """The bytes of the contiguous run of whole parts from part 1 (a
    multiple of ``part_size``): where the caller goes on from. A short part
    counts only once it is known to be the last, at the commit."""
    count = 0
    for part in parts:
        if int(part["PartNumber"]) != count + 1 or int(part["Size"]) != part_size:
            break
        count += 1
    return count * part_size


def check_parts(
    checkpoint: Checkpoint, parts: list[dict[str, Any]], size: int, crc32c: int
) -> list[dict[str, Any]]:
    """The parts to complete the upload with, once they are checked against
    the declared ``size`` and whole-object ``crc32c``.

    FailedPrecondition while parts are missing (the session stays: PUT them
    and complete again); InvalidArgument when the parts S3 holds can never
    make up the object declared (a wrong size or CRC32C, a short part in
    the middle): the caller then ends the session."""
    if checkpoint.size is not None and size != checkpoint.size:
        raise InvalidArgument(f"size {size} is not the session's declared size {checkpoint.size}")
    expected_crc = checkpoint.expected_crc32c
    if expected_crc is not None and crc32c != expected_crc:
        raise InvalidArgument("crc32c is not the one the session's spec declared")
    count = part_count(size, checkpoint.part_size)
    numbers = [int(part["PartNumber"]) for part in parts]
    missing = sorted(set(range(1, count + 1)) - set(numbers))
    if missing:
        raise PartsMissing(
            f"{len(missing)} of the {count} parts of a {size}-byte object are not in S3 "
            f"(first missing: part {missing[0]}): PUT them, then complete again"
        )
    if numbers != list(range(1, count + 1)):
        raise InvalidArgument(
            f"S3 holds parts past the {count} parts of a {size}-byte object: the size is wrong"
        )
    combined: int | None = 0
    checked: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        part_bytes = int(part["Size"])
        expected = min(checkpoint.part_size, size - index * checkpoint.part_size)
        if part_bytes != expected:
            raise InvalidArgument(
                f"part {index + 1} holds {part_bytes} bytes where a {size}-byte object "
                f"in parts of {checkpoint.part_size} has {expected}"
            )
        entry = {"PartNumber": index + 1, "ETag": part["ETag"]}
        crc = crc32c_from_s3(str(part.get("ChecksumCRC32C", "")))
        if crc is None:
            combined = None  # a store that lists none: its completion checks alone
        else:
            entry["ChecksumCRC32C"] = part["ChecksumCRC32C"]
            if combined is not None:
                combined = crc32c_combine(combined, crc, part_bytes)
        checked.append(entry)
    if combined is not None and combined != crc32c:
        raise InvalidArgument(
            "the parts S3 holds do not make up the declared crc32c: "
            f"they combine to {combined:#010x}, not {crc32c:#010x}"
        )
    return checked


async def commit_direct(
    connection: S3Connection,
    spec: SessionSpec,
    checkpoint: Checkpoint,
    size: int,
    sums: ContentChecksums,
) -> StoredObject:
    """Check the parts S3 holds against ``size`` and ``sums`` (see
    ``check_parts``) and complete the multipart upload with the whole
    object's CRC32C, which S3 verifies; the sha256, declared by the caller
    (at the start or now), is stored as a declared one is on every path."""
    known = spec.options.known
    if sums.crc32c is None:
        raise InvalidArgument("a direct commit needs the whole object's crc32c")
    if known.sha256 and sums.sha256 and known.sha256 != sums.sha256:
        raise InvalidArgument("sha256 is not the one the session's spec declared")
    sha256 = sums.sha256 or known.sha256
    if sha256 is not None and len(sha256) != 32:
        raise InvalidArgument(f"sha256 must be 32 bytes, got {len(sha256)}")
    parts = await list_all_parts(connection.client, spec.ref, checkpoint.upload_id)
    checked = check_parts(checkpoint, parts, size, sums.crc32c)
    return await complete_multipart(
        connection.transfers,
        spec.ref,
        checkpoint.upload_id,
        checked,
        spec.options,
        ContentChecksums(sha256=sha256, crc32c=sums.crc32c),
        size,
        full_object=True,
        record_tag=checkpoint.record_tag,
        control=connection.client,
        deletes=connection.conditional_deletes,
    )


__all__ = [
    "PartsMissing",
    "check_part",
    "check_parts",
    "commit_direct",
    "list_all_parts",
    "persisted",
    "presign_parts",
]
