"""Copy and BatchDelete requests checked and read into store calls, and
BatchDelete's per-key results written back."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import grpc

from blobgate.server.core.errors import InvalidArgument, ServiceError
from blobgate.server.rpc.status_codes import code_for
from blobgate.server.rpc.validation import (
    BucketPolicy,
    validate_content_type,
    validate_etag,
    validate_key,
    validate_metadata,
)
from blobgate.server.rpc.versions import validate_version_id, versioned
from blobgate.server.storage.protocols import CopySpec, DeleteEntry, PutOptions
from blobgate.v1 import storage_pb2

log = logging.getLogger(__name__)

MAX_BATCH_DELETE = 1000  # S3's DeleteObjects limit


def copy_spec(request: storage_pb2.CopyRequest, buckets: BucketPolicy) -> CopySpec:
    """The copy a CopyRequest asks for; InvalidArgument or PermissionDenied
    for a request that breaks the rules."""
    source = buckets.ref(request.source_bucket, request.source_key)
    source = versioned(source, request.source_version_id, "source_version_id")
    destination = buckets.ref(request.destination_bucket, request.destination_key)
    if request.if_none_match and request.if_match:
        raise InvalidArgument("set if_none_match or if_match, not both")
    if request.replace_metadata:
        content_type = validate_content_type(request.content_type, destination.key)
        metadata = validate_metadata(request.metadata)
    else:
        if request.content_type or request.metadata:
            raise InvalidArgument(
                "content_type and metadata apply only with replace_metadata: set it to "
                "replace them, or leave them empty to keep the source's"
            )
        changes = request.replace_tags or request.storage_class or request.expire_days
        if source == destination and not changes:
            raise InvalidArgument(
                "copying an object onto itself changes nothing: set replace_metadata "
                "(or replace_tags, storage_class, expire_days), or name another destination"
            )
        content_type, metadata = "", {}
    options = PutOptions(
        content_type=content_type,
        metadata=metadata,
        if_none_match=request.if_none_match,
        if_match=validate_etag(request.if_match),
    )
    return CopySpec(
        source=source,
        destination=destination,
        options=options,
        source_if_match=validate_etag(request.source_if_match, "source_if_match"),
        replace_metadata=request.replace_metadata,
    )


def batch_delete_entries(
    entries: Sequence[storage_pb2.BatchDeleteEntry],
) -> list[DeleteEntry]:
    """The entries of a BatchDeleteRequest, checked: 1 to 1000 distinct keys
    (or versions of keys)."""
    if not entries:
        raise InvalidArgument("entries is empty: name 1 to 1000 keys to delete")
    if len(entries) > MAX_BATCH_DELETE:
        raise InvalidArgument(
            f"{len(entries)} entries: a BatchDelete takes at most {MAX_BATCH_DELETE}; "
            "split the keys over several calls"
        )
    checked: list[DeleteEntry] = []
    seen: set[tuple[str, str]] = set()
    for index, entry in enumerate(entries):
        try:
            key = validate_key(entry.key)
            if_match = validate_etag(entry.if_match)
            version_id = validate_version_id(entry.version_id)
        except InvalidArgument as exc:
            raise InvalidArgument(f"entries[{index}]: {exc.message}") from None
        if (key, version_id) in seen:
            what = f"version {version_id!r} of key {key!r}" if version_id else f"key {key!r}"
            raise InvalidArgument(f"entries[{index}]: {what} is given twice")
        seen.add((key, version_id))
        checked.append(DeleteEntry(key, if_match, version_id))
    return checked


def batch_delete_results(
    entries: Iterable[DeleteEntry], results: Iterable[ServiceError | None]
) -> list[storage_pb2.BatchDeleteResult]:
    """One BatchDeleteResult per entry: code 0, or the status that refused it."""
    messages: list[storage_pb2.BatchDeleteResult] = []
    for entry, error in zip(entries, results, strict=True):
        if error is None:
            messages.append(storage_pb2.BatchDeleteResult(key=entry.key))
            continue
        code = code_for(error)
        message = error.message
        if code is None:
            log.error("BatchDelete of %r failed", entry.key, exc_info=error)
            code = grpc.StatusCode.INTERNAL
            message = f"internal error deleting {entry.key!r}; the gateway logged the details"
        messages.append(
            storage_pb2.BatchDeleteResult(key=entry.key, code=code.value[0], message=message)
        )
    return messages
