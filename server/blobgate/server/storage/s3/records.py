"""The gateway's own records in S3 (``protocols.Records``: quota markers, the
page-token key), over the connection's control pool, as the session records.
A conditional delete goes the way the connection's conditional deletes do
(S3's If-Match, or a HEAD then a delete where the store lacks it)."""

from __future__ import annotations

from typing import Any

from blobgate.server.storage.records import RecordEntry, record_ref
from blobgate.server.storage.s3.connection import S3Connection, get_whole
from blobgate.server.storage.s3.errors import s3_errors
from blobgate.server.storage.s3.metadata import bare_etag, quoted_etag
from blobgate.server.storage.s3.versions import delete_record, record_deleted, record_written


class S3Records:
    """Records as small objects of the bucket they are kept in."""

    def __init__(self, connection: S3Connection) -> None:
        self._connection = connection

    async def put(
        self, bucket: str, key: str, data: bytes, *, if_none_match: bool = False, if_match: str = ""
    ) -> str:
        ref = record_ref(bucket, key)
        conditions: dict[str, Any] = {}
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        if if_match:
            conditions["IfMatch"] = quoted_etag(if_match)
        with s3_errors(ref):
            response = await self._connection.client.put_object(
                Bucket=bucket, Key=key, Body=data, **conditions
            )
        await record_written(self._connection.client, bucket, key, response)
        return bare_etag(response.get("ETag", ""))

    async def get(self, bucket: str, key: str) -> bytes:
        ref = record_ref(bucket, key)
        with s3_errors(ref):
            data, _ = await get_whole(self._connection.client, bucket, key)
        return data

    async def delete(self, bucket: str, key: str, *, if_match: str = "") -> None:
        ref = record_ref(bucket, key)
        client = self._connection.client
        if if_match:
            answer = await self._connection.conditional_deletes.delete(client, ref, if_match)
            await record_deleted(client, bucket, key, answer)
            return
        await delete_record(client, bucket, key)

    async def list(self, bucket: str, prefix: str, limit: int) -> list[RecordEntry]:
        record_ref(bucket, prefix)
        with s3_errors(bucket=bucket):
            response = await self._connection.client.list_objects_v2(
                Bucket=bucket, Prefix=prefix, MaxKeys=limit
            )
        return [
            RecordEntry(item["Key"], item["LastModified"], bare_etag(item.get("ETag", "")))
            for item in response.get("Contents", [])
        ]
