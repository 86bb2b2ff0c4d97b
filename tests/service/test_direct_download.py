"""Direct downloads (DownloadRequest.direct, the direct_transfers setting):
the gateway authorizes the read, describes the object and hands out a
presigned GET that a plain HTTP client uses, on moto and on LocalStack
(which checks the URL's signature and its signed headers, as AWS does)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import urllib.error
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest

from blobgate.server.app import Gateway
from blobgate.server.core.access_policy import AccessPolicy
from blobgate.server.core.errors import PermissionDenied
from blobgate.server.core.identity import acting_as
from blobgate.server.storage.authorization import AuthorizedStore
from blobgate.server.storage.memory.store import MemoryStore
from blobgate.server.storage.protocols import ByteRange, ObjectRef
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.service.test_audit import every_formatted_line
from tests.support.gateways import gateway_settings
from tests.support.helpers import (
    download,
    expect_status,
    http,
    lines_of,
    payload,
    running_gateway,
    upload,
)

pb = storage_pb2
Code = grpc.StatusCode
LIFETIME = 90


@pytest.fixture
async def direct_gateway(
    s3_endpoint: str, bucket: str
) -> AsyncIterator[tuple[Gateway, storage_pb2_grpc.StorageServiceStub]]:
    settings = gateway_settings(
        s3_endpoint, bucket, direct_transfers=True, direct_url_lifetime=LIFETIME
    )
    async with running_gateway(settings) as (gw, stub, _):
        yield gw, stub


async def direct_answer(
    stub: storage_pb2_grpc.StorageServiceStub, key: str, **fields: Any
) -> list[storage_pb2.DownloadResponse]:
    call = stub.Download(pb.DownloadRequest(key=key, direct=True, **fields), timeout=20)
    return [message async for message in call]


async def fetch(direct: storage_pb2.DirectDownload) -> tuple[int, bytes]:
    """GET the URL with exactly the headers given; an HTTP error's status."""
    try:
        return await asyncio.to_thread(http, "GET", direct.url, headers=dict(direct.headers))
    except urllib.error.HTTPError as exc:
        return exc.code, b""


@pytest.mark.both_s3s
async def test_the_answer_is_the_object_then_a_url_that_serves_its_bytes(
    direct_gateway: Any,
) -> None:
    gw, stub = direct_gateway
    blob = payload(300_000, seed=11)
    stored = await upload(gw, "d/whole.bin", blob)
    before = time.time()
    messages = await direct_answer(stub, "d/whole.bin")
    assert [m.WhichOneof("message") for m in messages] == ["object", "direct"]
    info, direct = messages[0].object, messages[1].direct
    assert info.size == len(blob) and info.etag == stored.etag
    assert info.checksums.sha256 == hashlib.sha256(blob).digest()
    assert info.checksums.HasField("crc32c")
    assert abs(direct.expires_at.ToSeconds() - (before + LIFETIME)) <= 5
    assert dict(direct.headers) == {"If-Match": f'"{stored.etag}"'}  # pinned, whole object
    status, body = await fetch(direct)
    assert status == 200
    assert body == blob


@pytest.mark.both_s3s
@pytest.mark.parametrize(
    ("offset", "limit", "first", "last"),
    [(1000, 0, 1000, 4999), (100, 50, 100, 149), (-300, 0, 4700, 4999), (-300, 10, 4700, 4709)],
    ids=["offset", "offset-limit", "suffix", "suffix-limit"],
)
async def test_a_range_becomes_the_signed_range_header(
    direct_gateway: Any, offset: int, limit: int, first: int, last: int
) -> None:
    gw, stub = direct_gateway
    blob = payload(5000, seed=12)
    await upload(gw, "d/ranged.bin", blob)
    messages = await direct_answer(stub, "d/ranged.bin", offset=offset, limit=limit)
    direct = messages[1].direct
    assert direct.headers["Range"] == f"bytes={first}-{last}"
    assert messages[0].object.size == len(blob)  # the whole object's description
    status, body = await fetch(direct)
    assert status == 206
    assert body == blob[first : last + 1]


@pytest.mark.both_s3s
async def test_an_object_replaced_after_the_answer_is_refused_by_s3(direct_gateway: Any) -> None:
    gw, stub = direct_gateway
    await upload(gw, "d/changing.bin", payload(4000, seed=13))
    messages = await direct_answer(stub, "d/changing.bin")
    await upload(gw, "d/changing.bin", payload(4000, seed=14))  # same size, other bytes
    status, body = await fetch(messages[1].direct)
    assert status == 412  # the URL pins the ETag described
    assert body == b""


async def test_if_match_is_checked_before_any_url_is_handed_out(direct_gateway: Any) -> None:
    gw, stub = direct_gateway
    stored = await upload(gw, "d/tagged.bin", b"tagged")
    await expect_status(
        Code.FAILED_PRECONDITION, direct_answer(stub, "d/tagged.bin", if_match="not-the-etag")
    )
    messages = await direct_answer(stub, "d/tagged.bin", if_match=stored.etag)
    assert messages[1].direct.headers["If-Match"] == f'"{stored.etag}"'


async def test_missing_keys_and_ranges_past_the_end_keep_their_statuses(
    direct_gateway: Any,
) -> None:
    gw, stub = direct_gateway
    await upload(gw, "d/short.bin", b"12345")
    await expect_status(Code.NOT_FOUND, direct_answer(stub, "d/absent.bin"))
    await expect_status(Code.OUT_OF_RANGE, direct_answer(stub, "d/short.bin", offset=6))
    await expect_status(Code.INVALID_ARGUMENT, direct_answer(stub, "d/short.bin", limit=-1))


async def test_reads_of_no_bytes_are_answered_by_the_gateway(direct_gateway: Any) -> None:
    gw, stub = direct_gateway
    await upload(gw, "d/empty.bin", b"")
    await upload(gw, "d/five.bin", b"12345")
    for key, fields in (("d/empty.bin", {}), ("d/five.bin", {"offset": 5})):
        messages = await direct_answer(stub, key, **fields)
        assert [m.WhichOneof("message") for m in messages] == ["object"]


async def test_a_stub_that_does_not_ask_sees_no_change(direct_gateway: Any) -> None:
    gw, stub = direct_gateway
    blob = payload(2 * 1024 * 1024 + 5, seed=15)
    await upload(gw, "d/plain.bin", blob)
    got = await download(stub, "d/plain.bin")
    assert got.data == blob


async def test_with_direct_transfers_off_a_direct_request_gets_the_bytes(
    gateway: Gateway, stub: storage_pb2_grpc.StorageServiceStub
) -> None:
    blob = payload(1_500_000, seed=16)
    await upload(gateway, "d/proxied.bin", blob)
    got = await download(stub, "d/proxied.bin", direct=True)
    assert got.data == blob


async def test_urls_name_the_public_endpoint(s3_endpoint: str, bucket: str) -> None:
    public = "http://s3.public.example:9000"
    settings = gateway_settings(
        s3_endpoint, bucket, direct_transfers=True, s3_public_endpoint=public
    )
    async with running_gateway(settings) as (gw, stub, _):
        await upload(gw, "d/public.bin", b"public bytes")
        messages = await direct_answer(stub, "d/public.bin")
    url = urlsplit(messages[1].direct.url)
    assert f"{url.scheme}://{url.netloc}" == public


async def test_direct_reads_are_logged_as_such_and_their_urls_never(
    direct_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gw, stub = direct_gateway
    await upload(gw, "d/logged.bin", payload(7000, seed=17))
    messages = await direct_answer(stub, "d/logged.bin", offset=1000)
    await download(stub, "d/logged.bin")  # proxied: no audit line
    await asyncio.sleep(0.2)  # lines are written once each call is over
    access = [line for line in lines_of(caplog, "blobgate.access") if line["method"] == "Download"]
    assert [(line.get("direct"), line.get("direct_bytes")) for line in access] == [
        (True, 6000),
        (None, None),
    ]
    assert access[0]["bytes_out"] == 0
    audit = [line for line in lines_of(caplog, "blobgate.audit") if line["method"] == "Download"]
    assert len(audit) == 1
    assert audit[0]["action"] == "read" and audit[0]["direct"] is True
    assert audit[0]["bytes"] == 6000 and audit[0]["outcome"] == "OK"
    assert audit[0]["expires_at"]
    signature = urlsplit(messages[1].direct.url).query.rpartition("X-Amz-Signature=")[2]
    assert len(signature) == 64
    # botocore's own DEBUG lines hold signatures: the server never lets
    # them through (server.logs); blobgate's lines, in either format, never do.
    assert not any(signature in line for line in every_formatted_line(caplog))


async def test_a_direct_read_needs_the_read_right_and_no_other(tmp_path: Path) -> None:
    """The direct read is a read: ``read`` suffices (no ``presign``), and
    without it nothing is handed out."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[[grant]]\nprincipals = ["reader"]\nbuckets = ["b"]\nprefixes = ["r/"]\n'
        'actions = ["read"]\n'
    )
    store = MemoryStore(["b"])
    authorized = AuthorizedStore(store, AccessPolicy(policy))
    with acting_as("reader"):
        assert await authorized.direct_read(ObjectRef("b", "r/x"), ByteRange(), "", 60) is None
        with pytest.raises(PermissionDenied, match="caller 'reader' may not read this key"):
            await authorized.direct_read(ObjectRef("b", "s/x"), ByteRange(), "", 60)
    with acting_as("stranger"), pytest.raises(PermissionDenied, match="may not read"):
        await authorized.direct_read(ObjectRef("b", "r/x"), ByteRange(), "", 60)


async def test_over_the_wire_read_suffices_and_no_read_hands_out_nothing(
    tmp_path: Path, moto_endpoint: str, bucket: str
) -> None:
    """bob may read public/ (no presign right): a direct read there works;
    on reports/ he has no right: PERMISSION_DENIED and no message at all."""
    from tests.service.test_authorization import Realm, running

    realm = Realm("jwt", tmp_path)
    try:
        async with running(realm, moto_endpoint, bucket, direct_transfers=True) as gw:
            alice = realm.caller(gw.port, "alice")
            bob = realm.caller(gw.port, "bob")
            mallory = realm.caller(gw.port, "mallory")
            await alice.upload("reports/r.bin", b"for alice")
            await mallory.upload("public/p.bin", b"for anyone")
            received: list[storage_pb2.DownloadResponse] = []

            async def read(key: str) -> None:
                request = pb.DownloadRequest(key=key, direct=True)
                call = bob.stub.Download(request, metadata=bob.metadata, timeout=10)
                async for message in call:
                    received.append(message)

            await expect_status(Code.PERMISSION_DENIED, read("reports/r.bin"))
            assert received == []
            await read("public/p.bin")
            assert [m.WhichOneof("message") for m in received] == ["object", "direct"]
            status, body = await fetch(received[1].direct)
            assert (status, body) == (200, b"for anyone")
    finally:
        await realm.close()


async def test_metrics_count_direct_reads_apart(s3_endpoint: str, bucket: str) -> None:
    from tests.server.test_metrics import delta, scrape

    settings = gateway_settings(
        s3_endpoint, bucket, direct_transfers=True, metrics_listen="127.0.0.1:0"
    )
    async with running_gateway(settings) as (gw, stub, _):
        await upload(gw, "d/metered.bin", payload(5000, seed=18))
        before, _ = await scrape(gw.metrics_port)
        await direct_answer(stub, "d/metered.bin", offset=1000)
        await download(stub, "d/metered.bin")
        after, _ = await scrape(gw.metrics_port)
    assert delta(before, after, "blobgate_direct_reads_total", bucket=bucket) == 1
    assert delta(before, after, "blobgate_direct_read_bytes_total", bucket=bucket) == 4000
    assert delta(before, after, "blobgate_sent_bytes_total", bucket=bucket) == 5000


async def test_a_direct_answer_takes_a_stream_slot_while_it_is_made(
    s3_endpoint: str, bucket: str
) -> None:
    """Direct reads are bounded like every Download (max_streams), though
    they hold their slot only while the gateway answers."""
    settings = gateway_settings(s3_endpoint, bucket, direct_transfers=True, max_streams=1)
    async with running_gateway(settings) as (gw, stub, _):
        await upload(gw, "d/big.bin", payload(8 * 1024 * 1024, seed=19))
        held = stub.Download(pb.DownloadRequest(key="d/big.bin"), timeout=20)
        assert (await held.read()).WhichOneof("message") == "object"  # holds the one slot
        await expect_status(Code.RESOURCE_EXHAUSTED, direct_answer(stub, "d/big.bin"))
        held.cancel()
        await asyncio.sleep(0.3)  # the cancelled call gives its slot back
        for _ in range(3):  # and each answer gives its own back
            messages = await direct_answer(stub, "d/big.bin")
            assert messages[1].WhichOneof("message") == "direct"


@pytest.mark.both_s3s
async def test_a_direct_read_of_a_version_serves_that_version(
    s3_endpoint: str, bucket: str
) -> None:
    """With a version id, the description and the URL are of that version,
    not of the key's current one."""
    settings = gateway_settings(s3_endpoint, bucket, direct_transfers=True, bucket_versioning=True)
    async with running_gateway(settings) as (gw, stub, _):
        old, new = payload(70_000, seed=21), payload(50_000, seed=22)
        first = await upload(gw, "d/versioned.bin", old)
        await upload(gw, "d/versioned.bin", new)
        assert first.version_id
        messages = await direct_answer(stub, "d/versioned.bin", version_id=first.version_id)
        assert messages[0].object.version_id == first.version_id
        assert messages[0].object.size == len(old)
        assert await fetch(messages[1].direct) == (200, old)
        ranged = await direct_answer(
            stub, "d/versioned.bin", version_id=first.version_id, offset=-10
        )
        assert await fetch(ranged[1].direct) == (206, old[-10:])
