"""The unary calls of ``Client`` (Stat, List, Presign, Delete, Copy,
BatchDelete, and restore, a Copy of a version onto its key): each builds its
request and sends it through ``_unary``, which retries it where it is
idempotent. ``Client`` holds the transport, the streaming calls and the
lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Literal

from blobgate.client.models import Deleted, DeleteResult, ListPage, ObjectInfo, PresignedURL
from blobgate.client.options import ClientOptions
from blobgate.client.wire import proto_duration
from blobgate.v1 import storage_pb2

BATCH_DELETE_LIMIT = 1000  # keys per BatchDelete call
DeleteResults = list[DeleteResult]  # spelt here: UnaryCalls.list hides the builtin in the class
_HTTP_METHODS_BY_NAME = {"GET": storage_pb2.HTTP_METHOD_GET, "PUT": storage_pb2.HTTP_METHOD_PUT}


class UnaryCalls:
    """The unary calls, for a class that has ``options`` and sends a
    request with ``_unary`` (``Client``)."""

    options: ClientOptions

    async def _unary(self, method: str, request: Any) -> Any:
        raise NotImplementedError

    async def stat(
        self, key: str, *, bucket: str = "", include_tags: bool = False, version_id: str = ""
    ) -> ObjectInfo:
        """Describe ``key`` (``version_id``: that version), with its metadata
        and checksums (and its tags with ``include_tags``, one more request
        to S3)."""
        request = storage_pb2.StatRequest(
            bucket=bucket or self.options.bucket,
            key=key,
            include_tags=include_tags,
            version_id=version_id,
        )
        response: storage_pb2.StatResponse = await self._unary("Stat", request)
        return ObjectInfo.from_proto(response.object)

    async def set_tags(
        self, key: str, tags: Mapping[str, str], *, bucket: str = "", if_match: str = ""
    ) -> ObjectInfo:
        """Replace the tags of ``key`` (empty: remove them; its lifetime
        stays) and return the object with its tags."""
        request = storage_pb2.SetTagsRequest(
            bucket=bucket or self.options.bucket, key=key, tags=dict(tags), if_match=if_match
        )
        response: storage_pb2.SetTagsResponse = await self._unary("SetTags", request)
        return ObjectInfo.from_proto(response.object)

    async def list_page(
        self,
        prefix: str = "",
        *,
        bucket: str = "",
        delimiter: str = "",
        page_size: int = 0,
        page_token: str = "",
        versions: bool = False,
    ) -> ListPage:
        """One page of the listing under ``prefix`` (``page_size`` 0: the
        server's 1000). Pass ``next_page_token`` back to get the next.
        ``versions``: every version and delete marker of each key."""
        request = storage_pb2.ListRequest(
            bucket=bucket or self.options.bucket,
            prefix=prefix,
            delimiter=delimiter,
            page_size=page_size,
            page_token=page_token,
            versions=versions,
        )
        response: storage_pb2.ListResponse = await self._unary("List", request)
        return ListPage.from_proto(response)

    async def list(
        self,
        prefix: str = "",
        *,
        bucket: str = "",
        delimiter: str = "",
        page_size: int = 0,
        versions: bool = False,
    ) -> AsyncIterator[ObjectInfo]:
        """Every object (``versions``: every version) under ``prefix``, page
        after page. With a ``delimiter``, the common prefixes are only in
        ``list_page``."""
        token = ""
        while True:
            page = await self.list_page(
                prefix,
                bucket=bucket,
                delimiter=delimiter,
                page_size=page_size,
                page_token=token,
                versions=versions,
            )
            for obj in page.objects:
                yield obj
            token = page.next_page_token
            if not token:
                return

    async def presign(
        self,
        key: str,
        *,
        method: Literal["GET", "PUT"] = "GET",
        expires_in: float | None = None,
        content_type: str = "",
        bucket: str = "",
        version_id: str = "",
    ) -> PresignedURL:
        """A URL to GET or PUT ``key`` over plain HTTP, valid for
        ``expires_in`` seconds (None: the server's 15 minutes). For PUT,
        ``content_type`` is signed and must be sent as given; for GET,
        ``version_id`` names a version."""
        http_method = _HTTP_METHODS_BY_NAME.get(method.upper())
        if http_method is None:
            raise ValueError(f"method must be GET or PUT, not {method!r}")
        request = storage_pb2.PresignRequest(
            bucket=bucket or self.options.bucket,
            key=key,
            method=http_method,
            content_type=content_type,
            version_id=version_id,
        )
        if expires_in is not None:
            request.expires_in.CopyFrom(proto_duration(expires_in))
        response: storage_pb2.PresignResponse = await self._unary("Presign", request)
        return PresignedURL.from_proto(response)

    async def delete(
        self, key: str, *, bucket: str = "", if_match: str = "", version_id: str = ""
    ) -> Deleted:
        """Remove ``key``; a missing key is not an error unless ``if_match`` is
        given. On a versioned bucket that leaves a delete marker (restorable);
        ``version_id`` removes that version for good (the ``purge`` right)."""
        request = storage_pb2.DeleteRequest(
            bucket=bucket or self.options.bucket, key=key, if_match=if_match, version_id=version_id
        )
        response: storage_pb2.DeleteResponse = await self._unary("Delete", request)
        return Deleted(response.version_id, response.delete_marker)

    async def restore(self, key: str, version_id: str, *, bucket: str = "") -> ObjectInfo:
        """Make version ``version_id`` of ``key`` its current one again: a
        copy of it onto the key (checksums, content type and metadata kept),
        which a versioned bucket keeps as a new version."""
        return await self.copy(key, key, bucket=bucket, source_version_id=version_id)

    async def copy(
        self,
        source_key: str,
        destination_key: str,
        *,
        bucket: str = "",
        to_bucket: str = "",
        source_if_match: str = "",
        if_none_match: bool = False,
        if_match: str = "",
        replace_metadata: bool = False,
        content_type: str = "",
        metadata: Mapping[str, str] | None = None,
        storage_class: str = "",
        replace_tags: bool = False,
        tags: Mapping[str, str] | None = None,
        expire_days: int = 0,
        source_version_id: str = "",
    ) -> ObjectInfo:
        """Copy ``source_key`` (``source_version_id``: that version of it; in
        ``bucket``) to ``destination_key`` (in
        ``to_bucket``, default: the source's bucket) inside S3, and return the
        new object. The copy keeps the source's content type, metadata and
        checksums; ``replace_metadata`` replaces the first two with
        ``content_type`` (empty: guessed from the destination key) and
        ``metadata``. ``source_if_match`` pins the source's version;
        ``if_none_match`` and ``if_match`` guard the destination. A retry
        after a lost reply can report FAILED_PRECONDITION for a copy that
        ``if_none_match`` let through the first time. The copy keeps the
        source's tags unless ``replace_tags`` (then ``tags``) and its lifetime
        unless ``expire_days``; its storage class is ``storage_class``
        (empty: STANDARD)."""
        if not replace_metadata and (content_type or metadata):
            raise ValueError("content_type and metadata need replace_metadata=True")
        source_bucket = bucket or self.options.bucket
        request = storage_pb2.CopyRequest(
            source_bucket=source_bucket,
            source_key=source_key,
            source_if_match=source_if_match,
            destination_bucket=to_bucket or source_bucket,
            destination_key=destination_key,
            if_none_match=if_none_match,
            if_match=if_match,
            replace_metadata=replace_metadata,
            content_type=content_type,
            metadata=dict(metadata or {}),
            storage_class=storage_class,
            replace_tags=replace_tags,
            tags=dict(tags or {}),
            expire_days=expire_days,
            source_version_id=source_version_id,
        )
        response: storage_pb2.CopyResponse = await self._unary("Copy", request)
        return ObjectInfo.from_proto(response.object)

    async def batch_delete(
        self,
        keys: Iterable[str],
        *,
        bucket: str = "",
        if_match: Mapping[str, str] | None = None,
        version_ids: Mapping[str, str] | None = None,
    ) -> DeleteResults:
        """Delete ``keys`` of one bucket, in calls of up to 1000 keys, and
        say what became of each distinct key (in order): deleted (or already missing), or
        the status that refused it. ``if_match`` maps keys to the ETag each
        must still have; ``version_ids`` keys to the version of each to
        remove for good (the ``purge`` right). A failure of a whole call raises ``BlobgateError``;
        the calls before it took effect."""
        conditions = dict(if_match or {})
        versions = dict(version_ids or {})
        names = list(dict.fromkeys(keys))
        results: DeleteResults = []
        for start in range(0, len(names), BATCH_DELETE_LIMIT):
            entries = [
                storage_pb2.BatchDeleteEntry(
                    key=key, if_match=conditions.get(key, ""), version_id=versions.get(key, "")
                )
                for key in names[start : start + BATCH_DELETE_LIMIT]
            ]
            request = storage_pb2.BatchDeleteRequest(
                bucket=bucket or self.options.bucket, entries=entries
            )
            response: storage_pb2.BatchDeleteResponse = await self._unary("BatchDelete", request)
            results += [DeleteResult.from_proto(result) for result in response.results]
        return results
