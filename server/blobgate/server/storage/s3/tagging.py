"""Object tags, storage classes and lifetimes on S3: what a write sends
(the x-amz-tagging and x-amz-storage-class headers) and the tag set read and
replaced (GetObjectTagging, PutObjectTagging). The storage class and the
Expiration answer of a HEAD or GET are read in ``metadata``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from blobgate.server.core.tags import expiry_of, stored_tags, tagging_header
from blobgate.server.storage.protocols import ObjectRef, PutOptions, StoredObject
from blobgate.server.storage.s3.errors import s3_errors
from blobgate.server.storage.s3.preconditions import check_preconditions
from blobgate.server.storage.s3.sha256_records import describe

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


def write_args(options: PutOptions) -> dict[str, Any]:
    """The tagging and storage-class arguments of PutObject,
    CreateMultipartUpload or CopyObject (with TaggingDirective REPLACE)."""
    args: dict[str, Any] = {}
    tags = stored_tags(options.tags, options.expire_days)
    if tags:
        args["Tagging"] = tagging_header(tags)
    if options.storage_class:
        args["StorageClass"] = options.storage_class
    return args


async def get_tags(client: S3Client, ref: ObjectRef) -> dict[str, str]:
    """GetObjectTagging: the object's whole tag set (of the version ``ref``
    names, if it names one)."""
    with s3_errors(ref):
        version: dict[str, Any] = {"VersionId": ref.version_id} if ref.version_id else {}
        response = await client.get_object_tagging(Bucket=ref.bucket, Key=ref.key, **version)
    return {tag["Key"]: tag["Value"] for tag in response.get("TagSet", [])}


async def set_tags(
    client: S3Client, ref: ObjectRef, tags: Mapping[str, str], if_match: str
) -> StoredObject:
    """Replace the caller's tags, keeping the expiry tag the object has.
    PutObjectTagging takes no condition: ``if_match`` is checked with a HEAD
    just before it."""
    current = await get_tags(client, ref)
    if if_match:
        await check_preconditions(client, ref, PutOptions("", {}, if_match=if_match))
    final = stored_tags(tags, expiry_of(current))
    tag_set = [{"Key": key, "Value": value} for key, value in sorted(final.items())]
    with s3_errors(ref):
        await client.put_object_tagging(
            Bucket=ref.bucket,
            Key=ref.key,
            Tagging={"TagSet": tag_set},  # type: ignore[typeddict-item]
        )
    info = await describe(client, ref)
    return replace(info, tags=final)
