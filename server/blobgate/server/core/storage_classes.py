"""The S3 storage classes an object may be written in (botocore's S3 model,
``StorageClass``), and their check."""

from __future__ import annotations

from blobgate.server.core.errors import InvalidArgument

STANDARD = "STANDARD"
STORAGE_CLASSES = (
    STANDARD,
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "OUTPOSTS",
    "GLACIER_IR",
    "SNOW",
    "EXPRESS_ONEZONE",
    "FSX_OPENZFS",
)
# Classes whose objects S3 serves only once restored (GetObject answers
# InvalidObjectState).
ARCHIVED = frozenset({"GLACIER", "DEEP_ARCHIVE"})


def validate_storage_class(value: str, field: str = "storage_class") -> str:
    """An S3 storage class, upper-cased; "" stays "" (S3's default, STANDARD)."""
    if not value:
        return ""
    name = value.upper()
    if name not in STORAGE_CLASSES:
        raise InvalidArgument(
            f"{field} {value[:40]!r} is not an S3 storage class: use one of "
            + ", ".join(STORAGE_CLASSES)
        )
    return name


def archived(where: str) -> str:
    """What a Download of an archived object is refused with."""
    return (
        f"{where} is archived (GLACIER, DEEP_ARCHIVE or an archive tier): "
        "restore it in S3 (RestoreObject) before downloading it"
    )
