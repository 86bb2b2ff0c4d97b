"""The request fields of tags, storage classes and lifetimes, checked: an
UploadSpec's and a CopyRequest's, and the SetTags call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from blobgate.server.core.errors import InvalidArgument
from blobgate.server.core.storage_classes import validate_storage_class
from blobgate.server.core.tags import validate_expire_days, validate_tags
from blobgate.server.rpc.codecs import object_message
from blobgate.server.rpc.validation import BucketPolicy, validate_etag
from blobgate.server.storage.protocols import ObjectStore, PutOptions
from blobgate.v1 import storage_pb2


def with_tagging(
    options: PutOptions,
    tags: Mapping[str, str],
    storage_class: str,
    expire_days: int,
    allowed_days: Sequence[int],
) -> PutOptions:
    """``options`` with the checked tags, storage class and lifetime."""
    days = validate_expire_days(expire_days, allowed_days)
    return PutOptions(
        content_type=options.content_type,
        metadata=options.metadata,
        if_none_match=options.if_none_match,
        if_match=options.if_match,
        known=options.known,
        tags=validate_tags(tags, expiring=days > 0),
        storage_class=validate_storage_class(storage_class),
        expire_days=days,
    )


def check_copy_tags(request: storage_pb2.CopyRequest) -> None:
    """A copy's tags go with replace_tags only."""
    if request.tags and not request.replace_tags:
        raise InvalidArgument(
            "tags apply only with replace_tags: set it to replace the source's tags, "
            "or leave tags empty to keep them"
        )


async def set_tags(
    store: ObjectStore, buckets: BucketPolicy, request: storage_pb2.SetTagsRequest
) -> storage_pb2.SetTagsResponse:
    """SetTags: replace one object's tags; the answer describes it with them."""
    ref = buckets.ref(request.bucket, request.key)
    tags = validate_tags(request.tags)
    info = await store.set_tags(ref, tags, validate_etag(request.if_match))
    return storage_pb2.SetTagsResponse(object=object_message(info))
