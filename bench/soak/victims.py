"""The victims of an attack run: well-behaved callers (in JWT mode a
principal of their own, "victim") that each, again and again, connect anew
(a new client, so a connection limit an attack fills shows) and Upload,
Stat, Download (every byte compared) and Delete one small object. Every call
runs under victim_timeout; its latency or its failure is recorded."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from bench.common.errors import BenchError
from bench.soak.identity import Access
from bench.soak.options import AttackPlan
from blobgate.client import BlobgateError, Client

VICTIM = "victim"
PAUSE_AFTER_ERROR = 0.2  # seconds: a call refused at once is not retried in a hot loop


@dataclass
class VictimStats:
    """What the victims' calls did during one phase."""

    ops: int = 0  # calls that succeeded
    errors: int = 0
    seconds: list[float] = field(default_factory=list)  # of the successful calls
    failed_seconds: list[float] = field(default_factory=list)  # of the failed ones
    error_kinds: dict[str, int] = field(default_factory=dict)  # "upload: DEADLINE_EXCEEDED"
    examples: list[str] = field(default_factory=list)

    def percentile(self, fraction: float, *, failed_too: bool = False) -> float | None:
        """A latency percentile, ms (nearest rank), of the successful calls
        (``failed_too``: of every call, a failure counted at the time it
        took to fail); None without calls."""
        times = sorted(self.seconds + self.failed_seconds if failed_too else self.seconds)
        if not times:
            return None
        return times[min(len(times) - 1, int(fraction * len(times)))] * 1000

    def failed(self, kind: str, exc: BaseException, seconds: float = 0.0) -> None:
        self.errors += 1
        self.failed_seconds.append(seconds)
        code = getattr(exc, "code", None)
        name = code.name if isinstance(code, grpc.StatusCode) else type(exc).__name__
        label = f"{kind}: {name}"
        self.error_kinds[label] = self.error_kinds.get(label, 0) + 1
        if len(self.examples) < 3:
            self.examples.append(f"{label}: {str(exc)[:200]}")


class Victims:
    """``plan.victims`` victims against the gateway at ``access``."""

    def __init__(self, access: Access, plan: AttackPlan, seed: int) -> None:
        self.access = access
        self.plan = plan
        self.data = random.Random(seed).randbytes(plan.victim_size)
        self.rounds = 0

    async def run(self, seconds: float) -> VictimStats:
        """Victims for ``seconds`` (a call under way then ends first)."""
        stats = VictimStats()
        deadline = asyncio.get_running_loop().time() + seconds
        async with asyncio.TaskGroup() as group:
            for n in range(self.plan.victims):
                group.create_task(self._victim(n, deadline, stats))
        return stats

    async def _victim(self, n: int, deadline: float, stats: VictimStats) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.plan.victim_timeout
        while loop.time() < deadline:
            self.rounds += 1
            key = f"victims/{n}/{self.rounds}"
            client = Client(self.access.address, timeout=timeout, stream_timeout=timeout,
                            max_attempts=1, **self.access.client_keywords(VICTIM))  # fmt: skip
            async with client:
                ok = await self._round(client, key, stats)
            if not ok:
                await asyncio.sleep(PAUSE_AFTER_ERROR)

    async def _round(self, client: Client, key: str, stats: VictimStats) -> bool:
        """Upload, Stat, Download, Delete; False at the first failure."""
        steps: tuple[tuple[str, Callable[[], Awaitable[object]]], ...] = (
            ("upload", lambda: self._upload(client, key)),
            ("stat", lambda: self._stat(client, key)),
            ("download", lambda: self._download(client, key)),
            ("delete", lambda: client.delete(key)),
        )
        for kind, step in steps:
            began = time.perf_counter()
            try:
                async with asyncio.timeout(self.plan.victim_timeout + 5):
                    await step()
            except (BlobgateError, BenchError, TimeoutError, OSError, grpc.RpcError) as exc:
                stats.failed(kind, exc, time.perf_counter() - began)
                return False
            stats.ops += 1
            stats.seconds.append(time.perf_counter() - began)
        return True

    async def _upload(self, client: Client, key: str) -> None:
        info = await client.upload(key, self.data)
        if info.size != len(self.data):
            raise BenchError(f"upload {key}: reply says size {info.size}, sent {len(self.data)}")

    async def _stat(self, client: Client, key: str) -> None:
        info = await client.stat(key)
        if info.size != len(self.data):
            raise BenchError(f"stat {key}: size {info.size}, uploaded {len(self.data)}")

    async def _download(self, client: Client, key: str) -> None:
        received = bytearray()
        async for chunk in client.download(key):
            received += chunk
        if received != self.data:
            raise BenchError(f"download {key}: {len(received)} bytes differ from the upload")
