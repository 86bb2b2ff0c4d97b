"""Consul registration, against the Consul agent stand-in over HTTP: the
payload, the gRPC check following S3, Consul absent at start, a wiped agent,
and deregistration on SIGTERM while an upload in flight completes."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from conftest import gateway_settings, stop_gateway
from fakes.consul import ConsulAgent
from helpers import HeldUpload, LocalMoto, ensure_bucket, eventually
from server_process import ServerProcess

from blobgate.server.app import Gateway, start_gateway
from blobgate.v1 import storage_pb2 as pb
from blobgate.v1 import storage_pb2_grpc

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
