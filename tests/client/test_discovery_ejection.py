"""Calls only start on connected instances (issue 24): a failure to
connect is retried whatever the method, a call a server saw is repeated only
if idempotent, and instances that cannot serve are ejected for a backoff
that grows while they keep failing; against real gRPC servers, gateways on
moto and the Consul stand-in. tests/test_discovery_fleet.py has the fleet
of genuine and bad instances."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from blobgate.client import BlobgateError, Client, ClientOptions
from blobgate.client.outliers import EjectionPolicy, Outliers
from blobgate.client.pool import Balancing, Pool
from blobgate.server.app import Gateway, start_gateway
from blobgate.v1 import storage_pb2 as pb
from blobgate.v1 import storage_pb2_grpc
from tests.fakes.consul import ConsulAgent
from tests.fakes.unusable import BlackHole, register_passing
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import eventually, free_port

Code = grpc.StatusCode
SERVICE = "blobgate"
EJECTIONS = "blobgate.client.outliers"


@pytest.fixture
def agent() -> Iterator[ConsulAgent]:
    with ConsulAgent(min_check_interval=0.2) as running:
        yield running


class Unavailable(storage_pb2_grpc.StorageServiceServicer):
    """A server that takes calls and answers UNAVAILABLE (while ``failing``)."""

    def __init__(self) -> None:
        self.uploads = 0
        self.stats = 0
        self.failing = True

    async def Upload(self, request_iterator: Any, context: Any) -> pb.UploadResponse:
        async for _ in request_iterator:
            self.uploads += 1
            break
        await context.abort(Code.UNAVAILABLE, "not now")
        raise AssertionError("unreachable")

    async def Stat(self, request: pb.StatRequest, context: Any) -> pb.StatResponse:
        self.stats += 1
        if self.failing:
            await context.abort(Code.UNAVAILABLE, "not now")
        return pb.StatResponse(object=pb.Object(key=request.key, size=1))


@pytest.fixture
async def unavailable() -> AsyncIterator[tuple[str, Unavailable]]:
    servicer = Unavailable()
    server = grpc.aio.server()
    storage_pb2_grpc.add_StorageServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", servicer
    await server.stop(0)


async def test_a_call_a_server_saw_is_repeated_only_if_idempotent(
    unavailable: tuple[str, Unavailable],
) -> None:
    address, servicer = unavailable
    async with Client(address, max_attempts=4, timeout=10) as client:
        with pytest.raises(BlobgateError) as caught:
            await client.upload("k", b"sent once")
        assert caught.value.code == Code.UNAVAILABLE and not caught.value.unsent
        assert servicer.uploads == 1  # it reached the server: never sent again
        with pytest.raises(BlobgateError) as caught:
            await client.stat("k")
        assert servicer.stats == 4  # idempotent: max_attempts tries


async def test_connecting_is_retried_for_an_upload_too() -> None:
    """A port nothing listens on: the upload is never sent, and connecting
    is tried max_attempts times, each on a new channel."""
    address = f"127.0.0.1:{free_port()}"
    async with Client(address, max_attempts=3, timeout=10) as client:
        started = time.monotonic()
        with pytest.raises(BlobgateError) as caught:
            await client.upload("k", b"never sent")
        assert caught.value.code == Code.UNAVAILABLE and caught.value.unsent
        assert "Connection refused" in caught.value.message
        assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)
        assert client.call_counts() == {}  # no call started
        assert time.monotonic() - started < 5  # two pauses of about 0.1 and 0.2 s


async def test_an_instance_answering_unavailable_is_ejected_with_a_growing_backoff(
    agent: ConsulAgent,
    gateway: Gateway,
    unavailable: tuple[str, Unavailable],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=EJECTIONS)
    address, servicer = unavailable
    good = f"127.0.0.1:{gateway.port}"
    await register_passing(agent, "good", good)
    await register_passing(agent, "unavailable", address)
    async with Client(good) as direct:
        await direct.upload("k", b"x")
    options = {"eject_after": 2, "eject_time": 0.4, "max_eject_time": 0.8, "timeout": 10}
    async with Client(f"consul://{SERVICE}", consul_addr=agent.address, **options) as client:

        def ejections() -> list[logging.LogRecord]:
            return [
                r for r in caplog.records if r.name == EJECTIONS and r.levelno >= logging.WARNING
            ]

        # Calls one after another until its third ejection; each succeeds
        # (retried on the good one).
        started = time.monotonic()
        calls = 0
        while len(ejections()) < 3:
            assert time.monotonic() - started < 20, "not ejected three times"
            assert (await client.stat("k")).size == 1
            calls += 1
            await asyncio.sleep(0.01)
        lines = [r.getMessage() for r in ejections()]
        assert all(address in line and "UNAVAILABLE: not now" in line for line in lines)
        assert "ejected for 0.4s (ejection 1 in a row): 2 call(s) in a row failed" in lines[0]
        assert "ejected for 0.8s (ejection 2 in a row): 1 call(s) in a row failed" in lines[1]
        assert "ejected for 0.8s (ejection 3 in a row)" in lines[2]
        # Two calls, then one after each ejection ended; none while ejected.
        assert servicer.stats == 2 + 1 + 1
        times = [r.created for r in ejections()]
        assert times[1] - times[0] >= 0.4 and times[2] - times[1] >= 0.8
        assert calls > servicer.stats

        # It serves again: the next try after its ejection clears its record.
        servicer.failing = False
        await asyncio.sleep(0.9)
        before = servicer.stats
        for _ in range(10):
            await client.stat("k")
        assert servicer.stats - before >= 4  # back in the rotation
        assert any("serves again" in r.getMessage() for r in caplog.records)


async def test_with_every_instance_ejected_the_least_recently_failed_is_tried(
    agent: ConsulAgent, moto_endpoint: str, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    await register_passing(agent, "first", first)
    await register_passing(agent, "second", second)
    options = {"eject_time": 30.0, "max_attempts": 2, "timeout": 10}
    async with Client(f"consul://{SERVICE}", consul_addr=agent.address, **options) as client:
        with pytest.raises(BlobgateError) as caught:
            await client.stat("k")
        assert caught.value.code == Code.UNAVAILABLE and caught.value.unsent
        assert set(client.transport.ejections()) == {first, second}  # type: ignore[attr-defined]

        # Both come back (still ejected for 30 s): the call goes to the one
        # that failed least recently, at once.
        outliers = client.transport.pool.outliers  # type: ignore[attr-defined]
        oldest = min((first, second), key=outliers.last_failure)
        gateways = [
            await start_gateway(gateway_settings(moto_endpoint, bucket, listen=address))
            for address in (first, second)
        ]
        try:
            with pytest.raises(BlobgateError) as caught:
                await client.stat("k")
            assert caught.value.code == Code.NOT_FOUND  # a gateway answered
            assert client.call_counts() == {oldest: 1}
        finally:
            await asyncio.gather(*(stop_gateway(g) for g in gateways))


async def test_a_port_that_never_answers_fails_the_call_after_connect_timeout() -> None:
    """Plaintext too: gRPC reports a connection ready only once the server's
    HTTP/2 SETTINGS arrived, so nothing is sent to a port that only accepts."""
    hole = BlackHole()
    address = f"127.0.0.1:{await hole.start()}"
    try:
        options = {"connect_timeout": 0.3, "max_attempts": 2, "timeout": 10}
        async with Client(address, **options) as client:
            started = time.monotonic()
            with pytest.raises(BlobgateError) as caught:
                await client.upload("k", b"never sent")
            elapsed = time.monotonic() - started
        assert caught.value.code == Code.UNAVAILABLE and caught.value.unsent
        assert f"{address}: no connection within 0.3s" in caught.value.message
        assert 0.6 <= elapsed < 5.0  # not gRPC's own 20 s, nor the 10 s deadline
        assert hole.connections == 2  # each try on a new connection
    finally:
        await hole.stop()


async def test_a_call_whose_choice_never_answers_is_hedged_to_the_next(gateway: Gateway) -> None:
    """The rotation's choice accepts TCP and never answers: after the hedge
    delay the call also connects to the next instance, and takes it."""
    empty = Pool([], [])
    assert await empty.connect((), 1.0) is None  # no instance: the transport says why
    await empty.close()
    hole = BlackHole()
    silent = f"127.0.0.1:{await hole.start()}"
    good = f"127.0.0.1:{gateway.port}"
    try:
        for start, least, most in [(0, 0.2, 3.0), (1, 0.0, 3.0)]:  # the hole first, then not
            balancing = Balancing.of(ClientOptions(connect_hedge=0.2))
            pool = Pool([silent, good], [], balancing=balancing, start=start)
            try:
                started = time.monotonic()
                endpoint = await pool.connect((), 10.0)
                elapsed = time.monotonic() - started
                assert endpoint is not None and endpoint.address == good, start
                assert endpoint.ready()
                assert least <= elapsed < most, (start, elapsed)
                assert pool.outliers.ejections() == {}  # still connecting, within connect_timeout
            finally:
                await pool.close()
    finally:
        await hole.stop()


async def test_preconnect_finds_the_bad_instance_before_the_first_call(
    agent: ConsulAgent, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    good = f"127.0.0.1:{gateway.port}"
    await register_passing(agent, "good", good)
    await register_passing(agent, "dead", dead)
    async with Client(f"consul://{SERVICE}", consul_addr=agent.address, preconnect=True) as client:

        async def ejected() -> None:
            assert dead in client.transport.ejections()  # type: ignore[attr-defined]

        await eventually(ejected, within=10)
        assert client.call_counts() == {}
        with pytest.raises(BlobgateError) as caught:
            await client.stat("missing")
        assert caught.value.code == Code.NOT_FOUND
        assert client.call_counts() == {good: 1}


# --- the ejection rules, on a clock of the test's own --------------------------------


def test_ejection_rules(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=EJECTIONS)
    now = [100.0]
    outliers = Outliers(EjectionPolicy(after=3, base=1.0, cap=4.0), clock=lambda: now[0])
    a, b = "10.0.0.1:1", "10.0.0.2:1"

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    # UNAVAILABLE answers: ejected after three in a row; a success between resets.
    outliers.call_failed(a, "UNAVAILABLE: x")
    outliers.call_failed(a, "UNAVAILABLE: x")
    outliers.call_served(a)
    outliers.call_failed(a, "UNAVAILABLE: x")
    outliers.call_failed(a, "UNAVAILABLE: x")
    assert not outliers.ejected(a)
    outliers.call_failed(a, "UNAVAILABLE: x")
    assert outliers.ejected(a) and warnings() == [
        f"blobgate instance {a} ejected for 1s (ejection 1 in a row): "
        "3 call(s) in a row failed: UNAVAILABLE: x"
    ]
    # Calls that were running fail too: no second ejection, no second line.
    outliers.call_failed(a, "UNAVAILABLE: x")
    assert len(warnings()) == 1

    # Back after 1 s, on probation: one failure ejects it for 2 s, then 4 (the cap), 4.
    lengths = []
    for _ in range(3):
        ejected_at = now[0]
        while outliers.ejected(a):
            now[0] += 0.25
        lengths.append(now[0] - ejected_at)
        outliers.call_failed(a, "UNAVAILABLE: x")
    while outliers.ejected(a):
        now[0] += 0.25
    assert lengths == [1.0, 2.0, 4.0]
    assert len(warnings()) == 4 and "ejected for 4s (ejection 4 in a row)" in warnings()[-1]

    # A failed connection ejects at once; the least recently failed is known.
    now[0] += 1
    outliers.connect_failed(b, "Connection refused")
    assert outliers.ejected(b) and "no connection: Connection refused" in warnings()[-1]
    assert outliers.last_failure(a) < outliers.last_failure(b)
    assert outliers.ejections() == {b: "no connection: Connection refused"}

    # Served once: the record is cleared, the backoff starts over.
    outliers.call_served(a)
    assert outliers.last_failure(a) == float("-inf")
    outliers.keep_only([a])
    assert outliers.ejections() == {}
