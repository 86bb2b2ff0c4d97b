"""Discovery through Consul (``consul://blobgate``), calls spread over the
instances, and retries, against real parts: the Consul stand-in of
tests/fakes/consul/ (which runs the gRPC checks itself), gateways on moto
(in-process, or subprocesses for the SIGKILL test) and py-consul to register
them as the lead's server registration would."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import consul
import consul.aio
import grpc
import pytest

from blobgate.client import BlobgateError, Client
from blobgate.client.discovery import ConsulConfig, ConsulTarget, _next_index, instances_from_health
from blobgate.client.pool import Pool
from blobgate.server.app import Gateway, start_gateway
from blobgate.v1 import storage_pb2 as pb
from blobgate.v1 import storage_pb2_grpc
from tests.fakes.consul import ConsulAgent
from tests.support.cli import run_cli as run_cli_process
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import free_port
from tests.support.server_process import ServerProcess

Code = grpc.StatusCode
SERVICE = "blobgate"
HEALTH_SERVICE = "blobgate.v1.StorageService"


async def wait_until(predicate: Callable[[], bool], within: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` every 50 ms; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within}s: {what or predicate}")
        await asyncio.sleep(0.05)


# --- parsing, no network -----------------------------------------------------


def test_consul_targets() -> None:
    assert ConsulTarget.parse("127.0.0.1:50051") is None
    assert ConsulTarget.parse("consul://blobgate") == ConsulTarget("blobgate")
    assert ConsulTarget.parse("consul://blobgate/") == ConsulTarget("blobgate")
    assert ConsulTarget.parse("consul://blobgate?tag=eu") == ConsulTarget("blobgate", "eu")
    for bad in [
        "consul://",
        "consul://a/b",
        "consul://a?tag=",
        "consul://a?dc=x",
        "consul://a?tag=x&tag=y",
    ]:
        with pytest.raises(ValueError):
            ConsulTarget.parse(bad)
    with pytest.raises(ValueError, match="consul://"):
        Client("consul://")


def test_consul_address_and_token_from_environment() -> None:
    env = {"CONSUL_HTTP_ADDR": "10.0.0.5:8600", "CONSUL_HTTP_TOKEN": "from-env"}
    assert ConsulConfig.from_environment(environ={}) == ConsulConfig("127.0.0.1", 8500)
    assert ConsulConfig.from_environment(environ=env) == ConsulConfig(
        "10.0.0.5", 8600, "http", "from-env"
    )
    # Explicit arguments win over the environment.
    assert ConsulConfig.from_environment("c:1", "mine", environ=env) == ConsulConfig(
        "c", 1, "http", "mine"
    )
    assert ConsulConfig.from_environment(environ={"CONSUL_HTTP_ADDR": "https://c"}) == (
        ConsulConfig("c", 8501, "https")
    )
    ssl = {"CONSUL_HTTP_ADDR": "c:8501", "CONSUL_HTTP_SSL": "true"}
    assert ConsulConfig.from_environment(environ=ssl).scheme == "https"
    assert str(ConsulConfig.from_environment("http://[::1]:8500", environ={})) == (
        "http://[::1]:8500"
    )
    for bad in ["unix:///tmp/consul.sock", "c:port", "http://"]:
        with pytest.raises(ValueError):
            ConsulConfig.from_environment(bad, environ={})


def test_health_entries_to_instances() -> None:
    def entry(sid: str, address: str, port: Any, node: str = "10.1.1.1") -> dict[str, Any]:
        return {"Node": {"Address": node}, "Service": {"ID": sid, "Address": address, "Port": port}}

    found = instances_from_health(
        [
            entry("b", "10.0.0.2", 7000),
            entry("a", "", 7001),  # empty Service.Address: the node's address
            entry("v6", "::1", 7002),
            entry("dup", "10.0.0.2", 7000),  # same address: one channel
            entry("broken", "10.0.0.3", None),
        ]
    )
    assert [i.address for i in found] == ["10.0.0.2:7000", "10.1.1.1:7001", "[::1]:7002"]
    assert instances_from_health(None) == ()


def test_blocking_index_rules() -> None:
    assert _next_index(0, "42") == 42
    assert _next_index(42, "42") == 42
    assert _next_index(42, "7") == 0  # went backwards: start over
    assert _next_index(0, "0") == 1  # never below 1
    assert _next_index(5, None) == 0


async def test_pool_closes_a_retired_channel_once_its_calls_end() -> None:
    a, b = "127.0.0.1:1", "127.0.0.1:2"
    pool = Pool([a, b], [], drain_grace=0.2)
    try:
        busy = pool.acquire(exclude=[b])
        assert busy is not None and busy.address == a
        pool.update([b])
        assert pool.addresses == (b,)
        assert not busy.closed  # a call still uses it
        assert all(pool.acquire() is not busy for _ in range(3))
        pool.release(busy)
        assert busy.closed

        # One that comes back before its channel closed keeps that channel.
        held = pool.acquire()
        assert held is not None
        pool.update([])
        pool.update([b])
        assert not held.closed and pool.acquire() is held

        # A call that never ends does not keep a retired channel open for ever.
        pool.update([a])
        assert not held.closed
        await asyncio.sleep(0.4)
        assert held.closed
    finally:
        await pool.close()


# --- fixtures ----------------------------------------------------------------


@pytest.fixture
def agent() -> Iterator[ConsulAgent]:
    # Check intervals below Consul's 1 s floor keep these tests short.
    with ConsulAgent(min_check_interval=0.2) as running:
        yield running


@pytest.fixture
async def consul_api(agent: ConsulAgent) -> AsyncIterator[Any]:
    """py-consul on the stand-in, to register instances as a server would."""
    api = consul.aio.Consul(host="127.0.0.1", port=agent.port)
    yield api
    await api.close()


async def register(
    api: Any, service_id: str, port: int, *, tags: list[str] | None = None, ttl: bool = False
) -> None:
    """Register an instance on 127.0.0.1:port with a gRPC check (or a TTL
    check marked passing, for an instance the agent must not probe)."""
    check = (
        consul.Check.ttl("60s")
        if ttl
        else consul.Check.grpc(f"127.0.0.1:{port}/{HEALTH_SERVICE}", "0.2s", timeout="1s")
    )
    await api.agent.service.register(
        SERVICE, service_id=service_id, address="127.0.0.1", port=port, tags=tags, check=check
    )
    if ttl:
        await api.agent.check.ttl_pass(f"service:{service_id}")


@dataclass
class Counted:
    """An in-process gateway and the Stat calls it served."""

    gateway: Gateway
    stats: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"


@pytest.fixture
async def gateways(moto_endpoint: str, bucket: str) -> AsyncIterator[list[Counted]]:
    """Three gateways on the same moto and bucket, counting their Stat calls."""
    started = await asyncio.gather(
        *(start_gateway(gateway_settings(moto_endpoint, bucket)) for _ in range(3))
    )
    counted = [Counted(gw) for gw in started]
    for entry in counted:
        head = entry.gateway.store.head

        async def counting(*args: Any, _head: Any = head, _entry: Counted = entry) -> Any:
            _entry.stats += 1
            return await _head(*args)

        entry.gateway.store.head = counting  # type: ignore[method-assign,assignment]
    yield counted
    await asyncio.gather(*(stop_gateway(c.gateway) for c in counted), return_exceptions=True)


async def register_all(api: Any, gateways: list[Counted]) -> None:
    for n, entry in enumerate(gateways):
        await register(api, f"blobgate-{n}", entry.gateway.port)


# --- in-process gateways -------------------------------------------------------


async def test_calls_spread_over_three_instances(
    agent: ConsulAgent, consul_api: Any, gateways: list[Counted]
) -> None:
    await register_all(consul_api, gateways)
    await register(consul_api, "canary", gateways[0].gateway.port, tags=["canary"])
    addresses = sorted(g.address for g in gateways)
    async with Client(
        f"consul://{SERVICE}", consul_addr=agent.address, consul_token="s3cret", timeout=10
    ) as client:
        await wait_until(lambda: sorted(client.instances) == addresses, what="3 instances")
        await client.upload("spread.txt", b"spread")
        for _ in range(30):
            assert (await client.stat("spread.txt")).size == 6
    stats = [g.stats for g in gateways]
    assert sum(stats) == 30
    assert min(stats) >= 5, stats  # round-robin: 10 each while all are healthy
    # The watch sent the token and blocked on the index it was given.
    health = [r for r in agent.requests if r["path"] == f"/v1/health/service/{SERVICE}"]
    assert health and {r["token"] for r in health} == {"s3cret"}
    assert all(r["query"].get("passing") == "1" for r in health)
    assert "index" not in health[0]["query"]
    assert all(int(r["query"]["index"]) >= 1 for r in health[1:])

    async with Client(f"consul://{SERVICE}?tag=canary", consul_addr=agent.address) as canary:
        await wait_until(lambda: canary.instances == (gateways[0].address,), what="tag filter")


async def test_instances_that_leave_get_no_calls(
    agent: ConsulAgent, consul_api: Any, gateways: list[Counted]
) -> None:
    await register_all(consul_api, gateways)
    first, second, third = gateways
    async with Client(f"consul://{SERVICE}", consul_addr=agent.address, timeout=10) as client:
        await wait_until(lambda: len(client.instances) == 3, what="3 instances")
        await client.upload("leave.txt", b"x")

        # Deregistered: dropped at the next watch answer.
        await consul_api.agent.service.deregister("blobgate-0")
        await wait_until(lambda: first.address not in client.instances, what="deregistered")
        before = first.stats
        for _ in range(12):
            await client.stat("leave.txt")
        assert first.stats == before

        # Stopped: its gRPC check turns critical and it leaves the passing set.
        await stop_gateway(second.gateway)
        for _ in range(40):  # calls keep succeeding meanwhile
            await client.stat("leave.txt")
            await asyncio.sleep(0.02)
        await wait_until(lambda: second.address not in client.instances, what="critical")
        assert agent.check_status("blobgate-1") == "critical"
        assert client.instances == (third.address,)
        used = client.call_counts()
        for _ in range(5):
            await client.stat("leave.txt")
        assert client.call_counts()[second.address] == used[second.address]
        assert client.call_counts()[third.address] == used[third.address] + 5

        # Back again (a new registration): calls reach it again.
        await register(consul_api, "blobgate-0-again", first.gateway.port)
        await wait_until(lambda: first.address in client.instances, what="re-registered")
        before = first.stats
        for _ in range(6):
            await client.stat("leave.txt")
        assert first.stats > before


async def test_consul_unreachable_at_start_then_appearing(gateways: list[Counted]) -> None:
    port = free_port()
    agent = ConsulAgent(port, min_check_interval=0.2)
    try:
        async with Client(f"consul://{SERVICE}", consul_addr=f"127.0.0.1:{port}") as client:
            # With no agent, a short call fails with a clear UNAVAILABLE.
            short = Client(f"consul://{SERVICE}", consul_addr=f"127.0.0.1:{port}", timeout=0.5)
            async with short:
                with pytest.raises(BlobgateError) as caught:
                    await short.stat("k")
            assert caught.value.code == Code.UNAVAILABLE
            assert f"127.0.0.1:{port}" in caught.value.message

            pending = asyncio.create_task(client.stat("late.txt"))
            await asyncio.sleep(1.0)
            assert not pending.done()  # waiting for Consul's first answer
            agent.start()
            api = consul.aio.Consul(host="127.0.0.1", port=port)
            try:
                await register_all(api, gateways)
            finally:
                await api.close()
            with pytest.raises(BlobgateError) as caught:
                await asyncio.wait_for(pending, 15)
            assert caught.value.code == Code.NOT_FOUND  # it reached a gateway
            await wait_until(lambda: len(client.instances) == 3, what="3 instances")

            # Consul going away again: the last known instances stay in use.
            agent.stop()
            await client.upload("kept.txt", b"kept")
            for _ in range(6):
                assert (await client.stat("kept.txt")).size == 4
            assert len(client.instances) == 3
    finally:
        agent.stop()


async def test_no_passing_instance_is_unavailable(agent: ConsulAgent) -> None:
    async with Client(f"consul://{SERVICE}", consul_addr=agent.address, timeout=2) as client:
        with pytest.raises(BlobgateError) as caught:
            await client.stat("k")
    assert caught.value.code == Code.UNAVAILABLE
    assert "no passing instance" in caught.value.message


async def test_an_instance_that_cannot_be_reached_gets_no_call(
    agent: ConsulAgent,
    consul_api: Any,
    gateways: list[Counted],
    caplog: pytest.LogCaptureFixture,
) -> None:
    live = gateways[0]
    dead = f"127.0.0.1:{free_port()}"  # listed as passing, nothing listens
    await register(consul_api, "live", live.gateway.port)
    await register(consul_api, "dead", int(dead.rpartition(":")[2]), ttl=True)
    async with Client(live.address) as direct:
        await direct.upload("r.txt", b"retry")
    async with Client(f"consul://{SERVICE}", consul_addr=agent.address, timeout=10) as client:
        await wait_until(lambda: len(client.instances) == 2, what="2 instances")
        for n in range(10):
            assert (await client.stat("r.txt")).size == 5
            assert [c async for c in client.download("r.txt")] == [b"retry"]
            assert (await client.list_page()).objects
            await client.presign("r.txt")
            assert (await client.upload(f"u{n}.txt", b"up")).size == 2
        assert client.call_counts().get(dead, 0) == 0  # it failed to connect: ejected
    ejections = [r for r in caplog.records if r.name == "blobgate.client.outliers"]
    assert ejections and all(dead in r.getMessage() for r in ejections)
    assert "Connection refused" in ejections[0].getMessage()

    # Only the dead instance: every call, an upload too, tries to connect
    # max_attempts times, and fails UNAVAILABLE without sending anything.
    await consul_api.agent.service.deregister("live")
    async with Client(
        f"consul://{SERVICE}", consul_addr=agent.address, timeout=10, max_attempts=3
    ) as client:
        await wait_until(lambda: client.instances == (dead,), what="dead only")
        calls = [lambda: client.stat("r.txt"), lambda: client.upload("u.txt", b"never sent")]
        for call in calls:
            with pytest.raises(BlobgateError) as caught:
                await call()
            assert caught.value.code == Code.UNAVAILABLE and caught.value.unsent
            assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)
        assert client.call_counts() == {}


async def test_retries_end_at_the_deadline(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="blobgate.client.retry")
    async with Client(f"127.0.0.1:{free_port()}", timeout=0.3, max_attempts=50) as client:
        started = time.monotonic()
        with pytest.raises(BlobgateError) as caught:
            await client.stat("k")
        elapsed = time.monotonic() - started
    assert caught.value.code in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED)
    assert elapsed < 0.6
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert 1 <= len(retries) < 49


# --- a download that fails after its first message -----------------------------


class FlakyDownloads(storage_pb2_grpc.StorageServiceServicer):
    """Serves one object; the first ``fail_first`` downloads break with
    UNAVAILABLE after sending ``then_data`` data messages."""

    def __init__(self, data: bytes, fail_first: int, then_data: int) -> None:
        self.data = data
        self.fail_first = fail_first
        self.then_data = then_data
        self.requests: list[pb.DownloadRequest] = []

    async def Download(self, request: pb.DownloadRequest, context: Any) -> Any:
        self.requests.append(request)
        obj = pb.Object(key=request.key, size=len(self.data), etag="v1")
        obj.checksums.sha256 = hashlib.sha256(self.data).digest()
        yield pb.DownloadResponse(object=obj)
        if len(self.requests) <= self.fail_first:
            for _ in range(self.then_data):
                yield pb.DownloadResponse(data=self.data)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "instance going away")
        yield pb.DownloadResponse(data=self.data)


@pytest.fixture
async def flaky_server() -> AsyncIterator[Callable[[FlakyDownloads], Awaitable[str]]]:
    servers: list[grpc.aio.Server] = []

    async def serve(servicer: FlakyDownloads) -> str:
        server = grpc.aio.server()
        storage_pb2_grpc.add_StorageServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield serve
    for server in servers:
        await server.stop(0)


async def test_download_restarts_when_no_data_was_yielded(
    flaky_server: Callable[[FlakyDownloads], Awaitable[str]],
) -> None:
    servicer = FlakyDownloads(b"payload", fail_first=1, then_data=0)
    async with Client(await flaky_server(servicer)) as client:
        assert [c async for c in client.download("k")] == [b"payload"]
    assert [r.if_match for r in servicer.requests] == ["", "v1"]  # pinned to the version


async def test_download_fails_once_data_was_yielded(
    flaky_server: Callable[[FlakyDownloads], Awaitable[str]],
) -> None:
    servicer = FlakyDownloads(b"part", fail_first=1, then_data=1)
    async with Client(await flaky_server(servicer)) as client:
        with pytest.raises(BlobgateError) as caught:
            async for _ in client.download("k", limit=4):  # a range: nothing to verify
                pass
    assert caught.value.code == Code.UNAVAILABLE
    assert len(servicer.requests) == 1


async def test_whole_verified_download_survives_a_lost_status(
    flaky_server: Callable[[FlakyDownloads], Awaitable[str]],
) -> None:
    servicer = FlakyDownloads(b"all of it", fail_first=1, then_data=1)
    async with Client(await flaky_server(servicer)) as client:
        assert [c async for c in client.download("k")] == [b"all of it"]
    assert len(servicer.requests) == 1


# --- the CLI -------------------------------------------------------------------


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, bytes, str]:
    """test_cli's run_cli, as exit code, stdout and stderr."""
    result = await run_cli_process(*args, env=env)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.slow
async def test_cli_with_a_consul_target(
    agent: ConsulAgent, consul_api: Any, gateways: list[Counted]
) -> None:
    await register_all(consul_api, gateways)
    env = {"CONSUL_HTTP_ADDR": agent.address}
    async with Client(gateways[0].address) as direct:
        await direct.upload("cli.txt", b"via consul")
    code, out, err = await run_cli("--server", "consul://blobgate", "get", "cli.txt", "-", env=env)
    assert (code, out) == (0, b"via consul"), err
    code, out, err = await run_cli(
        "stat", "cli.txt", env={**env, "BLOBGATE_SERVER": "consul://blobgate"}
    )
    assert code == 0, err
    assert "cli.txt" in out.decode()
    code, _, err = await run_cli("--server", "consul://", "stat", "k", env=env)
    assert code == 2
    assert err.startswith("blobgate: --server: ") and err.count("\n") == 1


# --- the key test: SIGKILL or SIGTERM one of three gateway processes under load -----


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
async def test_one_of_three_dies_or_stops_under_load(
    agent: ConsulAgent,
    consul_api: Any,
    processes: list[ServerProcess],
    moto_endpoint: str,
    bucket: str,
    stop_signal: signal.Signals,
) -> None:
    """SIGKILL: the instance's calls break and are retried elsewhere. SIGTERM
    with no drain delay: it goes NOT_SERVING, the agent's check and the
    client drop it, and it finishes what it started. Either way no idempotent
    call fails. (Calls that reach an instance just as it stops accepting are
    refused, or cancelled unstarted by gRPC core, grpc/grpc#41785; the client
    retries both, tests/client/test_client.py, though this test rarely sees either.)"""
    args = ["--listen", "127.0.0.1:0", "--s3-endpoint", moto_endpoint]
    args += ["--default-bucket", bucket, "--create-buckets", "--drain-delay", "0"]
    processes.extend(await asyncio.gather(*(ServerProcess.start(*args) for _ in range(3))))
    ports = await asyncio.gather(*(p.wait_listening() for p in processes))
    for n, port in enumerate(ports):
        await register(consul_api, f"blobgate-{n}", port)
    addresses = [f"127.0.0.1:{port}" for port in ports]
    victim, survivors = addresses[1], [addresses[0], addresses[2]]
    data = b"small object " * 10

    async with Client(f"consul://{SERVICE}", consul_addr=agent.address, timeout=10) as client:
        await wait_until(lambda: sorted(client.instances) == sorted(addresses), 20, "3 passing")
        await client.upload("load/small.txt", data)

        failures: list[BaseException] = []
        done = [0]
        stop = asyncio.Event()

        async def worker(n: int) -> None:
            for i in range(3000):  # bounded in count; the test also bounds it in time
                if stop.is_set():
                    return
                try:
                    match (n + i) % 3:
                        case 0:
                            assert (await client.stat("load/small.txt")).size == len(data)
                        case 1:
                            page = await client.list_page("load/")
                            assert [o.key for o in page.objects] == ["load/small.txt"]
                        case _:
                            got = [c async for c in client.download("load/small.txt")]
                            assert b"".join(got) == data
                except (BlobgateError, AssertionError) as exc:
                    failures.append(exc)
                done[0] += 1

        async with asyncio.timeout(60):
            workers = [asyncio.create_task(worker(n)) for n in range(6)]
            try:
                await wait_until(lambda: done[0] >= 60, 20, "load before the kill")
                assert all(client.call_counts().get(a, 0) > 0 for a in addresses)

                processes[1].proc.send_signal(stop_signal)
                killed_at = done[0]
                await wait_until(lambda: victim not in client.instances, 10, "victim dropped")
                assert agent.check_status("blobgate-1") == "critical"
                after_drop = client.call_counts()
                await wait_until(lambda: done[0] >= killed_at + 120, 20, "load after the kill")
            finally:
                stop.set()
                await asyncio.gather(*workers)

    assert failures == [], failures[:3]
    exit_status = -signal.SIGKILL if stop_signal == signal.SIGKILL else 0  # SIGTERM: clean exit
    assert await asyncio.wait_for(processes[1].proc.wait(), 30) == exit_status
    counts = client.call_counts()
    assert counts[victim] == after_drop[victim]  # no call went to it once dropped
    assert all(counts[a] > after_drop[a] for a in survivors)
