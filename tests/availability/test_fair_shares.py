"""Fair shares per principal on a real gateway (mTLS callers, moto's S3): one
caller inside its own stream quota cannot hold the memory budget another
caller needs, budget goes back on every failure path, and the share settings
are checked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from blobgate.server.app import Gateway
from blobgate.server.settings_loading import SettingsError, load_settings
from blobgate.v1 import storage_pb2 as pb
from tests.fakes.pki import CA
from tests.fakes.s3_fault_proxy import FaultProxy, head_object
from tests.support.helpers import eventually
from tests.support.mtls import caller, mtls_gateway

MiB = 1024 * 1024
Code = grpc.StatusCode
# A small gateway: 5 MiB parts, a 20 MiB budget. Before shares, 4 uploads of
# one caller held it all as soon as each had sent a byte.
SMALL = {"memory_budget": 20 * MiB, "max_streams": 16}


@pytest.fixture
def ca() -> CA:
    return CA()


class Trickle:
    """An Upload that sends its spec and one byte, then the rest of its
    ``size`` bytes only once released (a client trickling its data)."""

    def __init__(self, stub: Any, key: str, size: int = 1, timeout: float = 60) -> None:
        self.release = asyncio.Event()
        self.size = size
        self.call = stub.Upload(self._requests(key), timeout=timeout)

    async def _requests(self, key: str) -> AsyncIterator[pb.UploadRequest]:
        yield pb.UploadRequest(spec=pb.UploadSpec(key=key))
        yield pb.UploadRequest(data=b"x")
        await self.release.wait()
        left = self.size - 1
        while left:
            piece = min(left, MiB)
            yield pb.UploadRequest(data=b"y" * piece)
            left -= piece

    async def finish(self) -> pb.Object:
        self.release.set()
        return (await self.call).object


async def _upload_code(stub: Any, key: str, data: bytes, deadline: float) -> Code:
    requests = [pb.UploadRequest(spec=pb.UploadSpec(key=key))]
    requests += [pb.UploadRequest(data=data[at : at + MiB]) for at in range(0, len(data), MiB)]
    try:
        await stub.Upload(iter(requests), timeout=deadline)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return Code.OK


async def _budget_empty(gateway: Gateway) -> None:
    async def check() -> None:
        assert gateway.budget.used == 0

    await eventually(check, within=10)


async def test_a_trickling_principal_cannot_hold_the_budget_another_needs(
    tmp_path: Path, ca: CA, moto_endpoint: str, bucket: str
) -> None:
    """Four uploads of one caller that each sent a byte and trickle: another
    caller's small upload completes at once, and the trickling uploads all
    finish once they send the rest (parts that span a part boundary)."""
    mallory, bob = ca.client("mallory"), ca.client("bob")
    async with (
        mtls_gateway(tmp_path, ca, moto_endpoint, bucket, **SMALL) as gw,
        caller(gw, ca, mallory) as greedy,
        caller(gw, ca, bob) as victim,
    ):
        trickles = [Trickle(greedy, f"trickle-{i}", size=5 * MiB + 100) for i in range(4)]
        for trickle in trickles:
            await asyncio.wait_for(trickle.call.initial_metadata(), 10)

        async def holding() -> None:
            assert gw.budget.used > 0

        await eventually(holding, within=10)
        started = asyncio.get_running_loop().time()
        # Before shares this waited until its deadline, every time.
        assert await _upload_code(victim, "victim", b"v" * 100, deadline=10) == Code.OK
        assert asyncio.get_running_loop().time() - started < 5
        assert gw.budget.used <= gw.settings.budget_per_principal
        done = await asyncio.wait_for(asyncio.gather(*(t.finish() for t in trickles)), 60)
        assert [obj.size for obj in done] == [5 * MiB + 100] * 4
        await _budget_empty(gw)


async def test_principals_are_served_side_by_side_within_their_shares(
    tmp_path: Path, ca: CA, moto_endpoint: str, bucket: str
) -> None:
    """Two callers with three uploads each on a budget of two parts: each
    holds at most its share at any time, and both hold budget at the same
    time: neither waits for the other's uploads to end."""
    settings = {**SMALL, "memory_budget": 10 * MiB, "memory_budget_per_principal": 5 * MiB}
    async with (
        mtls_gateway(tmp_path, ca, moto_endpoint, bucket, **settings) as gw,
        caller(gw, ca, ca.client("alice")) as alice,
        caller(gw, ca, ca.client("bob")) as bob,
    ):
        most: dict[str, int] = {}
        together = 0  # samples in which both held budget

        async def watch() -> None:
            while True:
                nonlocal together
                for name, held in gw.budget.used_by.items():
                    most[name] = max(most.get(name, 0), held)
                together += {"cn:alice", "cn:bob"} <= gw.budget.used_by.keys()
                await asyncio.sleep(0.005)

        async def send(stub: Any, name: str, index: int) -> None:
            data = bytes([index]) * (6 * MiB)
            assert await _upload_code(stub, f"{name}-{index}", data, deadline=60) == Code.OK

        watching = asyncio.create_task(watch())
        try:
            await asyncio.gather(
                *(send(alice, "alice", i) for i in range(3)),
                *(send(bob, "bob", i) for i in range(3)),
            )
        finally:
            watching.cancel()
        assert most.keys() == {"cn:alice", "cn:bob"} and max(most.values()) <= 5 * MiB
        assert together > 0
        await _budget_empty(gw)


async def test_a_principal_at_its_share_waits_until_its_deadline(
    tmp_path: Path, ca: CA, moto_endpoint: str, bucket: str
) -> None:
    """Past its share a caller's upload waits (backpressure) and ends
    DEADLINE_EXCEEDED at its deadline; the budget it held goes back, on
    cancel too, and others go on meanwhile."""
    mallory, bob = ca.client("mallory"), ca.client("bob")
    async with (
        mtls_gateway(tmp_path, ca, moto_endpoint, bucket, **SMALL) as gw,
        caller(gw, ca, mallory) as greedy,
        caller(gw, ca, bob) as other,
    ):
        first = Trickle(greedy, "first")

        async def holding() -> None:
            assert gw.budget.used > 0

        await eventually(holding, within=10)
        # One open part of 5 MiB fills mallory's 5 MiB share: the next waits.
        waiting = Trickle(greedy, "second", size=2 * MiB, timeout=1.5)
        waiting.release.set()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await waiting.call
        assert raised.value.code() == Code.DEADLINE_EXCEEDED
        assert await _upload_code(other, "other", b"o" * 3 * MiB, deadline=10) == Code.OK
        first.call.cancel()  # a cancelled stream gives its part's budget back
        await _budget_empty(gw)
        assert gw.budget.used_by == {}


async def test_an_s3_error_gives_the_budget_back(
    tmp_path: Path, ca: CA, s3_endpoint: str, bucket: str, s3: Any
) -> None:
    missing = f"{bucket}-gone"  # allowed, then deleted behind the gateway's back
    async with (
        mtls_gateway(tmp_path, ca, s3_endpoint, bucket, allowed_buckets=[missing], **SMALL) as gw,
        caller(gw, ca, ca.client("alice")) as stub,
    ):
        await s3.delete_bucket(Bucket=missing)  # S3 answers NoSuchBucket from now on
        requests = [pb.UploadRequest(spec=pb.UploadSpec(bucket=missing, key="k"))]
        requests += [pb.UploadRequest(data=b"z" * MiB) for _ in range(6)]
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Upload(iter(requests), timeout=20)
        assert raised.value.code() in (Code.NOT_FOUND, Code.FAILED_PRECONDITION)
        await _budget_empty(gw)


def test_the_share_settings_are_checked() -> None:
    defaults = load_settings([])[0]
    assert defaults.budget_per_principal == int(defaults.memory_budget) // 4
    assert defaults.streams_per_principal == defaults.max_streams // 4
    assert defaults.connections_per_principal == defaults.s3_max_connections // 4
    assert defaults.unary_calls_per_principal == defaults.max_unary_calls // 4
    assert defaults.list_calls_per_principal == defaults.max_list_calls // 4
    given_calls = ["--max-unary-calls", "8", "--max-unary-calls-per-principal", "3"]
    assert load_settings(given_calls)[0].unary_calls_per_principal == 3
    small = load_settings(["--memory-budget", "8MiB"])[0]
    assert small.budget_per_principal == 8 * MiB  # at least part_size
    given = ["--memory-budget", "64MiB", "--memory-budget-per-principal", "16MiB"]
    assert load_settings(given)[0].budget_per_principal == 16 * MiB
    for bad in ("4MiB", "65MiB"):
        with pytest.raises(SettingsError, match="memory_budget_per_principal"):
            load_settings(["--memory-budget", "64MiB", "--memory-budget-per-principal", bad])
    with pytest.raises(SettingsError, match="s3_connections_per_principal"):
        load_settings(["--s3-max-connections", "4", "--s3-connections-per-principal", "5"])
    with pytest.raises(SettingsError, match="max_unary_calls_per_principal 9 is more than"):
        load_settings(["--max-unary-calls", "8", "--max-unary-calls-per-principal", "9"])
    with pytest.raises(SettingsError, match="max_list_calls_per_principal 17 is more than"):
        load_settings(["--max-list-calls-per-principal", "17"])


async def test_a_principal_at_its_share_of_s3_connections_waits_while_others_go_on(
    tmp_path: Path, ca: CA, moto_endpoint: str, bucket: str
) -> None:
    """With one S3 data request per caller, a download whose client stops
    reading holds its caller's place (its GET): that caller's upload waits,
    another caller's goes on, and the place comes back with the download."""
    mallory, bob = ca.client("mallory"), ca.client("bob")
    async with (
        mtls_gateway(
            tmp_path, ca, moto_endpoint, bucket, s3_connections_per_principal=1, **SMALL
        ) as gw,
        caller(gw, ca, mallory) as greedy,
        caller(gw, ca, bob) as other,
    ):
        assert await _upload_code(other, "big", b"b" * 12 * MiB, deadline=20) == Code.OK
        download = greedy.Download(pb.DownloadRequest(key="big"), timeout=30)
        await asyncio.wait_for(download.read(), 10)  # the GET is open; no more is read
        shares = gw.storage.backend.connection.shares  # type: ignore[attr-defined]
        assert shares.active == {"cn:mallory": 1}
        assert await _upload_code(greedy, "waits", b"m", deadline=1.5) == Code.DEADLINE_EXCEEDED
        assert await _upload_code(other, "goes", b"o", deadline=10) == Code.OK
        download.cancel()

        async def free() -> None:
            assert shares.active == {}

        await eventually(free, within=10)
        assert await _upload_code(greedy, "now", b"m", deadline=10) == Code.OK
        await _budget_empty(gw)


async def test_a_caller_with_stalled_calls_holds_only_its_share_of_unary_slots(
    tmp_path: Path, ca: CA, moto_endpoint: str, bucket: str
) -> None:
    """Stats whose HeadObject S3 holds back (a fault proxy: S3 that takes
    30 s to answer one key) used to hold the shared unary slots: one caller
    with max_unary_calls of them made every other caller's Stat wait in line
    and fail. Now it holds its share; the rest of its calls wait in its own
    line and fail, and another caller's Stat answers at once."""
    mallory, bob = ca.client("mallory"), ca.client("bob")
    with FaultProxy(moto_endpoint) as proxy:
        held = proxy.delay(30.0, match=lambda r: head_object(r) and r.key == "held")
        async with (
            mtls_gateway(
                tmp_path,
                ca,
                proxy.url,
                bucket,
                max_unary_calls=4,
                max_unary_calls_per_principal=2,
                unary_queue_timeout=1.5,
            ) as gw,
            caller(gw, ca, mallory) as greedy,
            caller(gw, ca, bob) as other,
        ):
            stalled = [greedy.Stat(pb.StatRequest(key="held"), timeout=60) for _ in range(4)]

            async def two_held() -> None:
                assert held.fired == 2

            await eventually(two_held, within=10)
            # Bob's Stat of a missing key: S3 answers, the gateway says NOT_FOUND.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await other.Stat(pb.StatRequest(key="missing"), timeout=1.0)
            assert caught.value.code() == Code.NOT_FOUND
            # Two wait in mallory's own line until unary_queue_timeout; two stay held.
            codes = [asyncio.ensure_future(call.code()) for call in stalled]
            ended, _ = await asyncio.wait(codes, timeout=5.0)
            assert [task.result() for task in ended] == [Code.RESOURCE_EXHAUSTED] * 2
            for call, task in zip(stalled, codes, strict=True):
                if task in ended:
                    details = await call.details()
                    assert "this caller has as many calls open as its share" in details
            assert held.fired == 2
            for call in stalled:
                call.cancel()
            await asyncio.gather(*codes)
