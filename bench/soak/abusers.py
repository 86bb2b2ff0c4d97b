"""Misbehaving clients among the soak's workers: each in turn opens an
Upload that sends its spec and then nothing, or a Download it stops reading
after the first message, and holds it until the gateway ends it. The gateway
must end every one with DEADLINE_EXCEEDED after its stream_idle_timeout,
while the well-behaved workers see no error. In JWT mode they are a
principal of their own."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import grpc

from bench.soak.identity import Access
from blobgate.v1 import storage_pb2, storage_pb2_grpc

ABUSER = "soak-abuser"  # the misbehaving clients' principal in JWT mode


class Abusers:
    """``count`` misbehaving clients on a channel of their own."""

    def __init__(
        self, access: Access, count: int, seed: int, readable: list[Any], idle_timeout: float
    ) -> None:
        self._access = access
        self._metadata = access.metadata(ABUSER)
        self._idle_timeout = idle_timeout
        self._count = count
        self._seed = seed
        self._readable = readable  # the soak's committed objects (with .key)
        self.outcomes: Counter[str] = Counter()  # how each abusive call ended

    async def run(self, deadline: float, hold_limit: float) -> None:
        """Abuse until ``deadline`` (event-loop time); a call the gateway has
        not ended after ``hold_limit`` seconds counts as "not ended"."""
        async with self._access.channel() as channel:
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            async with asyncio.TaskGroup() as group:
                for n in range(self._count):
                    group.create_task(self._abuse(stub, n, deadline, hold_limit))

    async def _abuse(self, stub: Any, n: int, deadline: float, hold_limit: float) -> None:
        rng = random.Random(self._seed * 7919 + n)
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            kind = "idle upload" if rng.random() < 0.5 or not self._readable else "stalled download"
            try:
                async with asyncio.timeout(hold_limit):
                    if kind == "idle upload":
                        await self._idle_upload(stub, f"abuse/{n}/{rng.random():.12f}")
                    else:
                        await self._stalled_download(stub, rng.choice(self._readable).key)
                self.outcomes[f"{kind}: ended without error"] += 1
            except grpc.aio.AioRpcError as exc:
                self.outcomes[f"{kind}: {exc.code().name}"] += 1
            except TimeoutError:
                self.outcomes[f"{kind}: not ended"] += 1

    async def _idle_upload(self, stub: Any, key: str) -> None:
        call = stub.Upload(metadata=self._metadata)
        spec = storage_pb2.UploadSpec(key=key)
        await call.write(storage_pb2.UploadRequest(spec=spec))
        await call  # sends nothing more: the gateway ends it

    async def _stalled_download(self, stub: Any, key: str) -> None:
        call = stub.Download(storage_pb2.DownloadRequest(key=key), metadata=self._metadata)
        await call.read()
        # Reads nothing for twice the idle timeout, then drains what gRPC
        # buffered to learn how the call ended (a small object may have been
        # sent whole before the window filled: that ends without error).
        await asyncio.sleep(2 * self._idle_timeout + 1)
        while await call.read() is not grpc.aio.EOF:
            pass

    # How an abusive call may end: ended by the gateway, sent whole before it
    # stalled, or its object deleted by the soak before it was opened.
    EXPECTED = ("DEADLINE_EXCEEDED", "ended without error", "NOT_FOUND")

    def unexpected(self) -> dict[str, int]:
        """Outcomes other than the expected ones (a call never ended, say)."""
        return {what: n for what, n in self.outcomes.items() if not what.endswith(self.EXPECTED)}

    def ended_by_gateway(self) -> int:
        return sum(n for what, n in self.outcomes.items() if what.endswith("DEADLINE_EXCEEDED"))
