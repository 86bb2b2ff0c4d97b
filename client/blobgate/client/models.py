"""Plain data the client returns, converted from the API's messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
from google.protobuf import timestamp_pb2

from blobgate.v1 import storage_pb2


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object. ``sha256`` and ``crc32c`` are None when unknown;
    listings carry neither, nor metadata (``stat`` has them). ``version_id``
    is S3's version id ("" where the bucket is not versioned); ``is_latest``
    and ``is_delete_marker`` are set only in a versions listing."""

    bucket: str
    key: str
    size: int
    etag: str
    content_type: str
    last_modified: datetime | None
    metadata: dict[str, str] = field(default_factory=dict)
    sha256: bytes | None = None
    crc32c: int | None = None
    version_id: str = ""
    is_latest: bool = False
    is_delete_marker: bool = False
    storage_class: str = ""  # STANDARD unless written in another class
    tags: dict[str, str] = field(default_factory=dict)  # only from stat(include_tags=True)
    expires_at: datetime | None = None  # when S3 expires it, where S3 says

    @classmethod
    def from_proto(cls, obj: storage_pb2.Object) -> ObjectInfo:
        """Convert an API ``Object``."""
        checksums = obj.checksums
        return cls(
            bucket=obj.bucket,
            key=obj.key,
            size=obj.size,
            etag=obj.etag,
            content_type=obj.content_type,
            last_modified=_datetime(obj.last_modified) if obj.HasField("last_modified") else None,
            metadata=dict(obj.metadata),
            sha256=checksums.sha256 or None,
            crc32c=checksums.crc32c if checksums.HasField("crc32c") else None,
            version_id=obj.version_id,
            is_latest=obj.is_latest,
            is_delete_marker=obj.is_delete_marker,
            storage_class=obj.storage_class,
            tags=dict(obj.tags),
            expires_at=_datetime(obj.expires_at) if obj.HasField("expires_at") else None,
        )


@dataclass(frozen=True)
class Deleted:
    """What a delete did: the id of the delete marker it left (a versioned
    bucket) or of the version it removed, "" on an unversioned bucket."""

    version_id: str
    delete_marker: bool


@dataclass(frozen=True)
class ListPage:
    """One page of a listing; ``next_page_token`` is empty on the last page."""

    objects: list[ObjectInfo]
    common_prefixes: list[str]
    next_page_token: str

    @classmethod
    def from_proto(cls, response: storage_pb2.ListResponse) -> ListPage:
        """Convert an API ``ListResponse``."""
        return cls(
            objects=[ObjectInfo.from_proto(obj) for obj in response.objects],
            common_prefixes=list(response.common_prefixes),
            next_page_token=response.next_page_token,
        )


@dataclass(frozen=True)
class PresignedURL:
    """A URL a plain HTTP client can use until ``expires_at``, sending
    ``headers`` with it."""

    url: str
    method: str
    expires_at: datetime | None
    headers: dict[str, str]

    @classmethod
    def from_proto(cls, response: storage_pb2.PresignResponse) -> PresignedURL:
        """Convert an API ``PresignResponse``."""
        return cls(
            url=response.url,
            method=storage_pb2.HttpMethod.Name(response.method).removeprefix("HTTP_METHOD_"),
            expires_at=(
                _datetime(response.expires_at) if response.HasField("expires_at") else None
            ),
            headers=dict(response.headers),
        )


_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


@dataclass(frozen=True)
class DeleteResult:
    """What became of one key of a batch delete: ``code`` OK when the key is
    gone (deleted, or already missing), else the status that refused it."""

    key: str
    code: grpc.StatusCode
    message: str

    @property
    def deleted(self) -> bool:
        """Whether the key is gone."""
        return self.code == grpc.StatusCode.OK

    @classmethod
    def from_proto(cls, result: storage_pb2.BatchDeleteResult) -> DeleteResult:
        """Convert an API ``BatchDeleteResult``."""
        code = _STATUS_CODES.get(result.code, grpc.StatusCode.UNKNOWN)
        return cls(key=result.key, code=code, message=result.message)


def _datetime(timestamp: timestamp_pb2.Timestamp) -> datetime:
    return timestamp.ToDatetime(tzinfo=UTC)
