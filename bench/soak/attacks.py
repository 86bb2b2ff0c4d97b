"""The attacks of an attack run (``--attack``), each held for one phase
while the victims measure (bench/soak/phases.py):

- watch-flood: grpc.health.v1 Health Watch streams, without a token, held
  open (100 to a connection, under max_streams_per_connection);
- idle-sockets: TCP connections that never send a byte (no TLS, no HTTP/2);
- unfinished-messages: Stat calls without a token, each on its own
  connection, announcing one large request message and never finishing it
  (unfinished.py);
- trickle-uploads: one principal's Upload streams, each sending one byte
  every few seconds (under stream_idle_timeout, inside its quotas);
- many-principals: the same from many principals at once.

Each opens its calls, sets ``ready`` once every one is open or refused,
holds them until ``stop`` is set, then closes them; ``outcomes`` counts how
its calls stood at the end of the phase."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import grpc
import h2.exceptions
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import MiB
from bench.soak.identity import Access
from bench.soak.options import AttackPlan
from bench.soak.unfinished import UnfinishedMessage
from blobgate.v1 import storage_pb2, storage_pb2_grpc

WATCHES_PER_CONNECTION = 100


class Attack:
    """What every attack has: its name, what it does, how its calls fared."""

    kind = ""

    def __init__(self, access: Access) -> None:
        self.access = access
        self.ready = asyncio.Event()
        self.outcomes: Counter[str] = Counter()

    def describe(self) -> str:
        raise NotImplementedError

    async def run(self, stop: asyncio.Event) -> None:
        raise NotImplementedError


class WatchFlood(Attack):
    kind = "watch-flood"

    def __init__(self, access: Access, count: int) -> None:
        super().__init__(access)
        self.count = count

    def describe(self) -> str:
        return f"{self.count} Health Watch streams, no token"

    async def run(self, stop: asyncio.Event) -> None:
        channels = [self.access.channel() for _ in range(-(-self.count // WATCHES_PER_CONNECTION))]
        opened = [0]
        try:
            async with asyncio.TaskGroup() as group:
                for n in range(self.count):
                    channel = channels[n // WATCHES_PER_CONNECTION]
                    group.create_task(self._watch(channel, stop, opened))
        finally:
            for channel in channels:
                await channel.close()

    async def _watch(
        self, channel: grpc.aio.Channel, stop: asyncio.Event, opened: list[int]
    ) -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        call = stub.Watch(health_pb2.HealthCheckRequest(service=""),
                          metadata=self.access.metadata(None))  # fmt: skip
        first = asyncio.ensure_future(call.read())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({first, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not first.done():
            first.cancel()
            held = "no reply before the phase ended"
        elif isinstance(error := first.exception(), grpc.aio.AioRpcError):
            held = f"refused: {error.code().name}"
        elif error is not None:
            held = f"failed: {type(error).__name__}"
        else:
            held = "held open"
        opened[0] += 1
        if opened[0] == self.count:
            self.ready.set()
        if held == "held open":
            await _until(stop, call)
            if call.done() and (code := await call.code()) != grpc.StatusCode.CANCELLED:
                held = f"ended by the server: {code.name}"
        self.outcomes[held] += 1
        call.cancel()


class IdleSockets(Attack):
    kind = "idle-sockets"

    def __init__(self, access: Access, count: int) -> None:
        super().__init__(access)
        self.count = count

    def describe(self) -> str:
        return f"{self.count} TCP connections sending nothing"

    async def run(self, stop: asyncio.Event) -> None:
        held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            for _ in range(self.count):
                try:
                    held.append(await asyncio.open_connection(self.access.host, self.access.port))
                except OSError as exc:
                    self.outcomes[f"connect failed: {type(exc).__name__}"] += 1
            self.ready.set()
            await stop.wait()
            for reader, _ in held:
                # a connection the server closed reads EOF at once
                with contextlib.suppress(TimeoutError, ConnectionError):
                    await asyncio.wait_for(reader.read(1), 0.001)
                self.outcomes["closed by the server" if reader.at_eof() else "held open"] += 1
        finally:
            for _, writer in held:
                writer.transport.abort()


class UnfinishedMessages(Attack):
    kind = "unfinished-messages"

    def __init__(self, access: Access, count: int, announced: int) -> None:
        super().__init__(access)
        self.count = count
        self.announced = announced
        self.sent_mib = 0.0  # of the messages, all calls together

    def describe(self) -> str:
        mib = self.announced / MiB
        return f"{self.count} Stats, no token, announcing {mib:g} MiB, unfinished"

    async def run(self, stop: asyncio.Event) -> None:
        calls = [UnfinishedMessage(self.access, self.announced) for _ in range(self.count)]
        tasks = [asyncio.create_task(call.hold(stop)) for call in calls]
        try:
            await asyncio.gather(*(call.settled.wait() for call in calls))
            self.ready.set()
            for call, task in zip(calls, tasks, strict=True):
                try:
                    await task
                    self.outcomes[call.outcome()] += 1
                except (OSError, h2.exceptions.H2Error) as exc:
                    self.outcomes[f"failed: {type(exc).__name__}"] += 1
        finally:
            for task in tasks:
                task.cancel()
        self.sent_mib = sum(call.sent for call in calls) / MiB
        self.outcomes[f"MiB of the messages sent, all calls: {self.sent_mib:.0f}"] += 0


class TrickleUploads(Attack):
    """``per_principal`` Upload streams of each of ``principals``, one byte
    every ``interval`` seconds."""

    kind = "trickle-uploads"

    def __init__(self, access: Access, principals: list[str], per_principal: int,
                 interval: float) -> None:  # fmt: skip
        super().__init__(access)
        self.principals = principals
        self.per_principal = per_principal
        self.interval = interval
        self._pending = len(principals) * per_principal

    def describe(self) -> str:
        who = "1 principal" if len(self.principals) == 1 else f"{len(self.principals)} principals"
        return f"{who} x {self.per_principal} Uploads, 1 byte every {self.interval:g} s"

    async def run(self, stop: asyncio.Event) -> None:
        if not self._pending:
            self.ready.set()
        async with self.access.channel() as channel:
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            async with asyncio.TaskGroup() as group:
                for principal in self.principals:
                    metadata = self.access.metadata(principal)
                    for n in range(self.per_principal):
                        key = f"trickle/{principal}/{n}"
                        group.create_task(self._trickle(stub, metadata, key, stop))

    def _opened(self) -> None:
        self._pending -= 1
        if not self._pending:
            self.ready.set()

    async def _trickle(self, stub: Any, metadata: Any, key: str, stop: asyncio.Event) -> None:
        call = stub.Upload(metadata=metadata)
        sent = 0
        try:
            await call.write(storage_pb2.UploadRequest(spec=storage_pb2.UploadSpec(key=key)))
            first = True
            while not stop.is_set() and not call.done():
                await call.write(storage_pb2.UploadRequest(data=b"x"))
                sent += 1
                if first:
                    first = False
                    self._opened()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_until(stop, call), self.interval)
            how = "held open"
            if call.done():
                how = f"ended by the server: {(await call.code()).name}"
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            how = f"ended by the server: {(await call.code()).name}"
        finally:
            if sent == 0:
                self._opened()
            call.cancel()
        self.outcomes[how] += 1


async def _until(stop: asyncio.Event, call: Any) -> None:
    """Wait until ``stop`` is set or ``call`` ends."""
    stopping = asyncio.ensure_future(stop.wait())
    done = asyncio.ensure_future(call.code())
    try:
        await asyncio.wait({stopping, done}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in (stopping, done):
            if not future.done():
                future.cancel()


def make_attacks(plan: AttackPlan, access: Access) -> list[Attack]:
    """The plan's attacks, in its order."""
    made: list[Attack] = []
    for kind in plan.attacks:
        if kind == "watch-flood":
            made.append(WatchFlood(access, plan.watch_streams))
        elif kind == "idle-sockets":
            made.append(IdleSockets(access, plan.idle_sockets))
        elif kind == "unfinished-messages":
            made.append(UnfinishedMessages(access, plan.unfinished_messages, plan.announced))
        elif kind == "trickle-uploads":
            made.append(TrickleUploads(access, ["trickler"], plan.trickle_uploads,
                                       plan.trickle_interval))  # fmt: skip
        elif kind == "many-principals":
            names = [f"principal-{n:03d}" for n in range(plan.principals)]
            attack = TrickleUploads(access, names, plan.trickle_uploads, plan.trickle_interval)
            attack.kind = "many-principals"
            made.append(attack)
        else:
            raise ValueError(f"unknown attack {kind!r}")
    return made
