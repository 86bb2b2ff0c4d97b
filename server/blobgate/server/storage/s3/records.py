"""The gateway's own records in S3 (``protocols.Records``: quota markers, the
page-token key), over the connection's control pool, as the session records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from blobgate.server.storage.protocols import record_ref
from blobgate.server.storage.s3.connection import S3Connection, get_whole
from blobgate.server.storage.s3.errors import s3_errors
from blobgate.server.storage.s3.versions import delete_record, record_written


class S3Records:
    """Records as small objects of the bucket they are kept in."""

    def __init__(self, connection: S3Connection) -> None:
        self._connection = connection

    async def put(self, bucket: str, key: str, data: bytes, *, if_none_match: bool = False) -> None:
        ref = record_ref(bucket, key)
        conditions: dict[str, Any] = {"IfNoneMatch": "*"} if if_none_match else {}
        with s3_errors(ref):
            response = await self._connection.client.put_object(
                Bucket=bucket, Key=key, Body=data, **conditions
            )
        await record_written(self._connection.client, bucket, key, response)

    async def get(self, bucket: str, key: str) -> bytes:
        ref = record_ref(bucket, key)
        with s3_errors(ref):
            data, _ = await get_whole(self._connection.client, bucket, key)
        return data

    async def delete(self, bucket: str, key: str) -> None:
        record_ref(bucket, key)
        await delete_record(self._connection.client, bucket, key)

    async def list(self, bucket: str, prefix: str, limit: int) -> list[tuple[str, datetime]]:
        record_ref(bucket, prefix)
        with s3_errors(bucket=bucket):
            response = await self._connection.client.list_objects_v2(
                Bucket=bucket, Prefix=prefix, MaxKeys=limit
            )
        return [(item["Key"], item["LastModified"]) for item in response.get("Contents", [])]
