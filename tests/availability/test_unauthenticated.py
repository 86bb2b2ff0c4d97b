"""Unauthenticated work is bounded and cheap: callers that present no
identity (health, reflection, StorageService calls without a bearer token)
cannot take the room of identified ones. Each attack runs beside a victim,
an identified caller whose Stat and Upload keep answering at once: health
Watch floods without a token (JWT), from an mTLS client with no grants and
on the health listener; health calls whose request never arrives; and calls
without a token that announce a large message and never finish it, which
are refused before the message is read. (Connections that never handshake:
test_handshakes.)"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blobgate.server.rpc.admission import RefusalLog
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes.pki import CA
from tests.fakes.raw_h2 import RawCall
from tests.support.availability import (
    AUDIENCE,
    ISSUER,
    LIMITS,
    OWN_CONNECTION,
    PROMPT,
    SECRET,
    SERVING,
    STAT,
    Code,
    check,
    client_tls,
    partial_message,
    tls_channel,
    tls_gateway,
    token,
    victim_works,
)
from tests.support.gateways import gateway_settings
from tests.support.helpers import MiB, eventually
from tests.support.server_process import ServerProcess


@pytest.fixture
def ca() -> CA:
    return CA()


async def watch_flood(channels: list[grpc.aio.Channel], per_channel: int) -> tuple[list[Any], int]:
    """Open ``per_channel`` health Watch streams on each channel at once; the
    ones that stay open (their first answer read) and how many were refused.
    A refusal is UNIMPLEMENTED past ``max_health_watches`` (what gRPC's
    client-side health checking takes as "no health checking here: assume
    healthy") or, while refused Watches are still finishing, RESOURCE_EXHAUSTED
    from the anonymous share; which of the two depends on timing."""
    calls = [
        health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        for channel in channels
        for _ in range(per_channel)
    ]
    results = await asyncio.gather(
        *(asyncio.wait_for(call.read(), 10) for call in calls), return_exceptions=True
    )
    open_calls, refused = [], 0
    for call, result in zip(calls, results, strict=True):
        if isinstance(result, grpc.aio.AioRpcError):
            assert result.code() in (Code.UNIMPLEMENTED, Code.RESOURCE_EXHAUSTED), result
            if result.code() == Code.UNIMPLEMENTED:
                assert "use Check" in (result.details() or "")
            refused += 1
        else:
            assert not isinstance(result, BaseException), result
            open_calls.append(call)
    return open_calls, refused


async def one_more_watch_is_unimplemented(channel: grpc.aio.Channel) -> None:
    """Once the flood has settled, a further Watch is refused with
    UNIMPLEMENTED: the Watch limit, not the anonymous share, turns it away."""
    call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call.read(), 10)
    assert caught.value.code() == Code.UNIMPLEMENTED, caught.value
    assert "use Check" in (caught.value.details() or "")


async def test_a_watch_flood_without_a_token_leaves_the_identified_callers_alone(
    tmp_path: Path, ca: CA
) -> None:
    """Health needs no identity: a caller with no token used to keep enough
    Watch streams open to fill max_calls, and every other call, an
    identified caller's Stat and every health Check included, got
    RESOURCE_EXHAUSTED."""
    async with tls_gateway(tmp_path, ca, "jwt", **LIMITS) as gateway:
        attacker = tls_channel(gateway.port, ca)
        victim = tls_channel(gateway.port, ca, bearer=token())
        async with attacker, victim:
            watches, refused = await watch_flood([attacker], 20)
            await victim_works(victim, "during-watch-flood")
            assert await check(attacker) == SERVING
            assert len(watches) == 3 and refused == 17
            await one_more_watch_is_unimplemented(attacker)
            for call in watches:
                call.cancel()


async def test_a_watch_flood_from_a_client_with_no_grants(tmp_path: Path, ca: CA) -> None:
    """An mTLS client whose certificate the CA signed but the policy grants
    nothing: its Watch streams count among the calls without an identity,
    not in max_calls."""
    async with tls_gateway(tmp_path, ca, "mtls", **LIMITS) as gateway:
        attacker = tls_channel(gateway.port, ca, client=ca.client("nobody"))
        victim = tls_channel(gateway.port, ca, client=ca.client("victim"))
        async with attacker, victim:
            watches, refused = await watch_flood([attacker], 20)
            await victim_works(victim, "during-mtls-watch-flood")
            assert await check(attacker) == SERVING
            assert len(watches) == 3 and refused == 17
            await one_more_watch_is_unimplemented(attacker)
            # The attacker itself may do nothing but ask about health.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await storage_pb2_grpc.StorageServiceStub(attacker).Stat(
                    storage_pb2.StatRequest(key="x"), timeout=PROMPT
                )
            assert caught.value.code() == Code.PERMISSION_DENIED
            for call in watches:
                call.cancel()


async def test_a_watch_flood_on_the_health_listener_leaves_check_answering(
    tmp_path: Path, ca: CA
) -> None:
    """The plaintext health listener allows 64 calls: 64 Watch streams used
    to fill it, and the probes' Check got RESOURCE_EXHAUSTED."""
    async with tls_gateway(
        tmp_path, ca, "mtls", health_listen="127.0.0.1:0", max_health_watches=4
    ) as gateway:
        address = f"127.0.0.1:{gateway.health_port}"
        channels = [grpc.aio.insecure_channel(address, options=OWN_CONNECTION) for _ in range(10)]
        try:
            watches, refused = await watch_flood(channels, 8)
            async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as probe:
                assert await check(probe) == SERVING
            assert len(watches) == 4 and refused == 76
            await one_more_watch_is_unimplemented(channels[0])
            victim = tls_channel(gateway.port, ca, client=ca.client("victim"))
            async with victim:
                await victim_works(victim, "during-listener-flood")
        finally:
            for channel in channels:
                await channel.close()


async def test_a_watch_ends_after_its_lifetime(tmp_path: Path, ca: CA) -> None:
    """A Watch ends with OK after health_watch_lifetime, and gives its room
    back; standard clients open a new one."""
    async with (
        tls_gateway(
            tmp_path, ca, "jwt", health_watch_lifetime=0.5, max_health_watches=1
        ) as gateway,
        tls_channel(gateway.port, ca) as channel,
    ):
        stub = health_pb2_grpc.HealthStub(channel)
        started = time.monotonic()
        first = stub.Watch(health_pb2.HealthCheckRequest())
        assert (await first.read()).status == SERVING
        assert await asyncio.wait_for(first.read(), 10) is grpc.aio.EOF
        assert await first.code() == Code.OK
        assert time.monotonic() - started < 5
        second = stub.Watch(health_pb2.HealthCheckRequest())
        assert (await asyncio.wait_for(second.read(), 5)).status == SERVING
        second.cancel()


@pytest.mark.parametrize("where", ["main port", "health listener"])
async def test_health_calls_that_never_finish_their_request_are_ended(
    tmp_path: Path, ca: CA, where: str
) -> None:
    """Health Checks that announce a request and never finish it used to
    hold their call for as long as the connection lived: enough of them
    filled the health listener's 64 calls (or the anonymous share of the
    main port), and the probes failed. They end after
    anonymous_request_timeout now, and give their room back."""
    async with tls_gateway(
        tmp_path, ca, "jwt", health_listen="127.0.0.1:0", anonymous_request_timeout=1.0, **LIMITS
    ) as gateway:
        main = where == "main port"
        port = gateway.port if main else gateway.health_port
        assert port is not None
        tls = client_tls(ca) if main else None
        calls = [
            await RawCall.open(port, "/grpc.health.v1.Health/Check", tls=tls) for _ in range(6)
        ]
        try:
            started = time.monotonic()
            for call in calls:
                await call.send(partial_message(1000, 10))
            for call in calls:
                await call.wait_end(within=8)
                assert call.status == str(Code.DEADLINE_EXCEEDED.value[0]), call.status
            assert time.monotonic() - started < 6
        finally:
            for call in calls:
                call.abort()
        channel = (
            tls_channel(port, ca)
            if main
            else grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION)
        )
        async with channel:
            assert await check(channel) == SERVING


async def test_the_anonymous_share_fills_without_touching_max_calls(
    tmp_path: Path, ca: CA, caplog: pytest.LogCaptureFixture
) -> None:
    """Health calls whose request has not arrived yet hold the anonymous
    share: past max_anonymous_calls the next is refused at once, counted in
    blobgate_refused_calls_total and summed in one warning (not a line per
    refusal), while the identified caller keeps all of max_calls (which 10
    such calls used to fill, with max_calls 8)."""
    caplog.set_level(logging.WARNING, logger="blobgate.admission")
    async with tls_gateway(
        tmp_path, ca, "jwt", metrics_listen="127.0.0.1:0", anonymous_request_timeout=30, **LIMITS
    ) as gateway:
        calls = [
            await RawCall.open(gateway.port, "/grpc.health.v1.Health/Check", tls=client_tls(ca))
            for _ in range(10)
        ]
        try:
            for call in calls:
                await call.send(partial_message(1000, 10))
            await asyncio.gather(*(call.wait_end(within=3.0) for call in calls))
            refused = [call.status for call in calls if call.status is not None]
            assert refused == [str(Code.RESOURCE_EXHAUSTED.value[0])] * 4
            victim = tls_channel(gateway.port, ca, bearer=token())
            async with victim:
                await victim_works(victim, "beside-a-full-anonymous-share")
            assert gateway.metrics is not None
            sample = gateway.metrics.registry.get_sample_value
            assert sample("blobgate_refused_calls_total", {"share": "anonymous"}) == 4
            assert sample("blobgate_refused_calls_total", {"share": "identified"}) == 0
            assert sample("blobgate_admitted_calls", {"share": "anonymous"}) == 6
            summaries = [r.getMessage() for r in caplog.records if r.name == "blobgate.admission"]
            assert len(summaries) == 1, summaries  # the first refusal; the rest wait a minute
            assert "(anonymous: 1)" in summaries[0] and "max_anonymous_calls" in summaries[0]
        finally:
            for call in calls:
                call.abort()


@pytest.mark.parametrize("bearer", [None, "not-a-token"])
async def test_calls_without_a_valid_token_are_refused_before_their_message(
    tmp_path: Path, ca: CA, caplog: pytest.LogCaptureFixture, bearer: str | None
) -> None:
    """The token used to be checked in the handler, after gRPC had received
    the whole request: calls without one that announced 8 MiB and never
    finished held the memory (60 of them grew the server by ~320 MiB).
    They are refused now while the caller has sent only part of the
    message, and still logged and counted."""
    caplog.set_level(logging.INFO, logger="blobgate.access")
    headers = [] if bearer is None else [("authorization", f"Bearer {bearer}")]
    async with tls_gateway(tmp_path, ca, "jwt", metrics_listen="127.0.0.1:0") as gateway:
        calls = [
            await RawCall.open(gateway.port, STAT, tls=client_tls(ca), headers=headers)
            for _ in range(10)
        ]
        try:
            for call in calls:
                await call.send(partial_message(8 * MiB - 64, 256 * 1024))
            for call in calls:
                await call.wait_end(within=5)
                assert call.status == str(Code.UNAUTHENTICATED.value[0]), (call.status, call.reset)
            victim = tls_channel(gateway.port, ca, bearer=token())
            async with victim:
                await victim_works(victim, "beside-unfinished-messages")
        finally:
            for call in calls:
                call.abort()
        assert gateway.metrics is not None
        refused = gateway.metrics.registry.get_sample_value(
            "grpc_server_handled_total",
            {
                "grpc_type": "unary",
                "grpc_service": "blobgate.v1.StorageService",
                "grpc_method": "Stat",
                "grpc_code": "UNAUTHENTICATED",
            },
        )
        assert refused == 10

    async def logged() -> None:
        lines = [r for r in caplog.records if getattr(r, "status", "") == "UNAUTHENTICATED"]
        assert len(lines) == 10 and all(r.method == "Stat" for r in lines)  # type: ignore[attr-defined]

    await eventually(logged, within=5)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_unfinished_messages_without_a_token_cost_the_server_little(
    tmp_path: Path, ca: CA, processes: list[ServerProcess]
) -> None:
    """A blobgate-server process (JWT mode) and 60 calls without a token,
    each on its own connection, announcing an 8 MiB Stat request and sending
    most of it, then holding the call open: the server's RSS used to grow
    by ~320 MiB; the calls are refused before their message is read now,
    and the growth stays small."""
    cert_file, key_file = ca.server().write(tmp_path, "server")
    jwks = tmp_path / "jwks.json"
    key = base64.urlsafe_b64encode(SECRET).rstrip(b"=").decode()
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "k": key}]}))
    server = await ServerProcess.gateway(
        "http://127.0.0.1:9",
        "availability",
        "--tls-cert-file", str(cert_file),
        "--tls-key-file", str(key_file),
        "--jwt-jwks-file", str(jwks),
        "--jwt-issuer", ISSUER,
        "--jwt-audience", AUDIENCE,
    )  # fmt: skip
    processes.append(server)
    port = await server.wait_listening()
    pid = server.proc.pid
    warm = tls_channel(port, ca, bearer=token())
    async with warm:
        stub = storage_pb2_grpc.StorageServiceStub(warm)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Stat(storage_pb2.StatRequest(key="warm"), timeout=10)
    await asyncio.sleep(0.5)
    before = _rss_mib(pid)
    calls = [await RawCall.open(port, STAT, tls=client_tls(ca)) for _ in range(60)]
    try:
        await asyncio.gather(
            *(
                asyncio.wait_for(call.send(partial_message(8 * MiB - 64, 7 * MiB)), 30)
                for call in calls
            ),
            return_exceptions=True,
        )
        await asyncio.sleep(1.0)
        during = _rss_mib(pid)
    finally:
        for call in calls:
            call.abort()
    print(f"RSS before {before:.0f} MiB, with 60 unfinished calls {during:.0f} MiB")
    assert during - before < 48, (before, during)


def test_watches_must_leave_room_for_check() -> None:
    """max_health_watches below max_anonymous_calls, so Check keeps room."""
    with pytest.raises(ValueError, match="max_health_watches 16 must be less than"):
        gateway_settings("http://127.0.0.1:9", "availability", max_health_watches=16)


def test_refusals_are_summed_into_one_warning_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first refusal is logged at once; later ones are counted per share
    and logged together once the interval has passed."""
    caplog.set_level(logging.WARNING, logger="blobgate.admission")
    refusals = RefusalLog(interval=0.2)
    for share in ["anonymous", "anonymous", "identified", "anonymous"]:
        refusals.refused(share)
    time.sleep(0.25)
    refusals.refused("identified")
    lines = [r.getMessage() for r in caplog.records if r.name == "blobgate.admission"]
    assert len(lines) == 2, lines
    assert "(anonymous: 1)" in lines[0] and "in the last" not in lines[0]
    assert "(anonymous: 2, identified: 2)" in lines[1] and "in the last 0s" in lines[1]
