"""Checksums on S3 without a second write or a second hash:
multipart uploads carry S3's full-object CRC32C (per part, and the whole
object's at completion); an undeclared sha256 goes to a record beside the
object, never to a copy of it; the record never describes an object that
replaced it; transfers go with an unsigned payload and the CRC32C header;
and ``s3_full_object_checksums = false`` keeps the old self-copy.

Everything runs against moto's S3 server and against LocalStack's, most of it
through the fault proxy, which records every request the gateway sends.
LocalStack checks what real S3 does (part and PutObject CRC32Cs, the
full-object CRC32C at completion: BadDigest), so there the corrupted part is
refused. What moto 5.2.5 checks: it
stores ``ChecksumAlgorithm``/``ChecksumType`` from CreateMultipartUpload and
at completion computes the whole object's CRC32C itself (HEAD with
``ChecksumMode=ENABLED`` returns it) with the ``crc32c`` package (a
dependency of the server too; without it moto would compute a plain CRC32
under that name). The tests' own reference is google_crc32c. It verifies
neither a part's CRC32C header
(UploadPart echoes it back), nor a PutObject's (ignored unless
``x-amz-sdk-checksum-algorithm`` comes with it, then stored as sent), nor
the full-object value sent with CompleteMultipartUpload (its answer carries
no checksum), nor, with its IAM auth off as here, a signature or a payload
hash (a PutObject with a wrong ``x-amz-content-sha256`` and a wrong CRC32C
is stored). So where real S3 would refuse corrupted bytes (BadDigest), the
moto runs show that the refusal's inputs are right and what the gateway
itself checks.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import google_crc32c
import grpc
import pytest
from botocore.exceptions import ClientError

from blobgate.client import BlobgateError, Client
from blobgate.server.core.errors import Unavailable
from blobgate.server.core.settings import Settings
from blobgate.server.storage.checksums import crc32c_to_s3
from blobgate.server.storage.factory import s3_config
from blobgate.server.storage.limits import ByteBudget
from blobgate.server.storage.protocols import (
    ContentChecksums,
    ObjectRef,
    PutOptions,
)
from blobgate.server.storage.s3.commit import complete_multipart, create_multipart
from blobgate.server.storage.s3.connection import S3Connection
from blobgate.server.storage.s3.errors import translate
from blobgate.server.storage.s3.janitor import sweep
from blobgate.server.storage.s3.sha256_records import RECORD_PREFIX, record_key
from blobgate.server.storage.s3.store import S3Store
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes.s3_fault_proxy import FaultProxy, Request, upload_part
from tests.support.gateways import gateway_settings
from tests.support.helpers import (
    PART,
    MiB,
    download,
    expect_status,
    http,
    payload,
    resume_requests,
    running_gateway,
    sha256,
    upload,
    upload_requests,
    wait_nothing_left,
)
from tests.support.sessions import interrupted

FLAG = "sha256-record"

pytestmark = pytest.mark.both_s3s


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(s3_endpoint) as fault_proxy:
        yield fault_proxy


Gw = tuple[Any, storage_pb2_grpc.StorageServiceStub, grpc.aio.Channel]


@pytest.fixture
async def proxied(proxy: FaultProxy, s3_endpoint: str, bucket: str) -> AsyncIterator[Gw]:
    settings = gateway_settings(s3_endpoint, bucket, s3_endpoint=proxy.url)
    async with running_gateway(settings) as parts:
        yield parts


def crc(data: bytes) -> str:
    return crc32c_to_s3(google_crc32c.value(data))


def requests(proxy: FaultProxy, match: Any) -> list[Request]:
    """The requests the proxy forwarded that ``match`` accepts, in order."""
    found: list[Request] = []
    proxy.seen(lambda r: bool(match(r)) and found.append(r) is None)
    return found


def copy_object(r: Request) -> bool:
    """CopyObject (the self-copy), not UploadPartCopy."""
    return r.method == "PUT" and "x-amz-copy-source" in r.headers and "uploadId" not in r.query


def create_upload(r: Request) -> bool:
    return r.method == "POST" and "uploads" in r.query


def complete_upload(r: Request) -> bool:
    return r.method == "POST" and "uploadId" in r.query


async def s3_checksum(s3: Any, bucket: str, key: str) -> tuple[str, str]:
    """The object's CRC32C and checksum type as S3 keeps them."""
    head = await s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    return head.get("ChecksumCRC32C", ""), head.get("ChecksumType", "")


async def stat(stub: storage_pb2_grpc.StorageServiceStub, key: str) -> storage_pb2.Object:
    response = await stub.Stat(storage_pb2.StatRequest(key=key), timeout=10)
    return response.object


# --- a multipart upload without a declared sha256 ---------------------------


async def test_an_undeclared_sha256_is_kept_without_copying_the_object(
    proxied: Gw, proxy: FaultProxy, s3: Any, bucket: str
) -> None:
    gateway, stub, _ = proxied
    blob = payload(2 * PART + 1234, seed=1)
    obj = await upload(gateway, "big.bin", blob, metadata={"owner": "ops"})
    assert obj.checksums.sha256 == sha256(blob)
    assert obj.checksums.crc32c == google_crc32c.value(blob)

    # No second write: S3 saw no CopyObject.
    assert requests(proxy, copy_object) == []
    # The upload was created for a full-object CRC32C...
    [create] = requests(proxy, create_upload)
    assert create.headers["x-amz-checksum-algorithm"] == "CRC32C"
    assert create.headers["x-amz-checksum-type"] == "FULL_OBJECT"
    assert create.headers[f"x-amz-meta-{FLAG}"]
    # ...each part went with its CRC32C and an unsigned payload (no hashing
    # by botocore)...
    parts = requests(proxy, upload_part)
    pieces = [blob[i : i + PART] for i in range(0, len(blob), PART)]
    assert [p.headers.get("x-amz-checksum-crc32c") for p in parts] == [crc(p) for p in pieces]
    assert {p.headers["x-amz-content-sha256"] for p in parts} == {"UNSIGNED-PAYLOAD"}
    # ...and the completion with the whole object's.
    [complete] = requests(proxy, complete_upload)
    assert complete.headers["x-amz-checksum-crc32c"] == crc(blob)
    assert complete.headers["x-amz-checksum-type"] == "FULL_OBJECT"
    assert await s3_checksum(s3, bucket, "big.bin") == (crc(blob), "FULL_OBJECT")

    # S3 holds the flag, not the sha256; a record holds the sha256.
    head = await s3.head_object(Bucket=bucket, Key="big.bin")
    assert "sha256" not in head["Metadata"] and FLAG in head["Metadata"]
    record = await s3.get_object(Bucket=bucket, Key=record_key("big.bin"))
    assert sha256(blob).hex() in (await record["Body"].read()).decode()

    # Stat and Download report it; the flag is not the caller's metadata.
    info = await stat(stub, "big.bin")
    assert info.checksums.sha256 == sha256(blob)
    assert info.checksums.crc32c == google_crc32c.value(blob)
    assert dict(info.metadata) == {"owner": "ops"}
    got = await download(stub, "big.bin")
    assert got.data == blob
    assert got.object.checksums.sha256 == sha256(blob)
    assert dict(got.object.metadata) == {"owner": "ops"}
    # The record is the gateway's, not a caller's object.
    listed = await stub.List(storage_pb2.ListRequest(), timeout=10)
    assert [o.key for o in listed.objects] == ["big.bin"]


async def test_a_declared_sha256_and_small_uploads_need_no_record(
    proxied: Gw, proxy: FaultProxy, s3: Any, bucket: str
) -> None:
    gateway, stub, _ = proxied
    blob = payload(PART + 10, seed=2)
    expected = storage_pb2.Checksums(sha256=sha256(blob))
    await upload(gateway, "declared.bin", blob, expected=expected)
    small = payload(1000, seed=3)
    await upload(gateway, "small.bin", small)
    listing = await s3.list_objects_v2(Bucket=bucket, Prefix=RECORD_PREFIX)
    assert listing.get("KeyCount", 0) == 0
    for key, data in (("declared.bin", blob), ("small.bin", small)):
        head = await s3.head_object(Bucket=bucket, Key=key)
        assert head["Metadata"]["sha256"] == sha256(data).hex()
        assert FLAG not in head["Metadata"]
        assert (await stat(stub, key)).checksums.sha256 == sha256(data)
    # The small upload's PutObject carried its CRC32C, unsigned.
    [put] = requests(proxy, lambda r: r.method == "PUT" and r.key == "small.bin")
    assert put.headers["x-amz-checksum-crc32c"] == crc(small)
    assert put.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert requests(proxy, copy_object) == []


# --- the record never describes another object -------------------------------


REPLACEMENTS = ["presigned-put", "put-object", "forged-flag", "small-upload", "big-upload", "copy"]


@pytest.mark.parametrize("path", REPLACEMENTS)
async def test_a_replaced_object_is_never_described_by_the_stale_record(
    gateway: Any, stub: storage_pb2_grpc.StorageServiceStub, s3: Any, bucket: str, path: str
) -> None:
    old = payload(2 * PART + 5, seed=4)
    await upload(gateway, "k.bin", old)
    assert (await stat(stub, "k.bin")).checksums.sha256 == sha256(old)
    tag = (await s3.head_object(Bucket=bucket, Key="k.bin"))["Metadata"][FLAG]

    new = payload(2 * PART + 5 if path in ("forged-flag", "big-upload") else 4000, seed=5)
    known = sha256(new)  # what a correct Stat may report; b"" when nothing is known
    if path == "presigned-put":
        signed = await stub.Presign(
            storage_pb2.PresignRequest(
                key="k.bin", method=storage_pb2.HTTP_METHOD_PUT, content_type="text/plain"
            ),
            timeout=10,
        )
        status, _ = await asyncio.to_thread(http, "PUT", signed.url, new, dict(signed.headers))
        assert status == 200
        known = b""
    elif path == "put-object":
        await s3.put_object(Bucket=bucket, Key="k.bin", Body=new)
        known = b""
    elif path == "forged-flag":  # the old object's very flag, same size, other bytes
        await s3.put_object(Bucket=bucket, Key="k.bin", Body=new, Metadata={FLAG: tag})
        known = b""
    elif path == "small-upload" or path == "big-upload":
        await upload(gateway, "k.bin", new)
    else:
        await upload(gateway, "other.bin", new)
        await stub.Copy(
            storage_pb2.CopyRequest(source_key="other.bin", destination_key="k.bin"), timeout=30
        )

    info = await stat(stub, "k.bin")
    assert info.checksums.sha256 == known
    assert info.checksums.sha256 != sha256(old)
    got = await download(stub, "k.bin")
    assert got.data == new
    assert got.object.checksums.sha256 == known


async def test_racing_uploads_of_one_key_never_borrow_each_others_sha256(
    gateway: Any, stub: storage_pb2_grpc.StorageServiceStub
) -> None:
    """Uploads of the same key that commit at nearly the same time each write
    their record: whichever object is left, Stat reports its sha256 or none,
    never the other upload's."""
    blobs = [payload(PART + 1, seed=20 + i) for i in range(4)]
    await asyncio.gather(*(upload(gateway, "raced.bin", blob) for blob in blobs))
    got = await download(stub, "raced.bin")
    assert got.data in blobs
    assert got.object.checksums.sha256 in (sha256(got.data), b"")
    assert (await stat(stub, "raced.bin")).checksums.sha256 in (sha256(got.data), b"")


async def test_the_python_client_reads_the_recorded_sha256(
    gateway: Any, s3: Any, bucket: str
) -> None:
    """Whole-object downloads asked to check the sha256 (verify_sha256) are
    checked against the record's: the exact bytes pass, a record that says
    another sha256 for them is DATA_LOSS. By default the client checks the
    object's CRC32C instead, which the record does not hold, so the same
    download passes."""
    blob = payload(PART + 100, seed=6)
    await upload(gateway, "read.bin", blob)
    address = f"127.0.0.1:{gateway.port}"
    async with Client(address, verify_sha256=True) as client:
        assert b"".join([c async for c in client.download("read.bin")]) == blob
        # A record that says another sha256 for this very object.
        key = record_key("read.bin")
        raw = (await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read()).decode()
        await s3.put_object(Bucket=bucket, Key=key, Body=raw.replace(sha256(blob).hex(), "00" * 32))
        with pytest.raises(BlobgateError) as caught:
            b"".join([c async for c in client.download("read.bin")])
        assert caught.value.code == grpc.StatusCode.DATA_LOSS
    async with Client(address) as client:
        assert b"".join([c async for c in client.download("read.bin")]) == blob


# --- copies ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["copy-object", "multipart-copy", "replace-metadata"])
async def test_a_copy_carries_the_recorded_sha256_itself(
    s3_endpoint: str, s3: Any, bucket: str, how: str
) -> None:
    threshold = 5 * MiB if how == "multipart-copy" else 5 * 1024 * MiB
    settings = gateway_settings(s3_endpoint, bucket, copy_threshold=threshold)
    async with running_gateway(settings) as (gateway, stub, _):
        blob = payload(2 * PART + 7, seed=7)
        await upload(gateway, "src.bin", blob, metadata={"a": "1"}, content_type="text/csv")
        source = await s3.head_object(Bucket=bucket, Key="src.bin")
        request = storage_pb2.CopyRequest(source_key="src.bin", destination_key="dst.bin")
        if how == "replace-metadata":
            request.replace_metadata = True
            request.metadata["b"] = "2"
        copied = (await stub.Copy(request, timeout=60)).object
        assert copied.checksums.sha256 == sha256(blob)
        head = await s3.head_object(Bucket=bucket, Key="dst.bin")
        # The copy holds its sha256 itself; the source's flag stayed behind.
        assert head["Metadata"]["sha256"] == sha256(blob).hex()
        assert FLAG not in head["Metadata"]
        expected = {"b": "2"} if how == "replace-metadata" else {"a": "1"}
        info = await stat(stub, "dst.bin")
        assert info.checksums.sha256 == sha256(blob)
        assert dict(info.metadata) == expected
        if how != "replace-metadata":
            assert info.content_type == "text/csv"
        # The ETag (moto, as S3 documents): a CopyObject gives the copy a
        # one-piece ETag (the MD5 of its bytes), a multipart copy of the same
        # part layout the source's very ETag (the same parts' MD5s). An ETag
        # says which bytes, never which write: the copy carries its sha256
        # itself rather than in a record.
        if how == "multipart-copy":
            assert head["ETag"] == source["ETag"]
        else:
            assert head["ETag"] != source["ETag"] and "-" not in head["ETag"]
        assert (await stat(stub, "src.bin")).checksums.sha256 == sha256(blob)


# --- the fallback: stores without full-object checksums -----------------------


async def test_without_full_object_checksums_the_upload_copies_itself(
    proxy: FaultProxy, s3_endpoint: str, s3: Any, bucket: str
) -> None:
    settings = gateway_settings(
        s3_endpoint, bucket, s3_endpoint=proxy.url, s3_full_object_checksums=False
    )
    async with running_gateway(settings) as (gateway, stub, _):
        blob = payload(2 * PART + 9, seed=8)
        await upload(gateway, "old.bin", blob)
        assert len(requests(proxy, copy_object)) == 1
        [create] = requests(proxy, create_upload)
        assert "x-amz-checksum-algorithm" not in create.headers
        parts = requests(proxy, upload_part)
        assert all("x-amz-checksum-crc32c" not in p.headers for p in parts)
        # botocore signs (hashes) the payload, as before.
        assert all(p.headers["x-amz-content-sha256"] != "UNSIGNED-PAYLOAD" for p in parts)
        head = await s3.head_object(Bucket=bucket, Key="old.bin")
        assert head["Metadata"]["sha256"] == sha256(blob).hex()
        assert FLAG not in head["Metadata"]
        assert (await stat(stub, "old.bin")).checksums.sha256 == sha256(blob)


# --- resumable sessions --------------------------------------------------------


async def _start(stub: storage_pb2_grpc.StorageServiceStub, key: str, **fields: Any) -> str:
    request = storage_pb2.StartResumableUploadRequest(
        spec=storage_pb2.UploadSpec(key=key, **fields)
    )
    return str((await stub.StartResumableUpload(request, timeout=10)).upload_id)


async def test_a_session_commits_with_the_full_object_crc32c_and_a_record(
    proxied: Gw, proxy: FaultProxy, s3: Any, bucket: str
) -> None:
    gateway, stub, _ = proxied
    blob = payload(3 * PART + 11, seed=9)
    upload_id = await _start(stub, "session.bin")
    # Two calls: the second resumes after the first's whole parts, so the
    # commit names parts stored by an earlier call (listed from S3).
    whole = await interrupted(stub, upload_id, blob, stop_at=2 * PART + MiB)
    assert whole == 2 * PART
    obj = await upload_requests(gateway, resume_requests(upload_id, whole, blob))
    assert obj.checksums.sha256 == sha256(blob)
    assert requests(proxy, copy_object) == []
    parts = requests(proxy, upload_part)
    assert parts and all("x-amz-checksum-crc32c" in p.headers for p in parts)
    [complete] = requests(proxy, complete_upload)
    assert complete.headers["x-amz-checksum-crc32c"] == crc(blob)
    assert await s3_checksum(s3, bucket, "session.bin") == (crc(blob), "FULL_OBJECT")
    assert (await stat(stub, "session.bin")).checksums.sha256 == sha256(blob)
    assert (await download(stub, "session.bin")).data == blob


async def test_a_session_with_a_declared_sha256_stores_it_in_metadata(
    gateway: Any, stub: storage_pb2_grpc.StorageServiceStub, s3: Any, bucket: str
) -> None:
    blob = payload(PART + 3, seed=10)
    upload_id = await _start(stub, "s2.bin", expected=storage_pb2.Checksums(sha256=sha256(blob)))
    await upload_requests(gateway, resume_requests(upload_id, 0, blob))
    head = await s3.head_object(Bucket=bucket, Key="s2.bin")
    assert head["Metadata"]["sha256"] == sha256(blob).hex() and FLAG not in head["Metadata"]
    assert await s3_checksum(s3, bucket, "s2.bin") == (crc(blob), "FULL_OBJECT")
    # An empty object through a session: its one empty part has a CRC32C too.
    empty_id = await _start(stub, "empty.bin")
    obj = await upload_requests(gateway, resume_requests(empty_id, 0, b""))
    assert obj.size == 0 and obj.checksums.sha256 == sha256(b"")
    assert (await stat(stub, "empty.bin")).checksums.sha256 == sha256(b"")


# --- stale records -------------------------------------------------------------


async def test_the_janitor_removes_only_stale_records(
    gateway: Any, s3_endpoint: str, s3: Any, bucket: str
) -> None:
    for key in ("kept.bin", "replaced.bin", "deleted.bin"):
        await upload(gateway, key, payload(PART + 1, seed=len(key)))
    await s3.put_object(Bucket=bucket, Key="replaced.bin", Body=b"other")
    await s3.delete_object(Bucket=bucket, Key="deleted.bin")
    settings = gateway_settings(s3_endpoint, bucket)
    async with S3Connection(s3_config(settings)) as connection:
        await sweep(connection, [bucket], timedelta(seconds=0))
    listing = await s3.list_objects_v2(Bucket=bucket, Prefix=RECORD_PREFIX)
    assert [o["Key"] for o in listing.get("Contents", [])] == [record_key("kept.bin")]


# --- bytes corrupted in flight ---------------------------------------------------


async def test_a_part_corrupted_in_flight_fails_the_checksums_s3_is_given(
    store_kind: str, proxied: Gw, proxy: FaultProxy, s3: Any, bucket: str
) -> None:
    """Over plain HTTP with an unsigned payload, the CRC32C header (signed)
    is what protects a part: the proxy flips a byte of the second part. The
    header still names the bytes the gateway sent, so S3, which checks it
    (LocalStack does), answers BadDigest: the upload is UNAVAILABLE (retry)
    and nothing is left. moto does not check it and stores the damaged bytes
    -- then its own CRC32C of the object differs from the one the gateway
    sent with the completion (which S3 also checks), and the recorded sha256
    still describes the bytes the gateway received, so a client's
    whole-object check catches it."""
    gateway, stub, _ = proxied
    blob = payload(2 * PART + 100, seed=11)
    proxy.corrupt_request(1000, match=lambda r: upload_part(r) and r.query["partNumber"] == ["2"])
    if store_kind == "localstack":
        error = await expect_status(
            grpc.StatusCode.UNAVAILABLE, upload(gateway, "flipped.bin", blob)
        )
        assert "corrupted in transit (BadDigest)" in str(error.details())
        await wait_nothing_left(s3, bucket, "flipped.bin")
    else:
        await upload(gateway, "flipped.bin", blob)
    parts = requests(proxy, upload_part)
    second = [p for p in parts if p.query["partNumber"] == ["2"]]
    assert second[0].headers["x-amz-checksum-crc32c"] == crc(blob[PART : 2 * PART])
    if store_kind == "localstack":
        return
    stored = await (await s3.get_object(Bucket=bucket, Key="flipped.bin"))["Body"].read()
    assert stored != blob and len(stored) == len(blob)
    assert crc(stored[PART : 2 * PART]) != second[0].headers["x-amz-checksum-crc32c"]
    [complete] = requests(proxy, complete_upload)
    assert (await s3_checksum(s3, bucket, "flipped.bin"))[0] != complete.headers[
        "x-amz-checksum-crc32c"
    ]
    assert (await stat(stub, "flipped.bin")).checksums.sha256 == sha256(blob) != sha256(stored)
    async with Client(f"127.0.0.1:{gateway.port}") as client:
        with pytest.raises(BlobgateError) as caught:
            b"".join([c async for c in client.download("flipped.bin")])
        assert caught.value.code == grpc.StatusCode.DATA_LOSS


async def test_a_stored_crc32c_other_than_the_gateways_fails_the_upload(
    s3_endpoint: str, s3: Any, bucket: str
) -> None:
    """Where S3 answers CompleteMultipartUpload with the CRC32C it stored (AWS
    does), the gateway compares it with its own; on a mismatch the object is
    removed and the upload is UNAVAILABLE. moto sends none, so a hook puts a
    wrong one in its answer."""
    settings = gateway_settings(s3_endpoint, bucket)
    async with S3Connection(s3_config(settings)) as connection:
        await connection.ensure_buckets([bucket])
        client = connection.transfers
        ref = ObjectRef(bucket, "lied.bin")
        options = PutOptions("application/octet-stream", {})
        blob = payload(1000, seed=12)
        upload_id = await create_multipart(client, ref, options, full_object=True)
        part = await client.upload_part(
            Bucket=bucket,
            Key=ref.key,
            UploadId=upload_id,
            PartNumber=1,
            Body=blob,
            ChecksumCRC32C=crc(blob),
        )

        def lie(parsed: dict[str, Any], **_: Any) -> None:
            parsed["ChecksumCRC32C"] = crc(b"other bytes")
            parsed["ChecksumType"] = "FULL_OBJECT"

        client.meta.events.register("after-call.s3.CompleteMultipartUpload", lie)
        sums = ContentChecksums(sha256(blob), google_crc32c.value(blob))
        parts = [{"PartNumber": 1, "ETag": part["ETag"], "ChecksumCRC32C": crc(blob)}]
        with pytest.raises(Unavailable, match="CRC32C mismatch"):
            await complete_multipart(
                client, ref, upload_id, parts, options, sums, len(blob), full_object=True
            )
        listing = await s3.list_objects_v2(Bucket=bucket, Prefix="lied.bin")
        assert listing.get("KeyCount", 0) == 0


# --- HTTPS: the same headers, no payload hash ------------------------------------


class _Captured(Exception):
    pass


async def test_over_https_parts_go_unsigned_with_their_crc32c() -> None:
    """botocore signs payloads over plain HTTP unless told not to, and over
    HTTPS unless it computed the checksum itself: with the setting on, the
    transfers client sends UNSIGNED-PAYLOAD with the gateway's CRC32C header
    on HTTPS as on HTTP (TLS then also guards the bytes in flight). The
    request is captured before it is sent (no HTTPS S3 here)."""
    settings = Settings(
        s3_endpoint="https://s3.blobgate.invalid",
        s3_region="us-east-1",
        part_size=5 * MiB,
        s3_max_attempts=1,
    )
    captured: list[Any] = []

    def capture(request: Any, **_: Any) -> None:
        captured.append(request)
        raise _Captured

    async with S3Connection(s3_config(settings)) as connection:
        connection.transfers.meta.events.register("before-send.s3", capture)
        store = S3Store(connection, ByteBudget(64 * MiB))
        blob = payload(3000, seed=13)

        async def body() -> AsyncIterator[bytes]:
            yield blob

        with pytest.raises(_Captured):
            await store.put(ObjectRef("b", "k"), body(), PutOptions("text/plain", {}))
    [request] = captured
    assert request.url.startswith("https://")
    headers = {name.lower(): value for name, value in request.headers.items()}
    headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in headers.items()}
    assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    value = headers["x-amz-checksum-crc32c"]
    assert value == crc(blob)
    assert base64.b64decode(value) == google_crc32c.value(blob).to_bytes(4, "big")
    # The checksum header is signed: changing it breaks the signature.
    signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
    assert "x-amz-checksum-crc32c" in signed.split(";")


def test_s3_refusing_corrupted_bytes_is_unavailable() -> None:
    """S3's answer to bytes that fail the checksum sent with them (BadDigest)
    is retryable: the next attempt sends the bytes again."""
    error = ClientError({"Error": {"Code": "BadDigest", "Message": "x"}}, "UploadPart")
    translated = translate(error, ObjectRef("b", "k.bin"), "b")
    assert isinstance(translated, Unavailable)
    assert "corrupted in transit" in str(translated)
