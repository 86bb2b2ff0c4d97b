"""The soak's workers: each runs operations of its role (upload, download,
stat or list) and checks every reply, byte and field against what was uploaded."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from bench.common.errors import BenchError
from bench.soak.abusers import Abusers
from bench.soak.content import Corpus, SoakObject
from bench.soak.options import KINDS, ROLES, UNARY, SoakOptions
from bench.soak.result import SoakResult
from blobgate.client import BlobgateError, Client, ObjectInfo

LIST_PAGE = 50
CONTENT_TYPE = "application/octet-stream"  # what the client guesses for *.bin


class Soak:
    """The workers' shared state: the objects, the statistics, the clock."""

    def __init__(self, client: Client, options: SoakOptions, result: SoakResult) -> None:
        self.client = client
        self.options = options
        self.result = result
        self.stats = result.stats
        self.corpus = Corpus(options.seed, f"soak-{options.seed}/")
        self.objects: dict[str, SoakObject] = {}  # every key this run started uploading
        self.readable: list[SoakObject] = []  # committed, not retired: oldest first
        self.retired: list[SoakObject] = []  # to delete once nobody reads them
        self.next_index = 0
        self.deadline = 0.0
        self.running = dict.fromkeys(KINDS, 0)
        self.max_running = dict.fromkeys(KINDS, 0)

    async def run(self, abusers: Abusers | None = None) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.deadline = start + self.options.duration
        async with asyncio.TaskGroup() as group:
            for n in range(self.options.streams):
                group.create_task(self.worker(n))
            if abusers is not None:
                hold_limit = 4 * self.options.idle_timeout + 30
                group.create_task(abusers.run(self.deadline, hold_limit))
        self.result.elapsed = loop.time() - start
        self.result.active = self.options.duration
        self.result.max_concurrent = dict(self.max_running)

    async def worker(self, n: int) -> None:
        rng = random.Random(self.options.seed * 1_000_003 + n)
        role = ROLES[n % len(ROLES)]
        loop = asyncio.get_running_loop()
        while loop.time() < self.deadline:
            kind = role
            if role == "unary":
                kind = rng.choices(list(UNARY), list(UNARY.values()))[0]
            if kind in ("download", "stat") and not self.readable:
                await asyncio.sleep(0.05)  # nothing uploaded yet
                continue
            operation: Callable[[random.Random], Coroutine[Any, Any, int]] = getattr(
                self, f"op_{kind}"
            )
            await self.timed(kind, operation(rng))
            await self.collect()

    async def timed(self, kind: str, operation: Coroutine[Any, Any, int]) -> None:
        """Run one operation and record its outcome: its payload bytes, an
        error (a BlobgateError, timeout, OS or gRPC error) or a mismatch
        (BenchError)."""
        stats = self.stats[kind]
        self.running[kind] += 1
        self.max_running[kind] = max(self.max_running[kind], self.running[kind])
        began = time.perf_counter()
        try:
            async with asyncio.timeout(self.options.op_timeout):
                nbytes = await operation
        except BenchError as exc:
            stats.ops += 1
            stats.mismatches += 1
            stats.note(f"mismatch: {exc}")
        except (BlobgateError, TimeoutError, OSError, grpc.RpcError) as exc:
            stats.errors += 1
            stats.note(f"{type(exc).__name__}: {exc}")
        else:
            stats.ops += 1
            stats.nbytes += nbytes
            stats.seconds.append(time.perf_counter() - began)
        finally:
            self.running[kind] -= 1

    def pick(self, rng: random.Random) -> SoakObject:
        obj = rng.choice(self.readable)
        obj.readers += 1
        return obj

    def done_reading(self, obj: SoakObject) -> None:
        obj.readers -= 1
        obj.reads += 1
        if obj.reads >= self.options.reads_per_object:
            self.retire(obj)

    def retire(self, obj: SoakObject) -> None:
        if not obj.retired:
            obj.retired = True
            self.retired.append(obj)
            with contextlib.suppress(ValueError):
                self.readable.remove(obj)

    async def collect(self) -> None:
        """Delete the retired objects that nobody reads any more."""
        idle = [obj for obj in self.retired if not obj.readers and not obj.deleting]
        for obj in idle:
            obj.deleting = True
            self.retired.remove(obj)
            await self.timed("delete", self.op_delete(obj))

    async def op_upload(self, rng: random.Random) -> int:
        obj = self.corpus.new(
            self.next_index, rng.randint(self.options.min_size, self.options.max_size)
        )
        self.next_index += 1
        self.objects[obj.key] = obj
        data = self.corpus.content(obj)
        try:
            info = await self.client.upload(obj.key, data, metadata=obj.metadata)
        except BaseException:
            obj.retired = obj.deleting = True  # nothing was stored (or it is unknown)
            raise
        del data
        obj.sha256, obj.etag, obj.committed = info.sha256, info.etag, True
        self.readable.append(obj)
        while len(self.readable) > self.options.live_cap:
            self.retire(self.readable[0])
        if info.key != obj.key or info.size != obj.size or info.sha256 is None:
            raise BenchError(f"upload {obj.key}: reply says key {info.key!r}, size {info.size}, "
                             f"sha256 {info.sha256!r}; sent {obj.size} bytes")  # fmt: skip
        return obj.size

    async def op_download(self, rng: random.Random) -> int:
        obj = self.pick(rng)
        try:
            return await self._download(obj, rng)
        finally:
            self.done_reading(obj)

    async def _download(self, obj: SoakObject, rng: random.Random) -> int:
        size = obj.size
        shape = rng.random()
        if shape < 0.2:  # the whole object: the client checks its sha256 as well
            offset, limit, start, end = 0, 0, 0, size
        elif shape < 0.4:  # a suffix
            count = rng.randint(1, size)
            offset, limit, start, end = -count, 0, size - count, size
        else:  # a middle range, often across parts
            start = rng.randrange(size)
            count = rng.randint(1, size - start)
            offset, limit, end = start, count, start + count
        expect = self.corpus.content(obj, start, end)
        where = f"download {obj.key} offset={offset} limit={limit}"
        received = 0
        async with await self.client.open_download(obj.key, offset=offset, limit=limit) as stream:
            info = stream.info
            self.check_info(where, obj, info)
            async for chunk in stream:
                if not expect.startswith(chunk, received):
                    raise BenchError(f"{where}: bytes differ in [{start + received}, "
                                     f"+{len(chunk)})")  # fmt: skip
                received += len(chunk)
        if received != len(expect):
            raise BenchError(f"{where}: got {received} bytes, expected {len(expect)}")
        return received

    def check_info(self, where: str, obj: SoakObject, info: ObjectInfo) -> None:
        wrong = []
        if info.key != obj.key:
            wrong.append(f"key {info.key!r}")
        if info.size != obj.size:
            wrong.append(f"size {info.size} (uploaded {obj.size})")
        if info.sha256 != obj.sha256:
            wrong.append("sha256 differs from the upload's")
        if info.etag != obj.etag:
            wrong.append(f"etag {info.etag!r} (upload said {obj.etag!r})")
        if info.content_type != CONTENT_TYPE:
            wrong.append(f"content type {info.content_type!r}")
        if any(info.metadata.get(k) != v for k, v in obj.metadata.items()):
            wrong.append(f"metadata {info.metadata!r}")
        if wrong:
            raise BenchError(f"{where}: " + ", ".join(wrong))

    async def op_stat(self, rng: random.Random) -> int:
        obj = self.pick(rng)
        try:
            info = await self.client.stat(obj.key)
        finally:
            self.done_reading(obj)
        self.check_info(f"stat {obj.key}", obj, info)
        return 0

    async def op_list(self, rng: random.Random) -> int:
        must_see = {o.key for o in self.readable}
        listed: dict[str, int] = {}
        async for info in self.client.list(self.corpus.prefix, page_size=LIST_PAGE):
            if info.key in listed:
                raise BenchError(f"list: {info.key} listed twice")
            listed[info.key] = info.size
        must_see = {k for k in must_see if not self.objects[k].deleting}  # still there
        wrong = [f"{k} missing" for k in sorted(must_see - listed.keys())]
        for key, size in listed.items():
            obj = self.objects.get(key)
            if obj is None:
                wrong.append(f"{key} was never uploaded")
            elif size != obj.size:
                wrong.append(f"{key} has size {size}, uploaded {obj.size}")
        if wrong:
            raise BenchError(f"list {self.corpus.prefix}: " + ", ".join(wrong[:5]))
        return 0

    async def op_delete(self, obj: SoakObject) -> int:
        await self.client.delete(obj.key)
        return 0

    async def delete_rest(self) -> None:
        """After the soak: delete what is left (not counted)."""
        for obj in self.objects.values():
            if not obj.deleting:
                obj.deleting = True
                with contextlib.suppress(BlobgateError):
                    await self.client.delete(obj.key)
