"""No call fails, and none reaches an instance the client cannot use
(issue 24): the Consul stand-in (tests/fakes/consul) lists two genuine TLS
gateways on moto beside bad instances it reports as passing: a server whose
certificate the client rejects (self-signed, or from the right CA for
another name), a port nothing listens on, a port that accepts TCP and never
answers; each in turn, then all four. Fresh clients (async, sync, and the
CLI in its own process) and a long-lived one call every method,
concurrently and one after another."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from blobgate.client import BlobgateError, Client, SyncClient
from blobgate.server.app import Gateway, start_gateway
from tests.fakes.consul import ConsulAgent
from tests.fakes.pki import CA, Issued
from tests.fakes.unusable import BlackHole, Counting, register_passing, tls_server
from tests.support.cli import run_cli
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import eventually, free_port

SERVICE = "blobgate"
NAME = "blobgate.service.consul"  # the name every genuine certificate carries
EJECTIONS = "blobgate.client.outliers"
SEED = b"seed object " * 20


# --- bad instances ---------------------------------------------------------------


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
    """The fleet's CA and the genuine gateways' certificate (and its files)."""

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
        server, port = await tls_server(issued, counting)
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


@dataclass
class Fleet:
    """The genuine gateways and bad instances Consul lists, and the failed
    calls the clients saw."""

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


@pytest.mark.slow  # a CLI upload runs as its own process
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
