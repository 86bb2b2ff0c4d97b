"""S3's timestamps parse without dateutil (``storage.s3.timestamps``) to the
very instants botocore's own parser gives, and the gateway's S3 clients use
that parser: a ListParts of many parts, as a direct commit reads it, gives
the same dates either way."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aioboto3
import pytest
from botocore.utils import parse_timestamp as botocore_parse_timestamp

from blobgate.server.storage.factory import s3_config
from blobgate.server.storage.s3.connection import S3Connection
from blobgate.server.storage.s3.timestamps import parse_timestamp
from tests.support.gateways import gateway_settings

AWS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

SAMPLES = [
    "2026-12-07T03:22:10.000Z",  # S3's form
    "2026-12-07T03:22:10Z",
    "2026-12-07T03:22:10.123456Z",
    "2010-02-28T23:59:59.9Z",
    "2026-12-07T03:22:10+02:00",  # the rest: botocore's parser
    "2026-12-07T03:22:10",
    "Mon, 07 Dec 2026 03:22:10 GMT",
    "1765077730",
    1765077730,
    1765077730.5,
]


@pytest.mark.parametrize("value", SAMPLES)
def test_the_same_instant_as_botocores_parser(value: Any) -> None:
    ours, theirs = parse_timestamp(value), botocore_parse_timestamp(value)
    assert ours == theirs
    assert (ours.tzinfo is None) == (theirs.tzinfo is None)
    if ours.tzinfo is not None:
        assert ours.utcoffset() == theirs.utcoffset()


def test_s3s_form_is_parsed_as_utc() -> None:
    parsed = parse_timestamp("2026-12-07T03:22:10.250Z")
    assert parsed == datetime(2026, 12, 7, 3, 22, 10, 250000, tzinfo=UTC)


async def test_the_gateways_clients_parse_listed_dates(moto_endpoint: str, bucket: str) -> None:
    """Its clients use the parser (their endpoint's parser factory has it), and list
    the same dates as a plain botocore client does."""
    settings = gateway_settings(moto_endpoint, bucket)
    async with S3Connection(s3_config(settings)) as connection:
        await connection.ensure_buckets([bucket])
        client = connection.client
        for used in (client, connection.transfers):
            # The endpoint's factory makes the parser of every response.
            factory = used._endpoint._response_parser_factory  # type: ignore[attr-defined]
            assert factory._defaults["timestamp_parser"] is parse_timestamp
        created = await client.create_multipart_upload(Bucket=bucket, Key="dates.bin")
        upload_id = created["UploadId"]
        listing = {"Bucket": bucket, "Key": "dates.bin", "UploadId": upload_id}
        try:
            for number in (1, 2, 3):
                await client.upload_part(**listing, PartNumber=number, Body=b"x")  # type: ignore[arg-type]
            ours = await client.list_parts(**listing)  # type: ignore[arg-type]
            plain = aioboto3.Session(**AWS)
            async with plain.client(
                "s3", endpoint_url=moto_endpoint, region_name="us-east-1"
            ) as s3:
                theirs = await s3.list_parts(**listing)
        finally:
            await client.abort_multipart_upload(**listing)  # type: ignore[arg-type]
    dates = [part["LastModified"] for part in ours["Parts"]]
    assert len(dates) == 3 and all(date.tzinfo is not None for date in dates)
    assert dates == [part["LastModified"] for part in theirs["Parts"]]
