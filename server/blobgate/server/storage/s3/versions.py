"""Object versions in S3 (bucket versioning): the versions listing
(ListObjectVersions), the request arguments that name a version, and the
gateway's own records kept free of versions.

A versioned bucket keeps every version an overwrite or a delete leaves: a
caller's object may have many (Stat, Download and Copy read them by
``version_id``, Delete with one removes it for good). The gateway's own
records (session records, sha256 records, quota markers, the page-token key)
must not: a record's every version goes when the record does
(``forget_versions``), and a record rewritten in place keeps only its newest
version. Nothing here costs a request on an unversioned bucket: the answers
to the write or delete (their ``VersionId`` and ``DeleteMarker``) tell
whether the bucket keeps versions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

from blobgate.server.core.errors import InvalidArgument
from blobgate.server.storage.protocols import (
    NULL_VERSION,
    RESERVED_PREFIX,
    DeleteResult,
    ListPage,
    ObjectRef,
    StoredObject,
)
from blobgate.server.storage.s3.errors import S3_FAILURES, s3_errors
from blobgate.server.storage.s3.metadata import bare_etag

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

_DELETE_BATCH = 1000  # DeleteObjects' limit


def version_args(ref: ObjectRef) -> dict[str, Any]:
    """The ``VersionId`` argument of a request on ``ref``, if it names a version."""
    return {"VersionId": ref.version_id} if ref.version_id else {}


def copy_source(ref: ObjectRef) -> dict[str, str]:
    """CopySource naming ``ref`` (and its version, if it names one)."""
    return {"Bucket": ref.bucket, "Key": ref.key, **version_args(ref)}


def version_of(response: Mapping[str, Any]) -> str:
    """The version id S3 gave a write or read ("" where it gave none: an
    unversioned bucket)."""
    return str(response.get("VersionId") or "")


def deleted(ref: ObjectRef, response: Mapping[str, Any]) -> DeleteResult:
    """What S3's answer to a DeleteObject says it did."""
    marker = bool(response.get("DeleteMarker"))
    version = version_of(response)
    if not version and ref.version_id and response:
        version = ref.version_id
    return DeleteResult(version_id=version, delete_marker=marker)


def _encode_token(key_marker: str, version_marker: str) -> str:
    return json.dumps([key_marker, version_marker], separators=(",", ":"))


def _decode_token(token: str) -> tuple[str, str]:
    try:
        key_marker, version_marker = json.loads(token)
    except (ValueError, TypeError):
        raise InvalidArgument("page_token is malformed: pass next_page_token unchanged") from None
    return str(key_marker), str(version_marker)


def _entry(bucket: str, item: Mapping[str, Any], *, marker: bool) -> StoredObject:
    last_modified = item.get("LastModified")
    return StoredObject(
        bucket=bucket,
        key=str(item["Key"]),
        size=0 if marker else int(item.get("Size", 0)),
        etag="" if marker else bare_etag(str(item.get("ETag", ""))),
        content_type="",
        last_modified=last_modified if isinstance(last_modified, datetime) else None,
        version_id=str(item.get("VersionId") or NULL_VERSION),
        is_latest=bool(item.get("IsLatest")),
        is_delete_marker=marker,
    )


_ORDER = "BlobgateVersionsOrder"  # what _note_order adds to the parsed response


def _note_order(
    response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any
) -> None:
    """botocore's before-parse hook for ListObjectVersions: S3 answers the
    versions and delete markers in one list, in its order (by key, newest
    first), which botocore parses into two lists; note which came when,
    True for a delete marker, so that ``_s3_order`` can merge them back
    (times alone cannot: S3 gives them to the millisecond, or the second)."""
    try:
        root = ElementTree.fromstring(response_dict.get("body") or b"")
    except ElementTree.ParseError:
        return  # an error answer: botocore reports it
    kinds = [child.tag.rsplit("}", 1)[-1] for child in root]
    customized_response_dict[_ORDER] = [
        kind == "DeleteMarker" for kind in kinds if kind in {"Version", "DeleteMarker"}
    ]


def _s3_order(
    versions: list[StoredObject], markers: list[StoredObject], order: Any
) -> list[StoredObject]:
    """Versions and delete markers merged back into S3's order: as S3 sent
    them, else (no note of it) by key, then newest first, the latest before
    the rest where the times tie."""
    if isinstance(order, list) and len(order) == len(versions) + len(markers):
        pending = {False: iter(versions), True: iter(markers)}
        return [next(pending[bool(marker)]) for marker in order]
    entries = versions + markers

    def newest_first(entry: StoredObject) -> tuple[str, bool, float]:
        when = entry.last_modified
        return entry.key, not entry.is_latest, -(when.timestamp() if when else 0.0)

    return sorted(entries, key=newest_first)


async def list_versions(
    client: S3Client, bucket: str, prefix: str, delimiter: str, page_size: int, token: str
) -> ListPage:
    """One page of ListObjectVersions, the gateway's records left out; its
    token holds S3's key and version-id markers."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
    if delimiter:
        kwargs["Delimiter"] = delimiter
    if token:
        key_marker, version_marker = _decode_token(token)
        kwargs["KeyMarker"] = key_marker
        if version_marker:
            kwargs["VersionIdMarker"] = version_marker
    client.meta.events.register("before-parse.s3.ListObjectVersions", _note_order, unique_id=_ORDER)
    with s3_errors(bucket=bucket):
        response = await client.list_object_versions(**kwargs)
    versions = [_entry(bucket, item, marker=False) for item in response.get("Versions", [])]
    markers = [_entry(bucket, item, marker=True) for item in response.get("DeleteMarkers", [])]
    ordered = _s3_order(versions, markers, response.get(_ORDER))
    # The gateway's own records are not the caller's objects.
    entries = [entry for entry in ordered if not entry.key.startswith(RESERVED_PREFIX)]
    prefixes = [
        p["Prefix"]
        for p in response.get("CommonPrefixes", [])
        if "Prefix" in p and not p["Prefix"].startswith(RESERVED_PREFIX)
    ]
    next_token = ""
    if response.get("IsTruncated"):
        next_token = _encode_token(
            str(response.get("NextKeyMarker", "")), str(response.get("NextVersionIdMarker", ""))
        )
    return ListPage(objects=entries, common_prefixes=prefixes, next_token=next_token)


async def forget_versions(
    client: S3Client, bucket: str, key: str, keep: str = "", *, spare_latest: bool = False
) -> int:
    """Remove every version and delete marker of the record at ``key``
    (one of the gateway's records) but ``keep`` (and, with ``spare_latest``,
    a latest version that is not a delete marker: a record written after the
    delete that called this); how many were removed."""
    assert key.startswith(RESERVED_PREFIX), key
    doomed: list[dict[str, str]] = []
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": key}
    while True:
        with s3_errors(ObjectRef(bucket, key)):
            response = await client.list_object_versions(**kwargs)
        for item in response.get("Versions", []):
            version = str(item.get("VersionId") or NULL_VERSION)
            spared = version == keep or (spare_latest and bool(item.get("IsLatest")))
            if item.get("Key") == key and not spared:
                doomed.append({"Key": key, "VersionId": version})
        for marker in response.get("DeleteMarkers", []):
            if marker.get("Key") == key:
                doomed.append({"Key": key, "VersionId": str(marker.get("VersionId"))})
        if not response.get("IsTruncated"):
            break
        kwargs["KeyMarker"] = response.get("NextKeyMarker", "")
        kwargs["VersionIdMarker"] = response.get("NextVersionIdMarker", "")
    for start in range(0, len(doomed), _DELETE_BATCH):
        with s3_errors(ObjectRef(bucket, key)):
            await client.delete_objects(
                Bucket=bucket,
                Delete={"Objects": doomed[start : start + _DELETE_BATCH], "Quiet": True},  # type: ignore[typeddict-item]
            )
    return len(doomed)


async def record_written(
    client: S3Client, bucket: str, key: str, response: Mapping[str, Any]
) -> None:
    """After a write of the record at ``key``: in a versioned bucket, remove
    its earlier versions (a record keeps only its newest). A failure is
    logged, never raised: the write itself succeeded."""
    version = version_of(response)
    if not version or version == NULL_VERSION:
        return
    try:
        await forget_versions(client, bucket, key, keep=version)
    except Exception:
        log.warning(
            "could not remove the earlier versions of a record in %s", bucket, exc_info=True
        )


async def record_deleted(
    client: S3Client, bucket: str, key: str, response: Mapping[str, Any]
) -> None:
    """After a DeleteObject of the record at ``key``: where that made a delete
    marker (a versioned bucket), remove the record's every version, the
    marker too (but a version written since). Raised on failure, as the
    delete's own failure would be."""
    if response.get("DeleteMarker") or version_of(response):
        await forget_versions(client, bucket, key, spare_latest=True)


async def delete_record(client: S3Client, bucket: str, key: str) -> None:
    """Delete the record at ``key``, every version of it where the bucket
    keeps versions."""
    with s3_errors(ObjectRef(bucket, key)):
        response = await client.delete_object(Bucket=bucket, Key=key)
    await record_deleted(client, bucket, key, response)


async def remove_version(client: S3Client, ref: ObjectRef, version: str) -> bool:
    """Remove one version of a caller's object that a write of the gateway
    made and then replaced (the self-copy of ``commit``); whether it went
    (a failure is logged: the object is right, one stale version remains)."""
    try:
        await client.delete_object(Bucket=ref.bucket, Key=ref.key, VersionId=version)
    except S3_FAILURES:
        log.warning(
            "%s/%s: could not remove the version the checksums' copy replaced",
            ref.bucket,
            ref.key,
            exc_info=True,
        )
        return False
    return True
