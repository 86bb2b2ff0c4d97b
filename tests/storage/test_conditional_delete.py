"""Conditional delete (DeleteObject with If-Match) on a store that has it
(moto, AWS since 2025-09) and on one that answers 501 NotImplemented
(LocalStack's S3).

Every path that deletes on a condition must work on both: Delete with
``if_match``, the CLI's ``mv`` (which deletes its source on the ETag it
copied), the janitor's sweep of stale sha256 records, and the removal of an
object whose stored CRC32C is not the gateway's. ``s3_conditional_delete``
chooses between S3's If-Match (``native``), a HEAD then a plain delete
(``emulate``), or the first, falling back to the second in a bucket whose
store answered NotImplemented once (``auto``, the default)."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import google_crc32c
import grpc
import pytest
from botocore.exceptions import ClientError

from blobgate.server.app import Gateway, start_gateway
from blobgate.server.core.errors import Unimplemented
from blobgate.server.rpc.status_codes import code_for
from blobgate.server.storage.factory import s3_config
from blobgate.server.storage.protocols import ObjectRef
from blobgate.server.storage.s3.connection import S3Connection
from blobgate.server.storage.s3.errors import translate
from blobgate.server.storage.s3.janitor import sweep
from blobgate.server.storage.s3.sha256_records import RECORD_PREFIX, record_key
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.support.cli import run_cli
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import PART, expect_status, payload, upload

Code = grpc.StatusCode


# Every test runs on moto (S3's If-Match) and on LocalStack (501 NotImplemented).
pytestmark = pytest.mark.both_s3s


async def exists(s3: Any, bucket: str, key: str) -> bool:
    listing = await s3.list_objects_v2(Bucket=bucket, Prefix=key)
    return key in [o["Key"] for o in listing.get("Contents", [])]


async def stored(s3: Any, bucket: str, key: str) -> bytes:
    response = await s3.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as body:
        return bytes(await body.read())


async def delete(
    stub: storage_pb2_grpc.StorageServiceStub, key: str, if_match: str = ""
) -> storage_pb2.DeleteResponse:
    request = storage_pb2.DeleteRequest(key=key, if_match=if_match)
    response: storage_pb2.DeleteResponse = await stub.Delete(request, timeout=10)
    return response


def conditional_deletes_sent(gateway: Gateway) -> list[bool]:
    """Record, for each DeleteObject the gateway sends, whether it carries
    If-Match (botocore's own event on the gateway's S3 clients)."""
    sent: list[bool] = []
    connection = gateway.storage.backend.connection  # type: ignore[attr-defined]

    def record(params: Any, **_: Any) -> None:
        sent.append("IfMatch" in params)

    for client in (connection.client, connection.transfers):
        client.meta.events.register("before-parameter-build.s3.DeleteObject", record)
    return sent


async def test_delete_with_if_match(
    gateway: Gateway, stub: storage_pb2_grpc.StorageServiceStub, s3: Any, bucket: str
) -> None:
    blob = payload(3000, seed=31)
    etag = (await upload(gateway, "guarded.bin", blob)).etag
    await expect_status(Code.FAILED_PRECONDITION, delete(stub, "guarded.bin", "0" * 32))
    assert await stored(s3, bucket, "guarded.bin") == blob
    await delete(stub, "guarded.bin", etag)
    assert not await exists(s3, bucket, "guarded.bin")
    error = await expect_status(Code.FAILED_PRECONDITION, delete(stub, "guarded.bin", etag))
    assert (error.details() or "") == "the object does not match if_match"  # nor says why


@pytest.mark.slow
async def test_mv_removes_its_source(gateway: Gateway, s3: Any, bucket: str) -> None:
    """The CLI's mv: copied on the source's ETag, then the source deleted on
    it; the destination holds exactly the source's bytes."""
    blob = payload(70_000, seed=32)
    await upload(gateway, "docs/a.txt", blob)
    result = await run_cli("--server", f"127.0.0.1:{gateway.port}", "mv", "docs/a.txt", "moved/")
    assert result.returncode == 0, result.stderr
    assert "mv docs/a.txt -> " in result.text
    assert not await exists(s3, bucket, "docs/a.txt")
    assert await stored(s3, bucket, "moved/a.txt") == blob


async def test_the_janitor_removes_a_stale_sha256_record(
    gateway: Gateway, s3_endpoint: str, s3: Any, bucket: str
) -> None:
    """Records of objects replaced behind the gateway's back are stale; the
    janitor deletes each on the ETag it read, and keeps a live one."""
    for seed, key in enumerate(("kept.bin", "replaced.bin")):
        await upload(gateway, key, payload(PART + 1, seed=seed))  # no sha256 declared: a record
    await s3.put_object(Bucket=bucket, Key="replaced.bin", Body=b"other")
    async with S3Connection(s3_config(gateway_settings(s3_endpoint, bucket))) as connection:
        await sweep(connection, [bucket], timedelta(seconds=0))
    listing = await s3.list_objects_v2(Bucket=bucket, Prefix=RECORD_PREFIX)
    assert [o["Key"] for o in listing.get("Contents", [])] == [record_key("kept.bin")]


async def test_an_object_s3_stored_with_another_crc32c_is_removed(
    gateway: Gateway, s3: Any, bucket: str
) -> None:
    """Where S3's answer to the completion names a CRC32C other than the
    gateway's, the gateway removes the object (on its ETag) and answers
    UNAVAILABLE. Neither S3 here gets the bytes wrong, so a hook on the
    gateway's client changes S3's answer: the one fault no real part makes."""
    transfers = gateway.storage.backend.connection.transfers  # type: ignore[attr-defined]

    def lie(parsed: dict[str, Any], **_: Any) -> None:
        wrong = google_crc32c.value(b"other bytes").to_bytes(4, "big")
        parsed["ChecksumCRC32C"] = base64.b64encode(wrong).decode()
        parsed["ChecksumType"] = "FULL_OBJECT"

    transfers.meta.events.register("after-call.s3.CompleteMultipartUpload", lie)
    error = await expect_status(
        Code.UNAVAILABLE, upload(gateway, "lied.bin", payload(PART + 10, seed=33))
    )
    assert "CRC32C mismatch" in (error.details() or "")
    assert not await exists(s3, bucket, "lied.bin")


@pytest.mark.parametrize("mode", ["auto", "native", "emulate"])
async def test_each_mode_on_each_store(
    s3_endpoint: str, store_kind: str, s3: Any, bucket: str, mode: str
) -> None:
    """Two Deletes with ``if_match``: which of them send If-Match, and what
    they answer. ``auto`` learns once per bucket that a store lacks it;
    ``native`` on such a store is UNIMPLEMENTED and deletes nothing;
    ``emulate`` never sends it."""
    settings = gateway_settings(s3_endpoint, bucket, s3_conditional_delete=mode)
    gw = await start_gateway(settings)
    try:
        sent = conditional_deletes_sent(gw)
        etags = [(await upload(gw, f"k{i}.bin", payload(100, seed=i))).etag for i in (0, 1)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            if mode == "native" and store_kind == "localstack":
                for i, etag in enumerate(etags):
                    error = await expect_status(Code.UNIMPLEMENTED, delete(stub, f"k{i}.bin", etag))
                    assert "If-Match" in (error.details() or "")
                    assert "s3_conditional_delete" in (error.details() or "")
                    assert await exists(s3, bucket, f"k{i}.bin")
                assert sent == [True, True]
                # mv copies, then says why its source stays (not "it changed").
                moved = await run_cli("--server", f"127.0.0.1:{gw.port}", "mv", "k0.bin", "m.bin")
                assert moved.returncode == 1
                assert "k0.bin was not deleted: this S3 store does not support" in moved.stderr
                assert "changed or went away" not in moved.stderr
                assert await exists(s3, bucket, "k0.bin") and await exists(s3, bucket, "m.bin")
                return
            for i, etag in enumerate(etags):
                await delete(stub, f"k{i}.bin", etag)
                assert not await exists(s3, bucket, f"k{i}.bin")
    finally:
        await stop_gateway(gw)
    expected = {
        ("auto", "moto"): [True, True],
        ("auto", "localstack"): [True, False, False],  # refused, then a plain delete
        ("native", "moto"): [True, True],
        ("emulate", "moto"): [False, False],
        ("emulate", "localstack"): [False, False],
    }
    assert sent == expected[(mode, store_kind)]


def test_not_implemented_is_unimplemented_and_says_what() -> None:
    """Any NotImplemented from S3 is UNIMPLEMENTED, naming the header S3
    does not support where it names one."""
    answer = {"Error": {"Code": "NotImplemented", "Message": "no", "Header": "If-Match"}}
    translated = translate(ClientError(answer, "DeleteObject"), ObjectRef("b", "k"), "b")
    assert isinstance(translated, Unimplemented)
    assert "does not support the header If-Match" in translated.message
    assert code_for(translated) == Code.UNIMPLEMENTED
    bare = ClientError({"Error": {"Code": "NotImplemented"}}, "PutObject")
    assert "does not support a feature" in translate(bare, None, "b").message
