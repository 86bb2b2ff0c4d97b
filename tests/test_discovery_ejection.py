"""Discovery that never costs a call (issue 24). Calls only start on
connected instances; a failure to connect is retried on another instance
whatever the method (uploads too), a call a server may have seen is never
repeated unless idempotent, and instances that cannot serve are ejected for
a backoff that grows while they keep failing.

Real parts throughout: the Consul stand-in (tests/fakes/consul) lists two
genuine TLS gateways on moto beside one bad instance it reports as passing:
a server whose certificate the client rejects (self-signed, or from the
right CA for another name), a port nothing listens on, or a port that
accepts TCP and never answers. Fresh clients (async, sync, and the CLI in
its own process) and a long-lived one call every method, concurrently and
one after another."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import consul
import consul.aio
import grpc
import pytest
from conftest import gateway_settings, stop_gateway
from fakes.consul import ConsulAgent
from fakes.pki import CA, Issued
from helpers import eventually, free_port
from test_cli import run_cli

from blobgate.client import BlobgateError, Client, ClientOptions, SyncClient
from blobgate.client.outliers import EjectionPolicy, Outliers
from blobgate.client.pool import Balancing, Pool
from blobgate.server.app import Gateway, start_gateway
from blobgate.v1 import storage_pb2 as pb
from blobgate.v1 import storage_pb2_grpc

Code = grpc.StatusCode
SERVICE = "blobgate"
NAME = "blobgate.service.consul"  # the name every genuine certificate carries
EJECTIONS = "blobgate.client.outliers"
SEED = b"seed object " * 20


# --- bad instances -------------------------------------------------------------


class Counting(grpc.GenericRpcHandler):
    """Records every call that reaches a server, and serves none."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> None:
        self.methods.append(handler_call_details.method)


class BlackHole:
    """Accepts TCP connections and never sends a byte."""

    def __init__(self) -> None:
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        while await reader.read(65536):  # whatever the client says, no answer
            pass

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


@dataclass
class Bad:
    """The bad instance: its address, why the client must refuse it, and
    the calls that reached it (a server that cannot be reached sees none)."""

    kind: str
    address: str
    why: str  # in the ejection's log line
    reached: Callable[[], list[str]]


@dataclass
class Pki:
    ca: CA
    ca_file: Path
    genuine: Issued
    files: tuple[Path, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = CA()
    genuine = ca.server(dns_names=(NAME,))
    return Pki(ca, ca.write(directory), genuine, genuine.write(directory, "genuine"))


async def _tls_server(
    issued: Issued, handler: grpc.GenericRpcHandler
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials([(issued.key, issued.cert)])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, port


KINDS = ["self-signed", "wrong-name", "closed-port", "black-hole"]


async def _bad(kind: str, pki: Pki, stack: contextlib.AsyncExitStack) -> Bad:
    if kind in ("self-signed", "wrong-name"):
        # Self-signed: another CA, the right name. Wrong name: the right CA.
        issued = (
            CA("a stranger").server(dns_names=(NAME,))
            if kind == "self-signed"
            else pki.ca.server(dns_names=("other.service.consul",))
        )
        counting = Counting()
        server, port = await _tls_server(issued, counting)
        stack.push_async_callback(server.stop, 0)
        why = "CERTIFICATE_VERIFY_FAILED" if kind == "self-signed" else "Hostname Verification"
        return Bad(kind, f"127.0.0.1:{port}", why, lambda: counting.methods)
    if kind == "closed-port":
        return Bad(kind, f"127.0.0.1:{free_port()}", "Connection refused", list)
    hole = BlackHole()
    port = await hole.start()
    stack.push_async_callback(hole.stop)
    return Bad(kind, f"127.0.0.1:{port}", "no connection within", list)


@pytest.fixture(params=[*KINDS, "all four"])
async def bad(request: pytest.FixtureRequest, pki: Pki) -> AsyncIterator[list[Bad]]:
    """One bad instance of each kind in turn, then all four together."""
    kinds = KINDS if request.param == "all four" else [request.param]
    async with contextlib.AsyncExitStack() as stack:
        yield [await _bad(kind, pki, stack) for kind in kinds]


# --- the fleet -----------------------------------------------------------------


@pytest.fixture
def agent() -> Iterator[ConsulAgent]:
    with ConsulAgent(min_check_interval=0.2) as running:
        yield running


async def register_passing(agent: ConsulAgent, service_id: str, address: str) -> None:
    """Register ``address`` with a TTL check marked passing: Consul lists it
    whatever the client makes of it."""
    host, _, port = address.rpartition(":")
    api = consul.aio.Consul(host="127.0.0.1", port=agent.port)
    try:
        await api.agent.service.register(
            SERVICE,
            service_id=service_id,
            address=host,
            port=int(port),
            check=consul.Check.ttl("60s"),
        )
        await api.agent.check.ttl_pass(f"service:{service_id}")
    finally:
        await api.close()


@dataclass
class Fleet:
    agent: ConsulAgent
    pki: Pki
    gateways: list[Gateway]
    bad: list[Bad]
    failures: list[str] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{g.port}" for g in self.gateways]

    def options(self, **extra: Any) -> dict[str, Any]:
        """A service owner's client settings: Consul, TLS with the fleet's CA
        and the service's name. A short connect_timeout lets the black hole
        be ejected within the test's few seconds."""
        return {
            "consul_addr": self.agent.address,
            "root_certificates": self.pki.ca.pem,
            "server_name_override": NAME,
            "timeout": 20,
            "connect_timeout": 2.0,
            **extra,
        }


@pytest.fixture
async def fleet(
    agent: ConsulAgent, pki: Pki, bad: list[Bad], moto_endpoint: str, bucket: str
) -> AsyncIterator[Fleet]:
    cert, key = pki.files
    settings = gateway_settings(moto_endpoint, bucket, tls_cert_file=cert, tls_key_file=key)
    gateways = list(await asyncio.gather(start_gateway(settings), start_gateway(settings)))
    fleet = Fleet(agent, pki, gateways, bad)
    for n, address in enumerate(fleet.addresses):
        await register_passing(agent, f"genuine-{n}", address)
    for instance in bad:
        await register_passing(agent, instance.kind, instance.address)
    async with Client(fleet.addresses[0], **fleet.options()) as direct:
        await direct.upload("seed", SEED)
    yield fleet
    await asyncio.gather(*(stop_gateway(g) for g in gateways))


# --- every method ----------------------------------------------------------------

METHODS = 9


async def call(client: Client, method: int, tag: str) -> None:
    """Call method number ``method`` (of ``METHODS``) and check its answer."""
    key = f"{tag}/{method % METHODS}"
    match method % METHODS:
        case 0:
            assert (await client.upload(key, b"plain upload")).size == 12
        case 1:
            assert (await client.upload(key, b"resumable", resumable=True)).size == 9
        case 2:
            assert b"".join([chunk async for chunk in client.download("seed")]) == SEED
        case 3:
            assert (await client.stat("seed")).size == len(SEED)
        case 4:
            assert [o.key for o in (await client.list_page("seed")).objects] == ["seed"]
        case 5:
            assert "seed" in (await client.presign("seed")).url
        case 6:
            assert (await client.copy("seed", key)).size == len(SEED)
        case 7:
            await client.delete(key)
        case _:
            results = await client.batch_delete([key, f"{key}/other"])
            assert all(r.deleted for r in results)


def sync_call(client: SyncClient, method: int, tag: str) -> None:
    """``call``, through the blocking client."""
    key = f"{tag}/{method % METHODS}"
    match method % METHODS:
        case 0:
            assert client.upload(key, b"plain upload").size == 12
        case 1:
            assert client.upload(key, b"resumable", resumable=True).size == 9
        case 2:
            assert b"".join(client.download("seed")) == SEED
        case 3:
            assert client.stat("seed").size == len(SEED)
        case 4:
            assert [o.key for o in client.list_page("seed").objects] == ["seed"]
        case 5:
            assert "seed" in client.presign("seed").url
        case 6:
            assert client.copy("seed", key).size == len(SEED)
        case 7:
            client.delete(key)
        case _:
            assert all(r.deleted for r in client.batch_delete([key, f"{key}/other"]))


async def noted(fleet: Fleet, what: str, work: Awaitable[None]) -> None:
    """Await ``work``; a failure is noted in ``fleet.failures``, not raised."""
    try:
        await work
    except (BlobgateError, AssertionError) as exc:
        fleet.failures.append(f"{what}: {exc!r}")


async def fresh_client(fleet: Fleet, tag: str, first: int, counts: list[dict[str, int]]) -> None:
    """A new client's life: its first calls at once, one per instance (the
    rotation starts each at another instance, so one at each bad one), then
    two more."""
    size = len(fleet.gateways) + len(fleet.bad)
    async with Client(f"consul://{SERVICE}", **fleet.options()) as client:
        await asyncio.gather(
            *(
                noted(fleet, f"{tag} first {first + n}", call(client, first + n, tag))
                for n in range(size)
            )
        )
        for n in range(size, size + 2):
            await noted(fleet, f"{tag} {first + n}", call(client, first + n, tag))
    counts.append(client.call_counts())


def fresh_sync_client(fleet: Fleet, tag: str, first: int, counts: list[dict[str, int]]) -> None:
    """A new blocking client's life: a call for each instance, and two more,
    one after another (the rotation's choices cover every instance)."""
    with SyncClient(f"consul://{SERVICE}", **fleet.options()) as client:
        for n in range(len(fleet.gateways) + len(fleet.bad) + 2):
            try:
                sync_call(client, first + n, tag)
            except (BlobgateError, AssertionError) as exc:
                fleet.failures.append(f"{tag} {first + n}: {exc!r}")
        counts.append(client.call_counts())


async def cli(fleet: Fleet, *args: str, stdin: bytes | None = None) -> bytes:
    result = await run_cli(
        "--server",
        f"consul://{SERVICE}",
        "--ca-file",
        str(fleet.pki.ca_file),
        "--tls-server-name",
        NAME,
        *args,
        stdin=stdin,
        env={"CONSUL_HTTP_ADDR": fleet.agent.address},
    )
    if result.returncode != 0:
        fleet.failures.append(f"blobgate {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


async def test_no_call_fails_and_none_reaches_a_bad_instance(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=EJECTIONS)
    counts: list[dict[str, int]] = []
    stop = asyncio.Event()
    long_lived_calls = [0]

    async def long_lived() -> None:
        async with Client(f"consul://{SERVICE}", **fleet.options()) as client:

            async def worker(n: int) -> None:
                method = n
                while not stop.is_set():
                    await noted(fleet, f"long-lived {method}", call(client, method, f"long/{n}"))
                    long_lived_calls[0] += 1
                    method += 1

            await asyncio.gather(*(worker(n) for n in range(3)))
        counts.append(client.call_counts())

    def ejections(bad: Bad) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == EJECTIONS and bad.address in r.getMessage()]

    started = time.monotonic()
    running = asyncio.create_task(long_lived())
    # Fresh clients all at once (their first calls cover every method), a
    # CLI upload (a fresh process), then fresh clients one after another,
    # and blocking ones.
    await asyncio.gather(
        *(fresh_client(fleet, f"together/{n}", first, counts) for n, first in enumerate([0, 3, 6])),
        cli(fleet, "put", "-", "cli/put", stdin=b"from the CLI"),
    )
    for n, first in enumerate([1, 5]):
        await fresh_client(fleet, f"alone/{n}", first, counts)
    for n, first in enumerate([0, 4]):
        await asyncio.to_thread(fresh_sync_client, fleet, f"sync/{n}", first, counts)

    # The long-lived client runs on until every bad instance's ejection
    # shows (a black hole's after connect_timeout).
    async def all_ejected() -> None:
        assert all(ejections(b) for b in fleet.bad)

    with contextlib.suppress(AssertionError):  # the checks below say which was not
        await eventually(all_ejected, within=10)
    stop.set()
    await running
    elapsed = time.monotonic() - started

    assert fleet.failures == [], fleet.failures[:5]
    assert len(counts) == 3 + 2 + 2 + 1
    assert long_lived_calls[0] >= 20
    # Both genuine gateways served; no call was started on a bad instance,
    # and none reached one.
    assert all(sum(c.get(a, 0) for c in counts) > 10 for a in fleet.addresses), counts
    for bad in fleet.bad:
        assert bad.reached() == [], bad.kind
        assert all(c.get(bad.address, 0) == 0 for c in counts), (bad.kind, counts)
        # Each ejection is one WARNING line naming the instance and why.
        lines = ejections(bad)
        assert lines, f"no ejection of the {bad.kind} instance logged"
        assert all(r.levelno == logging.WARNING and bad.why in r.getMessage() for r in lines)
        if bad.kind != "black-hole":
            # Every in-process client met it (one of its first calls
            # started there) and ejected it. A black hole is ejected only
            # after connect_timeout, which most fresh clients do not live to see.
            assert len(lines) >= 3 + 2 + 2, (bad.kind, len(lines))
    assert elapsed < 60


# --- smaller cases on plaintext servers ---------------------------------------------


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
