"""Consul registration, against the Consul agent stand-in over HTTP: the
payload, the gRPC check following S3, Consul absent at start, a wiped agent,
deregistration on SIGTERM while an upload in flight completes, and the
address registered: one other hosts reach, never loopback with an agent on
another host."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blobgate.server.app import Gateway, StartupError, start_gateway
from blobgate.server.consul_registration import ConsulRegistration
from blobgate.server.core.settings import Settings
from blobgate.v1 import storage_pb2 as pb
from blobgate.v1 import storage_pb2_grpc
from tests.fakes.consul import ConsulAgent
from tests.support import ROOT
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import HeldUpload, LocalMoto, ensure_bucket, eventually
from tests.support.second_host import SecondHost
from tests.support.server_process import ServerProcess

MiB = 1024 * 1024
CHECK = {"check_interval": 0.3, "check_timeout": 1.0, "deregister_critical_after": 60.0}


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConsulAgent]:
    # py-consul lets CONSUL_HTTP_TOKEN override the token it is given.
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    with ConsulAgent(min_check_interval=0.1) as running:
        yield running


@pytest.fixture
async def registered(moto_endpoint: str, bucket: str, agent: ConsulAgent) -> AsyncIterator[Gateway]:
    settings = gateway_settings(
        moto_endpoint,
        bucket,
        consul=True,
        consul_http_addr=agent.address,
        consul_http_token="secret-token",
        service_tags=["blue", "s3"],
        **CHECK,
    )
    gw = await start_gateway(settings)
    yield gw
    await stop_gateway(gw)


def _service_id(gw: Gateway) -> str:
    assert gw.registration is not None
    return gw.registration.service_id


async def _listed(agent: ConsulAgent, service_id: str, within: float) -> None:
    """Wait until the agent lists the service ``service_id``."""

    async def listed() -> None:
        assert service_id in agent.services()

    await eventually(listed, within=within)


@asynccontextmanager
async def newcomer_gateway(
    moto_endpoint: str, bucket: str, agent_address: str
) -> AsyncIterator[Gateway]:
    """What a newcomer starts: every interface, Consul on, nothing else."""
    settings = gateway_settings(
        moto_endpoint, bucket, listen="0.0.0.0:0", insecure=True,
        consul=True, consul_http_addr=agent_address, **CHECK,
    )  # fmt: skip
    gw = await start_gateway(settings)
    try:
        yield gw
    finally:
        await stop_gateway(gw)


async def registered_address(agent: ConsulAgent, gw: Gateway) -> tuple[str, str]:
    """The gateway's service id and the address the agent lists for it."""
    service_id = _service_id(gw)
    await _listed(agent, service_id, within=10)
    return service_id, agent.services()[service_id]["Address"]


async def test_registration_payload_follows_the_agent_api(
    registered: Gateway, agent: ConsulAgent
) -> None:
    service_id = _service_id(registered)
    await _listed(agent, service_id, within=10)
    service = agent.services()[service_id]
    assert service["Service"] == "blobgate"
    assert service["Address"] == "127.0.0.1"
    assert service["Port"] == registered.port
    assert sorted(service["Tags"]) == ["blue", "s3"]
    assert service["Meta"]["api"] == "blobgate.v1"
    assert service["Meta"]["version"]

    register = [r for r in agent.requests if r["path"] == "/v1/agent/service/register"]
    assert register, "no register request reached the agent"

    # The agent takes PascalCase or snake/lower-case keys, and one check as
    # "Check" or as a one-item "Checks"; py-consul sends the latter forms.
    body = {key.lower(): value for key, value in register[-1]["json"].items()}
    checks = [body["check"]] if "check" in body else body["checks"]
    assert register[-1]["token"] == "secret-token"
    assert register[-1]["query"].get("replace-existing-checks") == "true"
    assert len(checks) == 1
    check = {key.lower(): value for key, value in checks[0].items()}
    assert check["grpc"] == f"127.0.0.1:{registered.port}/blobgate.v1.StorageService"
    assert check["interval"] == "0.3s"
    assert check["timeout"] == "1s"
    assert check["deregistercriticalserviceafter"] == "60s"
    assert body["id"] == service_id and body["name"] == "blobgate"


async def test_check_passes_only_while_s3_answers(bucket: str, agent: ConsulAgent) -> None:
    moto = LocalMoto()
    endpoint = moto.start()
    await ensure_bucket(endpoint, bucket)
    settings = gateway_settings(
        endpoint,
        bucket,
        consul=True,
        consul_http_addr=agent.address,
        create_buckets=False,
        s3_max_attempts=1,
        s3_connect_timeout=0.5,
        **CHECK,
    )
    gw = await start_gateway(settings)
    try:
        service_id = _service_id(gw)

        async def status_is(expected: str) -> None:
            assert agent.check_status(service_id) == expected

        await eventually(lambda: status_is("passing"), within=15)
        await moto.stop()  # S3 down: health NOT_SERVING, so Consul's own check fails
        await eventually(lambda: status_is("critical"), within=15)
        LocalMoto(port=moto.port).start()  # S3 back on the same address
        await eventually(lambda: status_is("passing"), within=15)
    finally:
        await stop_gateway(gw)


async def test_consul_absent_at_start_then_appearing(moto_endpoint: str, bucket: str) -> None:
    agent = ConsulAgent(min_check_interval=0.1)
    agent.start()
    agent.stop()  # a known port, nothing listening: Consul is down
    settings = gateway_settings(
        moto_endpoint, bucket, consul=True, consul_http_addr=agent.address, **CHECK
    )
    gw = await start_gateway(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            listing = await stub.List(pb.ListRequest(), timeout=10)  # serving anyway
            assert list(listing.objects) == []
        await asyncio.sleep(1.0)  # a few failed attempts
        agent.start()
        await _listed(agent, _service_id(gw), within=20)
    finally:
        await stop_gateway(gw)
        agent.stop()


async def test_wiped_agent_gets_the_registration_back(
    registered: Gateway, agent: ConsulAgent
) -> None:
    service_id = _service_id(registered)
    await _listed(agent, service_id, within=10)
    agent.wipe()
    assert service_id not in agent.services()
    await _listed(agent, service_id, within=5)  # within a couple of check intervals


async def test_stop_deregisters(registered: Gateway, agent: ConsulAgent) -> None:
    service_id = _service_id(registered)
    await _listed(agent, service_id, within=10)
    await registered.stop(grace=1.0)
    assert service_id not in agent.services()


@pytest.mark.slow
async def test_sigterm_deregisters_then_drains_in_flight_upload(
    moto_endpoint: str, bucket: str, s3: Any, agent: ConsulAgent
) -> None:
    server = await ServerProcess.gateway(
        moto_endpoint, bucket,
        "--part-size", "5MiB",
        "--consul",
        "--consul-http-addr", agent.address,
        "--check-interval", "0.3",
        "--drain-delay", "1",
        "--shutdown-grace", "20",
    )  # fmt: skip
    try:
        port = await server.wait_listening()

        async def registered_once() -> None:
            assert [s for s in agent.services().values() if s["Port"] == port]

        await eventually(registered_once, within=10)
        held = HeldUpload("drained.bin", os.urandom(7 * MiB), hold_at=4 * MiB)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            upload = asyncio.ensure_future(stub.Upload(held.requests(), timeout=60))
            await held.holding()
            server.proc.send_signal(signal.SIGTERM)

            async def deregistered() -> None:
                assert not [s for s in agent.services().values() if s["Port"] == port]

            await eventually(deregistered, within=10)
            assert server.proc.returncode is None, "exited before the upload finished"
            await held.completes(upload)
        assert await asyncio.wait_for(server.proc.wait(), 30) == 0
        stored = await s3.get_object(Bucket=bucket, Key="drained.bin")
        assert await stored["Body"].read() == held.blob
        log = server.text()
        assert log.index("deregistered") < log.index("stopped")
    finally:
        await server.kill()


# --- the address registered --------------------------------------------------------


def routable_address() -> str | None:
    """This host's IPv4 address on its default route (what ``ip route get``
    says), found here without the server's code; None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.88.99.1", 9))  # any global address; nothing is sent
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if ipaddress.ip_address(address).is_loopback else address


@pytest.fixture
def routable() -> str:
    address = routable_address()
    if address is None:
        pytest.skip("this host has no route beyond itself, so no address others could reach")
    return address


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


async def serving_at(address: str, port: int) -> None:
    target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    async with grpc.aio.insecure_channel(target) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=pb.DESCRIPTOR.services_by_name[
                "StorageService"].full_name),
            timeout=5,
        )  # fmt: skip
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_wildcard_listen_registers_an_address_other_hosts_reach(
    moto_endpoint: str,
    bucket: str,
    agent: ConsulAgent,
    routable: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="blobgate.server.advertise")
    async with newcomer_gateway(moto_endpoint, bucket, agent.address) as gw:
        service_id, address = await registered_address(agent, gw)
        assert address == routable, "not this host's address on its default route"
        # Whatever the host name resolves to (127.0.1.1 on Debian, 127.0.0.1
        # here), it played no part.
        assert not is_loopback(address)
        with socket.socket() as bound:
            bound.bind((address, 0))  # an address of this host: binding works
        await serving_at(address, gw.port)

        async def passing() -> None:  # the agent's own gRPC check reached it there
            assert agent.check_status(service_id) == "passing"

        await eventually(passing, within=15)
        chosen = [r.getMessage() for r in caplog.records if "registering address" in r.message]
        assert chosen == [
            f"Consul: registering address {address} (this host's address on its default "
            "route; listen 0.0.0.0:0)"
        ]


def test_the_hostname_is_not_what_is_registered(routable: str) -> None:
    try:
        by_name = socket.gethostbyname(socket.gethostname())
    except OSError:
        by_name = None
    registration = ConsulRegistration(Settings(listen="0.0.0.0:50051"), 50051)
    assert registration.address == routable
    if by_name is not None and is_loopback(by_name):  # Debian's and Ubuntu's /etc/hosts
        assert registration.address != by_name


def test_the_advertise_address_setting_wins_then_a_specific_listen_host() -> None:
    settings = Settings(listen="0.0.0.0:50051", advertise_address="blobgate-7.internal")
    assert ConsulRegistration(settings, 50051).payload()["address"] == "blobgate-7.internal"
    specific = Settings(listen="10.1.2.3:50051")
    assert ConsulRegistration(specific, 50051).payload()["address"] == "10.1.2.3"
    ipv6 = ConsulRegistration(Settings(listen="[2001:db8::7]:50051"), 50051).payload()
    assert ipv6["address"] == "2001:db8::7"  # Consul's Address: bare
    assert ipv6["check"]["grpc"] == "[2001:db8::7]:50051/blobgate.v1.StorageService"


# An address no host here has: an agent "on another host" for the choice of
# address, which is made before the agent is asked anything.
ELSEWHERE = "203.0.113.7:8500"


async def test_an_agent_on_this_hosts_own_address_is_local(
    moto_endpoint: str, bucket: str, routable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent bound to this host's address rather than loopback is still
    this host's: a loopback listen address is registered, and checked."""
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    with ConsulAgent(host=routable, min_check_interval=0.1) as local:
        settings = gateway_settings(
            moto_endpoint, bucket, consul=True, consul_http_addr=local.address, **CHECK
        )
        gw = await start_gateway(settings)
        try:
            service_id = _service_id(gw)
            await _listed(local, service_id, within=10)
            assert local.services()[service_id]["Address"] == "127.0.0.1"

            async def passing() -> None:
                assert local.check_status(service_id) == "passing"

            await eventually(passing, within=15)
        finally:
            await stop_gateway(gw)


def test_an_agent_elsewhere_gets_the_address_this_host_reaches_it_from(
    routable: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="blobgate.server.advertise")
    settings = Settings(listen="0.0.0.0:50051", consul_http_addr=ELSEWHERE)
    assert ConsulRegistration(settings, 50051).address == routable  # its route: the default one
    assert caplog.messages == [
        f"Consul: registering address {routable} (the address this host reaches the Consul "
        f"agent at http://{ELSEWHERE} from; listen 0.0.0.0:50051)"
    ]


@pytest.mark.parametrize(
    "overrides",
    [
        {"listen": "127.0.0.1:0"},
        {"listen": "0.0.0.0:0", "insecure": True, "advertise_address": "127.0.0.1"},
    ],
)
async def test_loopback_is_never_registered_with_an_agent_on_another_host(
    moto_endpoint: str, bucket: str, overrides: dict[str, Any]
) -> None:
    settings = gateway_settings(
        moto_endpoint, bucket, consul=True, consul_http_addr=ELSEWHERE, **overrides
    )
    with pytest.raises(StartupError) as refused:
        await start_gateway(settings)
    message = str(refused.value)
    assert message.startswith("refusing to register the loopback address 127.0.0.1")
    assert f"the Consul agent at http://{ELSEWHERE}: the agent is on another host" in message
    assert "advertise_address" in message and "\n" not in message


@pytest.mark.slow
async def test_the_server_process_refuses_loopback_for_a_remote_agent(
    moto_endpoint: str, bucket: str
) -> None:
    server = await ServerProcess.gateway(
        moto_endpoint, bucket, "--consul", "--consul-http-addr", ELSEWHERE
    )
    try:
        assert server.proc.stderr is not None
        err = await asyncio.wait_for(server.proc.stderr.read(), 30)
        assert await server.proc.wait() == 1
        lines = err.decode().strip().splitlines()
        assert lines[-1].startswith("blobgate-server: refusing to register the loopback"), lines
        assert not any("listening" in line for line in lines)
    finally:
        await server.kill()


# --- from another host --------------------------------------------------------------


@pytest.fixture
def second_host() -> Iterator[SecondHost]:
    host = SecondHost.create()
    if isinstance(host, str):
        pytest.skip(host)
    try:
        yield host
    finally:
        host.remove()


async def probe_from(host: SecondHost, address: str, port: int) -> tuple[int, str]:
    """blobgate-probe run on ``host`` against ``address:port``."""
    probe = await host.run(
        ["python", "-m", "blobgate.server.probe", "--plaintext", "--address", f"{address}:{port}"]
    )
    out, _ = await asyncio.wait_for(probe.communicate(), 30)
    assert probe.returncode is not None
    return probe.returncode, out.decode()


async def test_another_host_reaches_the_address_a_newcomer_registers(
    moto_endpoint: str, bucket: str, agent: ConsulAgent, second_host: SecondHost
) -> None:
    """The issue's set-up: a local agent, listen on every interface, a host
    name that resolves to loopback; a host elsewhere calls the address
    registered."""
    async with newcomer_gateway(moto_endpoint, bucket, agent.address) as gw:
        _, address = await registered_address(agent, gw)
        code, out = await probe_from(second_host, address, gw.port)
        assert (code, out) == (0, f"{address}:{gw.port} blobgate.v1.StorageService: SERVING\n")
        # The control: loopback, what was registered before, reaches nothing there.
        code, out = await probe_from(second_host, "127.0.0.1", gw.port)
        assert code != 0, out


AGENT_ON_SECOND_HOST = """
import sys
sys.path.insert(0, sys.argv[2])
from tests.fakes.consul import ConsulAgent
agent = ConsulAgent(host=sys.argv[1], min_check_interval=0.1)
agent.start()
print(agent.port, flush=True)
sys.stdin.read()
agent.stop()
"""


async def test_an_agent_on_another_host_checks_the_address_registered(
    moto_endpoint: str, bucket: str, second_host: SecondHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    remote = await second_host.run(
        ["python", "-c", AGENT_ON_SECOND_HOST, second_host.address, str(ROOT)],
        stdin=asyncio.subprocess.PIPE,
    )
    try:
        assert remote.stdout is not None
        line = await asyncio.wait_for(remote.stdout.readline(), 30)
        agent_address = f"{second_host.address}:{int(line)}"
        async with newcomer_gateway(moto_endpoint, bucket, agent_address) as gw:
            service_id = _service_id(gw)

            async def checked() -> None:
                async with aiohttp.ClientSession() as http:
                    url = f"http://{agent_address}/v1/agent/checks"
                    async with http.get(url) as answer:
                        checks = await answer.json()
                mine = [c for c in checks.values() if c["ServiceID"] == service_id]
                assert [c["Status"] for c in mine] == ["passing"], mine

            await eventually(checked, within=20, interval=0.2)
            assert gw.registration is not None
            assert gw.registration.address == second_host.gateway
    finally:
        assert remote.stdin is not None
        remote.stdin.close()
        await asyncio.wait_for(remote.wait(), 30)
