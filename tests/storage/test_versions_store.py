"""A versioned bucket after every kind of write through the gateway keeps
exactly the versions the caller made: one per upload (small, multipart,
resumable, a copy), a delete marker per Delete, none for a cancelled
session; and the gateway's own records (session records, sha256 records,
the page-token key) leave no earlier versions and no delete markers. With
full-object checksums and without (where the checksums are attached by a
copy of the object onto itself, whose first version must go), on both S3s."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from blobgate.server.app import start_gateway
from blobgate.server.storage.protocols import RESERVED_PREFIX
from blobgate.server.storage.s3.conditional_delete import ConditionalDeletes
from blobgate.server.storage.s3.sha256_records import RECORD_PREFIX, sweep_records
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import MiB, payload, resume_requests, upload, upload_requests

pb = storage_pb2

pytestmark = pytest.mark.both_s3s


async def kept(s3: Any, bucket: str) -> tuple[Counter[str], Counter[str]]:
    """How many versions, and how many delete markers, S3 keeps per key."""
    versions: Counter[str] = Counter()
    markers: Counter[str] = Counter()
    kwargs: dict[str, Any] = {"Bucket": bucket}
    while True:
        page = await s3.list_object_versions(**kwargs)
        versions.update(v["Key"] for v in page.get("Versions", []))
        markers.update(m["Key"] for m in page.get("DeleteMarkers", []))
        if not page.get("IsTruncated"):
            return versions, markers
        kwargs["KeyMarker"] = page["NextKeyMarker"]
        kwargs["VersionIdMarker"] = page["NextVersionIdMarker"]


@pytest.mark.parametrize("full_object", [True, False], ids=["full-object", "self-copy"])
async def test_every_write_leaves_only_the_versions_it_made(
    s3_endpoint: str, bucket: str, s3: Any, full_object: bool
) -> None:
    settings = gateway_settings(
        s3_endpoint, bucket, bucket_versioning=True, s3_full_object_checksums=full_object
    )
    gateway = await start_gateway(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            small = await upload(gateway, "small", b"small object")
            big = payload(6 * MiB, seed=1)
            multipart = await upload(gateway, "multipart", big)  # no sha256 declared
            declared = await upload(
                gateway, "declared", big, expected=pb.Checksums(sha256=hashlib.sha256(big).digest())
            )
            await upload(gateway, "multipart", payload(6 * MiB, seed=2))  # a second version

            blob = payload(11 * MiB, seed=3)  # three parts: the record is rewritten
            started = await stub.StartResumableUpload(
                pb.StartResumableUploadRequest(spec=pb.UploadSpec(key="resumed")), timeout=30
            )
            resumed = await upload_requests(gateway, resume_requests(started.upload_id, 0, blob))
            cancelled = await stub.StartResumableUpload(
                pb.StartResumableUploadRequest(spec=pb.UploadSpec(key="cancelled")), timeout=30
            )
            await stub.CancelResumableUpload(
                pb.CancelResumableUploadRequest(upload_id=cancelled.upload_id), timeout=30
            )
            copied = await stub.Copy(
                pb.CopyRequest(source_key="multipart", destination_key="copy"), timeout=30
            )
            await stub.Delete(pb.DeleteRequest(key="small"), timeout=30)
            await stub.List(pb.ListRequest(page_size=1), timeout=30)  # the page-token key
    finally:
        await stop_gateway(gateway)

    versions, markers = await kept(s3, bucket)
    mine = {key: count for key, count in versions.items() if not key.startswith(RESERVED_PREFIX)}
    assert mine == {"small": 1, "multipart": 2, "declared": 1, "resumed": 1, "copy": 1}
    assert dict(markers) == {"small": 1}
    records = {key: count for key, count in versions.items() if key.startswith(RESERVED_PREFIX)}
    assert records, "the page-token key at least"
    assert set(records.values()) == {1}, records  # no record keeps an earlier version
    assert not [key for key in records if "session" in key], records
    # Every version the calls returned is the one S3 keeps.
    for written in (small, multipart, declared, resumed, copied.object):
        assert written.version_id
    head = await s3.head_object(Bucket=bucket, Key="resumed")
    assert head["VersionId"] == resumed.version_id
    assert (await s3.head_object(Bucket=bucket, Key="copy"))["VersionId"] == (
        copied.object.version_id
    )


async def test_a_stale_sha256_record_swept_leaves_no_version(
    s3_endpoint: str, bucket: str, s3: Any
) -> None:
    """The janitor's removal of a sha256 record whose object was replaced
    (a conditional delete) removes its every version, the marker too."""
    gateway = await start_gateway(gateway_settings(s3_endpoint, bucket, bucket_versioning=True))
    try:
        await upload(gateway, "big", payload(6 * MiB, seed=4))  # its sha256 goes to a record
        versions, _ = await kept(s3, bucket)
        [record] = [key for key in versions if key.startswith(RECORD_PREFIX)]
        await upload(gateway, "big", b"small now")  # the record is stale
    finally:
        await stop_gateway(gateway)
    later = datetime.now(UTC) + timedelta(hours=1)
    deleted, _ = await sweep_records(s3, bucket, later, 100, deletes=ConditionalDeletes())
    assert deleted == 1
    versions, markers = await kept(s3, bucket)
    assert record not in versions and record not in markers
    assert versions["big"] == 2 and not markers
