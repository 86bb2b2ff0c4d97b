"""The Consul agent stand-in (tests/fakes/consul/) behaves like the real
agent's HTTP API, driven through py-consul and raw HTTP: registration in both
key cases, TTL and gRPC checks, passing-only discovery, blocking queries,
deregistration of critical services, wipe, and stop/start on the same port."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import consul
import consul.aio
import grpc
import pytest
from consul.exceptions import BadRequest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from tests.fakes.consul import ConsulAgent, format_duration, parse_duration
from tests.support.helpers import eventually

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def agent() -> Iterator[ConsulAgent]:
    with ConsulAgent(min_check_interval=0.1, reap_interval=0.1) as running:
        yield running


@pytest.fixture
async def client(agent: ConsulAgent, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    # py-consul lets CONSUL_HTTP_TOKEN override the token argument.
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    c = consul.aio.Consul(host="127.0.0.1", port=agent.port, verify=False)
    yield c
    await c.close()


@pytest.fixture
async def health_server() -> AsyncIterator[tuple[int, HealthServicer, grpc.aio.Server]]:
    """A real grpc.aio server on port 0 with the standard health servicer."""
    server = grpc.aio.server()
    servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port, servicer, server
    await server.stop(None)


async def put(agent: ConsulAgent, path: str, body: Any = None) -> tuple[int, str]:
    """A raw PUT, for payloads py-consul does not produce."""
    async with (
        aiohttp.ClientSession() as session,
        session.put(f"http://{agent.address}{path}", json=body) as resp,
    ):
        return resp.status, await resp.text()


async def status_becomes(agent: ConsulAgent, service_id: str, expected: str | None) -> None:
    async def check() -> None:
        assert agent.check_status(service_id) == expected

    await eventually(check, within=5)


def test_durations_follow_go() -> None:
    assert parse_duration("10s") == 10
    assert parse_duration("0.3s") == pytest.approx(0.3)
    assert parse_duration("1m30s") == 90
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1h") == 3600
    for bad in ("10", "s", "1x", "", "1s2"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert format_duration(60 * 10**9) == "1m0s"
    assert format_duration(300 * 10**6) == "300ms"
    assert format_duration(1_500_000_000) == "1.5s"
    assert format_duration(3600 * 10**9) == "1h0m0s"


async def test_register_list_deregister_with_py_consul(
    agent: ConsulAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    c = consul.aio.Consul(host="127.0.0.1", port=agent.port, token="s3cret", verify=False)
    try:
        assert await c.agent.service.register(
            "blobgate",
            service_id="blobgate-1",
            address="10.0.0.5",
            port=50051,
            tags=["blue"],
            meta={"api": "blobgate.v1"},
        )
        assert await c.agent.service.register("plain")  # ID defaults to Name
        listed = await c.agent.services()
        assert listed == agent.services()
        assert listed["blobgate-1"] == {
            "ID": "blobgate-1",
            "Service": "blobgate",
            "Tags": ["blue"],
            "Meta": {"api": "blobgate.v1"},
            "Port": 50051,
            "Address": "10.0.0.5",
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": False,
            "Datacenter": "dc1",
        }
        assert listed["plain"]["Tags"] == [] and listed["plain"]["Meta"] == {}
        one = await c.agent.service_definition("blobgate-1")
        assert one["Service"] == "blobgate" and one["ContentHash"]
        assert await c.agent.service_definition("nope") is None  # 404 becomes None
        assert agent.check_status("blobgate-1") == "passing"  # no checks at all

        # Re-registering an ID replaces the service.
        assert await c.agent.service.register("blobgate", service_id="blobgate-1", port=50052)
        assert agent.services()["blobgate-1"]["Port"] == 50052
        assert agent.services()["blobgate-1"]["Tags"] == []

        assert await c.agent.service.deregister("blobgate-1")
        assert await c.agent.service.deregister("never-registered")  # not an error
        assert list(await c.agent.services()) == ["plain"]
        assert agent.check_status("blobgate-1") is None
    finally:
        await c.close()
    register = [r for r in agent.requests if r["path"] == "/v1/agent/service/register"]
    assert register[0]["method"] == "PUT"
    assert register[0]["token"] == "s3cret"
    assert register[0]["json"]["meta"] == {"api": "blobgate.v1"}  # py-consul's keys


async def test_registration_keys_in_both_cases(agent: ConsulAgent) -> None:
    pascal = {
        "Name": "svc",
        "ID": "svc-a",
        "Address": "127.0.0.1",
        "Port": 1,
        "Tags": ["t"],
        "Meta": {"k": "v"},
        "Check": {"TTL": "10s", "DeregisterCriticalServiceAfter": "1m", "Notes": "n"},
    }
    snake = {
        "name": "svc",
        "id": "svc-b",
        "address": "127.0.0.1",
        "port": 1,
        "tags": ["t"],
        "meta": {"k": "v"},
        "check": {"ttl": "10s", "deregister_critical_service_after": "1m", "notes": "n"},
    }
    assert (await put(agent, "/v1/agent/service/register", pascal))[0] == 200
    assert (await put(agent, "/v1/agent/service/register", snake))[0] == 200
    services = agent.services()
    assert {k: v for k, v in services["svc-a"].items() if k != "ID"} == {
        k: v for k, v in services["svc-b"].items() if k != "ID"
    }
    checks = agent.checks()
    assert checks["service:svc-a"]["Status"] == "critical"  # no Status given
    assert checks["service:svc-b"]["Notes"] == "n"
    assert checks["service:svc-a"]["Type"] == "ttl"

    # Several checks: service:<id>:<n>; Status and CheckID honoured.
    several = {
        "Name": "multi",
        "Checks": [
            {"TTL": "10s", "Status": "passing"},
            {"ttl": "10s", "status": "warning"},
            {"CheckID": "mine", "TTL": "10s"},
        ],
    }
    assert (await put(agent, "/v1/agent/service/register", several))[0] == 200
    checks = agent.checks()
    assert checks["service:multi:1"]["Status"] == "passing"
    assert checks["service:multi:2"]["Status"] == "warning"
    assert checks["mine"]["Status"] == "critical"
    assert agent.check_status("multi") == "critical"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"ID": "x"}, "Missing service name"),
        ({"Name": "x", "Address": "0.0.0.0"}, "Invalid service address"),
        ({"Name": "x", "Meta": {"a.b": "1"}}, "Key contains invalid characters"),
        ({"Name": "x", "Check": {"GRPC": "127.0.0.1:1"}}, "Interval must be > 0"),
        ({"Name": "x", "Check": {"Interval": "10s"}}, "TTL must be > 0"),
        ({"Name": "x", "Check": {"TTL": "10"}}, "invalid duration"),
        ({"Name": "x", "Check": {"TTL": "1s", "Status": "ok"}}, "Status for checks"),
        ({"Name": "x", "Check": {"HTTP": "http://x", "Interval": "1s"}}, "only GRPC and TTL"),
    ],
)
async def test_bad_registrations_are_refused(
    agent: ConsulAgent, body: dict[str, Any], reason: str
) -> None:
    status, text = await put(agent, "/v1/agent/service/register", body)
    assert status == 400 and reason in text
    assert agent.services() == {}


async def test_unsupported_queries_are_refused_not_ignored(client: Any) -> None:
    with pytest.raises(BadRequest, match="filter"):
        await client.health.service("x", filter_expr="Service.Port == 1")
    with pytest.raises(consul.ConsulException, match="No path to datacenter"):
        await client.health.service("x", dc="dc2")
    with pytest.raises(BadRequest, match="Invalid wait time"):
        await client.health.service("x", index="5", wait="soon")


async def test_ttl_check_pass_warn_fail_and_expiry(agent: ConsulAgent, client: Any) -> None:
    assert await client.agent.service.register("ttl", check=consul.Check.ttl("300ms"))
    assert agent.check_status("ttl") == "critical"  # until the first pass
    assert await client.agent.check.ttl_pass("service:ttl", "fine")
    assert agent.check_status("ttl") == "passing"
    assert agent.checks()["service:ttl"]["Output"] == "fine"
    assert await client.agent.check.ttl_warn("service:ttl")
    assert agent.check_status("ttl") == "warning"
    assert await client.agent.check.ttl_fail("service:ttl")
    assert agent.check_status("ttl") == "critical"
    assert await client.agent.check.ttl_pass("service:ttl")
    time.sleep(0.5)  # noqa: ASYNC251 -- blocks this test's loop: the agent keeps its own clock
    assert agent.check_status("ttl") == "critical"  # the TTL expired
    assert "TTL expired" in agent.checks()["service:ttl"]["Output"]
    # py-consul turns the agent's 404 for an unknown check into False, not an error.
    assert await client.agent.check.ttl_pass("service:nope") is False


async def test_grpc_check_follows_the_health_service(
    agent: ConsulAgent,
    client: Any,
    health_server: tuple[int, HealthServicer, grpc.aio.Server],
) -> None:
    port, servicer, server = health_server
    await servicer.set("blobgate.v1.StorageService", SERVING)
    target = f"127.0.0.1:{port}/blobgate.v1.StorageService"
    check = consul.Check.grpc(target, "100ms", timeout="1s", deregister="10m")
    assert await client.agent.service.register("grpc", service_id="grpc-1", port=port, check=check)
    await status_becomes(agent, "grpc-1", "passing")
    registered = agent.checks()["service:grpc-1"]
    assert registered["Type"] == "grpc" and registered["Interval"] == "100ms"
    assert registered["Output"] == f"gRPC check {target}: success"

    await servicer.set("blobgate.v1.StorageService", NOT_SERVING)
    await status_becomes(agent, "grpc-1", "critical")
    assert "NOT_SERVING" in agent.checks()["service:grpc-1"]["Output"]
    await servicer.set("blobgate.v1.StorageService", SERVING)
    await status_becomes(agent, "grpc-1", "passing")

    # The suffix is the HealthCheckRequest.service: an unknown name is critical.
    other = consul.Check.grpc(f"127.0.0.1:{port}/no.such.Service", "100ms")
    assert await client.agent.service.register("grpc", service_id="grpc-2", check=other)

    async def not_found() -> None:
        output = agent.checks()["service:grpc-2"]["Output"]
        assert output.startswith("rpc error: code = NotFound")

    await eventually(not_found, within=5)
    assert agent.check_status("grpc-2") == "critical"

    await server.stop(None)
    await status_becomes(agent, "grpc-1", "critical")
    assert "Unavailable" in agent.checks()["service:grpc-1"]["Output"]


async def test_passing_only_excludes_critical_and_maintenance(
    agent: ConsulAgent, client: Any
) -> None:
    ttl = {"TTL": "1m", "Status": "passing"}
    for sid, tags in (("web-1", ["a"]), ("web-2", ["a", "b"]), ("web-3", ["b"])):
        body = {"Name": "web", "ID": sid, "Port": 80, "Tags": tags, "Check": ttl}
        assert (await put(agent, "/v1/agent/service/register", body))[0] == 200
    assert await client.agent.check.ttl_fail("service:web-2")
    assert await client.agent.service.maintenance("web-3", True, "upgrading")
    assert agent.check_status("web-3") == "critical"

    _, every = await client.health.service("web")
    assert [n["Service"]["ID"] for n in every] == ["web-1", "web-2", "web-3"]
    first = every[0]
    assert first["Service"]["Port"] == 80 and first["Service"]["Meta"] is None
    assert {c["CheckID"]: c["Status"] for c in first["Checks"]} == {
        "service:web-1": "passing",
        "serfHealth": "passing",
    }
    maint = [c for c in every[2]["Checks"] if c["CheckID"] == "_service_maintenance:web-3"]
    assert maint[0]["Status"] == "critical" and maint[0]["Notes"] == "upgrading"

    _, healthy = await client.health.service("web", passing=True)
    assert [n["Service"]["ID"] for n in healthy] == ["web-1"]
    _, tagged = await client.health.service("web", tag="b")
    assert [n["Service"]["ID"] for n in tagged] == ["web-2", "web-3"]

    assert await client.agent.service.maintenance("web-3", False)
    _, healthy = await client.health.service("web", passing=True)
    assert [n["Service"]["ID"] for n in healthy] == ["web-1", "web-3"]
    assert (await put(agent, "/v1/agent/service/maintenance/nope?enable=true"))[0] == 404
    assert (await put(agent, "/v1/agent/service/maintenance/web-1"))[0] == 400


async def test_reregistration_keeps_or_replaces_checks(agent: ConsulAgent, client: Any) -> None:
    two = [consul.Check.ttl("1m"), consul.Check.ttl("1m")]
    assert await client.agent.service.register("re", check=two[0], extra_checks=two[1:])
    assert await client.agent.check.ttl_pass("service:re:1")
    assert sorted(agent.checks()) == ["service:re:1", "service:re:2"]
    # Without replace-existing-checks the agent keeps checks missing from the
    # new definition; a check that stays keeps its status.
    one = {"Name": "re", "Checks": [{"CheckID": "service:re:1", "TTL": "1m"}]}
    assert (await put(agent, "/v1/agent/service/register", one))[0] == 200
    assert sorted(agent.checks()) == ["service:re:1", "service:re:2"]
    assert agent.checks()["service:re:1"]["Status"] == "passing"
    assert await client.agent.service.register(
        "re", check=consul.Check.ttl("1m"), replace_existing_checks=True
    )
    assert sorted(agent.checks()) == ["service:re"]
    assert agent.requests[-1]["query"] == {"replace-existing-checks": "true"}


async def test_blocking_query_returns_on_change_or_after_wait(
    agent: ConsulAgent, client: Any
) -> None:
    index, nodes = await client.health.service("api", passing=True)
    assert nodes == [] and int(index) >= 1

    started = time.monotonic()
    same, _ = await client.health.service("api", index=index, wait="1s", passing=True)
    elapsed = time.monotonic() - started
    assert 0.95 <= elapsed < 1.0 + 1 / 16 + 0.5
    assert same == index

    blocked = asyncio.ensure_future(
        client.health.service("api", index=index, wait="10s", passing=True)
    )
    await asyncio.sleep(0.2)
    assert not blocked.done()
    started = time.monotonic()
    body = {"Name": "api", "ID": "api-1", "Check": {"TTL": "1m", "Status": "passing"}}
    assert (await put(agent, "/v1/agent/service/register", body))[0] == 200
    changed, nodes = await asyncio.wait_for(blocked, 5)
    assert time.monotonic() - started < 1.0
    assert int(changed) > int(index)
    assert [n["Service"]["ID"] for n in nodes] == ["api-1"]

    # A check status change wakes a blocked query too.
    blocked = asyncio.ensure_future(client.health.service("api", index=changed, wait="10s"))
    await asyncio.sleep(0.1)
    assert await client.agent.check.ttl_fail("service:api-1")
    failed, nodes = await asyncio.wait_for(blocked, 5)
    assert int(failed) > int(changed)
    assert nodes[0]["Checks"][0]["Status"] == "critical"


async def test_index_grows_on_every_change(agent: ConsulAgent, client: Any) -> None:
    seen = [int((await client.health.service("idx"))[0])]

    async def change(action: Any) -> None:
        assert await action
        index = int((await client.health.service("idx"))[0])
        assert index > seen[-1] >= 1
        seen.append(index)

    await change(client.agent.service.register("idx", check=consul.Check.ttl("1m")))
    await change(client.agent.check.ttl_pass("service:idx"))
    await change(client.agent.service.maintenance("idx", "true"))
    await change(client.agent.service.maintenance("idx", "false"))
    await change(client.agent.service.deregister("idx"))
    # An identical TTL pass (only the output differs) is not a change.
    assert await client.agent.service.register("idx", check=consul.Check.ttl("1m"))
    assert await client.agent.check.ttl_pass("service:idx", "one")
    before = (await client.health.service("idx"))[0]
    assert await client.agent.check.ttl_pass("service:idx", "two")
    assert (await client.health.service("idx"))[0] == before


async def test_critical_service_is_deregistered_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    with ConsulAgent(min_deregister_after=0.3, reap_interval=0.05) as agent:
        c = consul.aio.Consul(host="127.0.0.1", port=agent.port, verify=False)
        try:
            short = {"TTL": "1m", "DeregisterCriticalServiceAfter": "100ms"}
            for sid, status in (("doomed", "critical"), ("kept", "passing")):
                body = {"Name": "reap", "ID": sid, "Check": {**short, "Status": status}}
                assert (await put(agent, "/v1/agent/service/register", body))[0] == 200
            await asyncio.sleep(0.15)
            assert "doomed" in agent.services()  # the minimum (0.3s) applies
            await status_becomes(agent, "doomed", None)
            assert list(agent.services()) == ["kept"]
            assert "service:doomed" not in agent.checks()
            _, nodes = await c.health.service("reap")
            assert [n["Service"]["ID"] for n in nodes] == ["kept"]
        finally:
            await c.close()


async def test_wipe_forgets_everything(agent: ConsulAgent, client: Any) -> None:
    assert await client.agent.service.register("gone", check=consul.Check.ttl("1m"))
    index, _ = await client.health.service("gone")
    blocked = asyncio.ensure_future(client.health.service("gone", index=index, wait="10s"))
    await asyncio.sleep(0.1)
    agent.wipe()
    after, nodes = await asyncio.wait_for(blocked, 5)
    assert nodes == [] and int(after) > int(index)
    assert agent.services() == {} and agent.checks() == {}
    assert await client.agent.services() == {}
    assert agent.check_status("gone") is None
    assert await client.agent.check.ttl_pass("service:gone") is False


async def test_stop_then_start_on_the_same_port(agent: ConsulAgent, client: Any) -> None:
    assert await client.agent.service.register("kept", check=consul.Check.ttl("1m"))
    index, _ = await client.health.service("kept")
    blocked = asyncio.ensure_future(client.health.service("kept", index=index, wait="10s"))
    await asyncio.sleep(0.1)
    port = agent.port
    agent.stop()
    agent.stop()  # idempotent
    with pytest.raises(aiohttp.ClientError):  # the dying agent drops the query
        await asyncio.wait_for(blocked, 5)
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.agent.services()
    assert "kept" in agent.services()  # kept in memory while down
    agent.start()
    agent.start()  # idempotent
    assert agent.port == port and agent.address == f"127.0.0.1:{port}"
    assert list(await client.agent.services()) == ["kept"]
    assert await client.agent.check.ttl_pass("service:kept")
    assert agent.check_status("kept") == "passing"


def test_serves_from_its_own_thread() -> None:
    threads = threading.active_count()
    agent = ConsulAgent()
    for _ in range(2):
        agent.start()
        body = json.dumps({"Name": "sync", "Port": 7}).encode()
        register = urllib.request.Request(
            f"http://{agent.address}/v1/agent/service/register", data=body, method="PUT"
        )
        with urllib.request.urlopen(register, timeout=5) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"http://{agent.address}/v1/health/service/sync") as resp:
            assert int(resp.headers["X-Consul-Index"]) >= 1
            assert json.load(resp)[0]["Service"]["Port"] == 7
        agent.stop()
    assert threading.active_count() == threads
