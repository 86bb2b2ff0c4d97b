"""The ObjectStore in process memory, with the S3 store's semantics.

For tests and for running the gateway without S3. Objects live in a dict per
bucket beside a sorted list of their keys; resumable upload sessions (see
``memory.sessions``) live beside the objects of their bucket, so every
``MemorySessions`` over one ``MemoryStore`` sees the same sessions, as every
S3 instance sees the same checkpoints. Nothing awaits between a commit's
final checks and its write, so a commit is atomic within the event loop.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import itertools
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from blobgate.server.core.errors import (
    BucketNotFound,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ServiceError,
    if_match_failed,
    if_none_match_failed,
)
from blobgate.server.core.storage_classes import ARCHIVED, STANDARD, archived
from blobgate.server.core.tags import expiry_of, stored_tags, with_expiry
from blobgate.server.storage.checksums import Hasher, verify
from blobgate.server.storage.memory.state import MemoryBucket, StoredBytes
from blobgate.server.storage.protocols import (
    NULL_VERSION,
    RESERVED_PREFIX,
    ByteRange,
    Chunk,
    ContentChecksums,
    CopySpec,
    DeleteEntry,
    DeleteResult,
    DirectRead,
    ListPage,
    ObjectRef,
    PresignedRequest,
    PresignMethod,
    PutOptions,
    StoredObject,
)


def _plain_etag(etag: str) -> str:
    return etag.strip('"')


class MemoryReader:
    """An open ranged read of a committed object's bytes."""

    def __init__(self, info: StoredObject, data: bytearray, start: int, end: int) -> None:
        self.info = info
        # A replaced or deleted object's bytes stay readable by readers
        # already open, as an S3 GetObject already under way keeps streaming.
        self._data: bytearray | None = data
        self._pos = start
        self._end = end

    async def chunks(self, size: int) -> AsyncIterator[list[bytes]]:
        if size <= 0:
            raise ValueError(f"chunk size must be positive, not {size}")
        while self._data is not None and self._pos < self._end:
            stop = min(self._pos + size, self._end)
            with memoryview(self._data) as view:
                piece = bytes(view[self._pos : stop])
            self._pos = stop
            yield [piece]

    async def close(self) -> None:
        self._data = None


# --- continuation tokens -------------------------------------------------------
# A token names where the next page starts: after a key ("k"), or after every
# key under a common prefix ("p"). Base64 keeps it opaque to callers.


def _encode_token(kind: str, name: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}{name}".encode()).decode()


def _decode_token(token: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii")).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raw = ""
    if raw[:1] not in {"k", "p"} or len(raw) < 2:
        raise InvalidArgument("page_token is not a token this service issued")
    return raw[0], raw[1:]


class MemoryStore:
    """ObjectStore in process memory. ``buckets`` are the buckets that exist;
    any other is BucketNotFound, as a missing bucket is in S3."""

    def __init__(self, buckets: Iterable[str]) -> None:
        self._buckets = {name: MemoryBucket() for name in buckets}

    def create_bucket(self, name: str) -> None:
        """Make bucket ``name`` exist (the create-buckets setting); an existing
        one is left as it is."""
        self._buckets.setdefault(name, MemoryBucket())

    def bucket(self, name: str) -> MemoryBucket:
        """The state of bucket ``name``; BucketNotFound if it does not exist."""
        try:
            return self._buckets[name]
        except KeyError:
            raise BucketNotFound(f"bucket {name!r} does not exist") from None

    def _object(self, ref: ObjectRef) -> StoredBytes:
        """The object at ``ref``. The store is an unversioned bucket: each
        object has one version, NULL_VERSION, and no other version exists."""
        found = self.bucket(ref.bucket).objects.get(ref.key)
        if ref.version_id and ref.version_id != NULL_VERSION:
            found = None
        if found is None:
            what = f"version {ref.version_id!r} of {ref.key!r}" if ref.version_id else repr(ref.key)
            raise NotFound(f"no object {what} in bucket {ref.bucket!r}")
        return found

    # --- writes ------------------------------------------------------------

    def check_preconditions(self, ref: ObjectRef, options: PutOptions) -> None:
        """Raise FailedPrecondition unless if_none_match / if_match hold now."""
        current = self.bucket(ref.bucket).objects.get(ref.key)
        if current is None:
            if options.if_match:
                raise if_match_failed()
            return
        if options.if_none_match:
            raise if_none_match_failed()
        if options.if_match and current.info.etag != _plain_etag(options.if_match):
            raise if_match_failed()

    async def put(
        self, ref: ObjectRef, body: AsyncIterable[Chunk], options: PutOptions
    ) -> StoredObject:
        """Store ``body`` as one object once it ended without error, its
        checksums verified against ``options.known``; nothing otherwise."""
        self.check_preconditions(ref, options)  # fail before reading any data
        hasher = Hasher()
        data = bytearray()
        async for chunk in body:
            hasher.update(chunk)
            data += chunk
        sums = hasher.checksums()
        verify(options.known, sums)
        return self.commit(ref, data, options, sums)

    def commit(
        self, ref: ObjectRef, data: bytearray, options: PutOptions, sums: ContentChecksums
    ) -> StoredObject:
        """Make ``data`` the object at ``ref`` if the preconditions still hold.
        The store keeps ``data`` itself: the caller must not change it after."""
        bucket = self.bucket(ref.bucket)
        self.check_preconditions(ref, options)
        # Whole seconds, as S3 reports LastModified.
        now = datetime.now(UTC).replace(microsecond=0)
        info = StoredObject(
            bucket=ref.bucket,
            key=ref.key,
            size=len(data),
            # S3's ETag of an object stored in one piece.
            etag=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            content_type=options.content_type,
            last_modified=now,
            metadata={k.lower(): v for k, v in options.metadata.items()},
            checksums=sums,
            storage_class=options.storage_class or STANDARD,
        )
        tags = stored_tags(options.tags, options.expire_days)
        if ref.key not in bucket.objects:
            bisect.insort(bucket.keys, ref.key)
        bucket.objects[ref.key] = StoredBytes(data, info, tags)
        return info

    async def delete(self, ref: ObjectRef, if_match: str) -> DeleteResult:
        """Remove the object: an unversioned bucket keeps no delete marker.
        A version id other than NULL_VERSION names no version: nothing to remove."""
        bucket = self.bucket(ref.bucket)
        if if_match:
            self.check_preconditions(ref, PutOptions("", {}, if_match=if_match))
        if ref.version_id and ref.version_id != NULL_VERSION:
            return DeleteResult()
        if bucket.objects.pop(ref.key, None) is not None:
            del bucket.keys[bisect.bisect_left(bucket.keys, ref.key)]
        return DeleteResult(version_id=ref.version_id)

    async def copy(self, spec: CopySpec) -> StoredObject:
        """Share the source's bytes (never changed once committed) with the copy."""
        try:
            source = self._object(spec.source)
        except BucketNotFound:
            raise
        except NotFound:
            raise NotFound(
                f"no source object {spec.source.key!r} in bucket {spec.source.bucket!r}"
            ) from None
        if spec.source_if_match and source.info.etag != _plain_etag(spec.source_if_match):
            raise if_match_failed("source_if_match")
        options = spec.options
        if not spec.replace_metadata:
            options = replace(
                options, content_type=source.info.content_type, metadata=source.info.metadata
            )
        if not spec.replace_tags:
            days = options.expire_days or expiry_of(source.tags)
            options = replace(options, tags=with_expiry(source.tags, 0), expire_days=days)
        return self.commit(spec.destination, source.data, options, source.info.checksums)

    async def batch_delete(
        self, bucket: str, entries: Sequence[DeleteEntry]
    ) -> list[ServiceError | None]:
        self.bucket(bucket)
        results: list[ServiceError | None] = []
        for entry in entries:
            try:
                await self.delete(ObjectRef(bucket, entry.key, entry.version_id), entry.if_match)
            except FailedPrecondition as exc:
                results.append(exc)
            else:
                results.append(None)
        return results

    # --- reads -------------------------------------------------------------

    async def head(self, ref: ObjectRef) -> StoredObject:
        return self._object(ref).info

    async def get_tags(self, ref: ObjectRef) -> dict[str, str]:
        return dict(self._object(ref).tags)

    async def set_tags(
        self, ref: ObjectRef, tags: Mapping[str, str], if_match: str
    ) -> StoredObject:
        """Tags only: the bytes and the ETag stay (as with S3's object tagging)."""
        stored = self._object(ref)
        if if_match:
            self.check_preconditions(ref, PutOptions("", {}, if_match=if_match))
        final = stored_tags(tags, expiry_of(stored.tags))
        stored.tags = final
        return replace(stored.info, tags=dict(final))

    async def open(self, ref: ObjectRef, byte_range: ByteRange, if_match: str) -> MemoryReader:
        stored = self._object(ref)
        info = stored.info
        if if_match and info.etag != _plain_etag(if_match):
            raise if_match_failed()
        if info.storage_class in ARCHIVED:  # as S3 refuses it (InvalidObjectState)
            raise FailedPrecondition(archived(f"{ref.key!r} in bucket {ref.bucket!r}"))
        offset, limit = byte_range.offset, byte_range.limit
        start = offset if offset >= 0 else max(0, info.size + offset)
        if start > info.size:
            raise OutOfRange(f"offset {offset} is past the end of {ref.key!r} ({info.size} bytes)")
        end = info.size if limit <= 0 else min(info.size, start + limit)
        return MemoryReader(info, stored.data, start, end)

    async def list_page(
        self, bucket: str, prefix: str, delimiter: str, page_size: int, token: str
    ) -> ListPage:
        if page_size <= 0:
            raise InvalidArgument(f"page_size {page_size} must be positive")
        state = self.bucket(bucket)
        after = _decode_token(token) if token else None
        entries = self._entries(state, prefix, delimiter, after)
        page = list(itertools.islice(entries, page_size))
        more = next(entries, None) is not None
        objects: list[StoredObject] = []
        prefixes: list[str] = []
        for kind, name in page:
            if kind == "p":
                prefixes.append(name)
                continue
            stored = state.objects[name].info
            objects.append(
                StoredObject(
                    bucket=bucket,
                    key=name,
                    size=stored.size,
                    etag=stored.etag,
                    content_type="",  # a listing does not carry these, as in S3
                    last_modified=stored.last_modified,
                    storage_class=stored.storage_class,
                )
            )
        next_token = _encode_token(*page[-1]) if more else ""
        return ListPage(objects=objects, common_prefixes=prefixes, next_token=next_token)

    async def list_versions(
        self, bucket: str, prefix: str, delimiter: str, page_size: int, token: str
    ) -> ListPage:
        """As S3 lists the versions of an unversioned bucket: each object is
        its key's one version, NULL_VERSION, the latest; no delete markers."""
        page = await self.list_page(bucket, prefix, delimiter, page_size, token)
        objects = [replace(o, version_id=NULL_VERSION, is_latest=True) for o in page.objects]
        return replace(page, objects=objects)

    @staticmethod
    def _entries(
        state: MemoryBucket, prefix: str, delimiter: str, after: tuple[str, str] | None
    ) -> Iterator[tuple[str, str]]:
        """The listing's entries in key order: ("k", key) for an object,
        ("p", common prefix) for the keys a delimiter rolls up, each once."""
        keys = state.keys
        position = bisect.bisect_left(keys, prefix)
        skip_under = ""  # keys under the last common prefix are rolled up into it
        if after is not None:
            kind, name = after
            position = max(position, bisect.bisect_right(keys, name))
            if kind == "p":
                skip_under = name
        for index in range(position, len(keys)):
            key = keys[index]
            if not key.startswith(prefix):
                return
            if key.startswith(RESERVED_PREFIX):
                continue  # the gateway's own records are not the caller's objects
            if skip_under and key.startswith(skip_under):
                continue
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                skip_under = key[: cut + len(delimiter)]
                yield "p", skip_under
            else:
                yield "k", key

    async def presign(
        self, ref: ObjectRef, method: PresignMethod, expires_in: int, content_type: str
    ) -> PresignedRequest:
        """Always FailedPrecondition: objects in process memory have no HTTP
        endpoint, so no URL could be used by an HTTP client; the gateway must
        run on S3 for presigned URLs."""
        raise FailedPrecondition(
            "presigned URLs need an S3 backend: this gateway keeps objects in memory, "
            "where no HTTP client can reach them"
        )

    async def direct_read(
        self, ref: ObjectRef, byte_range: ByteRange, if_match: str, expires_in: int
    ) -> DirectRead | None:
        """Always None: no HTTP client can reach process memory, so every
        read is sent through the gateway."""
        return None

    async def check(self) -> None:
        """Process memory always answers."""
        return None
