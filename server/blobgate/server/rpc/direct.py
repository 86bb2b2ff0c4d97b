"""Direct downloads: a Download that asks for it (``direct``), on a server
with ``direct_transfers`` on, is answered with the object message and one
``DirectDownload`` (a presigned GET of the selected bytes) instead of the
bytes, and the caller reads them from S3 itself.

The read is authorized as any Download (the ``read`` right on the key; the
store decorators decide), its ``if_match`` is checked before the answer, and
the URL's signed headers pin the object described and its range
(``storage.s3.direct``). The call's record says it was direct, with the
bytes selected and the URL's expiry, for the access and audit logs; the URL
itself is never recorded or logged."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from blobgate.server.rpc.access_log import CallRecord
from blobgate.server.rpc.codecs import object_message
from blobgate.server.storage.protocols import ByteRange, ObjectRef, ObjectStore
from blobgate.v1 import storage_pb2

pb = storage_pb2
Send = Callable[[storage_pb2.DownloadResponse], Awaitable[None]]


class DirectDownloads:
    """Answers direct Downloads over ``store`` with URLs valid for
    ``lifetime`` seconds."""

    def __init__(self, store: ObjectStore, lifetime: int) -> None:
        self._store = store
        self._lifetime = lifetime

    async def answer(
        self,
        ref: ObjectRef,
        byte_range: ByteRange,
        if_match: str,
        send: Send,
        record: CallRecord,
    ) -> bool:
        """Send the object message and its DirectDownload and return True;
        False (nothing sent) when the store sends this read through the
        gateway (see ``ObjectStore.direct_read``)."""
        record.direct = True  # a refusal is a refused direct read
        read = await self._store.direct_read(ref, byte_range, if_match, self._lifetime)
        if read is None:
            record.direct = False
            return False
        direct = pb.DirectDownload(url=read.request.url, headers=read.request.headers)
        direct.expires_at.FromDatetime(read.expires_at)
        record.direct_bytes = read.length
        record.direct_expires_at = read.expires_at.isoformat(timespec="seconds")
        await send(pb.DownloadResponse(object=object_message(read.info)))
        await send(pb.DownloadResponse(direct=direct))
        return True


__all__ = ["DirectDownloads"]
