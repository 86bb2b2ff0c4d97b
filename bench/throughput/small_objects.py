"""Small objects: --small-ops uploads, Stats and downloads of one --small-size
object each (4 KiB), --concurrency at a time, through the gateway (the
Python client's stub: size and sha256 declared, as Client.upload does for
bytes) and directly with aioboto3 (PutObject, HeadObject, GetObject) against
the same moto. Measures ops/s over the phase, each op's latency, the CPU
each process spent per op, and the S3 requests per op: botocore's
``before-call`` events on the direct client, and the gateway's own count of
its botocore calls (``blobgate_s3_request_duration_seconds_count`` by
operation, from its /metrics; its health probe's HeadBucket left out)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import statistics
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.common.errors import BenchError
from bench.common.process_usage import cpu_seconds
from bench.throughput.transfers import BUCKET
from blobgate.client.wire import StorageStub, download_payload
from blobgate.v1 import storage_pb2 as pb

KINDS = ("upload", "stat", "download")
HEALTH_PROBE = "HeadBucket"  # the gateway's S3 health probe, every health_interval
_COUNT = re.compile(
    r'^blobgate_s3_request_duration_seconds_count\{(?=[^}]*operation="(\w+)")[^}]*\} (\S+)$',
    re.MULTILINE,
)


class DirectRequests:
    """The direct client's S3 API calls so far, by operation (one per call,
    as the gateway's metric counts them; botocore's retries not counted)."""

    def __init__(self, s3: Any) -> None:
        self.counts: Counter[str] = Counter()
        s3.meta.events.register("before-call.s3", self._count, unique_id="bench-count-calls")

    def _count(self, model: Any, **_: Any) -> None:  # returns None: a value would answer
        self.counts[str(model.name)] += 1

    async def snapshot(self) -> Counter[str]:
        return Counter(self.counts)


async def gateway_requests(metrics_url: str) -> Counter[str]:
    """The gateway's S3 API calls so far, by operation, from its /metrics."""

    def fetch() -> str:
        with urllib.request.urlopen(metrics_url, timeout=10) as reply:
            return str(reply.read().decode())

    counts: Counter[str] = Counter()
    for operation, value in _COUNT.findall(await asyncio.to_thread(fetch)):
        counts[operation] += int(float(value))
    return counts


async def run_ops(
    count: int, concurrency: int, op: Callable[[int], Awaitable[None]]
) -> tuple[float, list[float]]:
    """``op(0)`` .. ``op(count - 1)``, ``concurrency`` at a time: the wall
    seconds of the whole, and each op's seconds."""
    indexes = iter(range(count))
    latencies: list[float] = []

    async def worker() -> None:
        for index in indexes:  # shared: each worker takes the next index
            start = time.perf_counter()
            await op(index)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies


class SmallObjects:
    """The small-object ops of one gateway and of direct S3."""

    def __init__(self, stub: StorageStub, s3: Any, args: argparse.Namespace) -> None:
        self.stub, self.s3, self.timeout = stub, s3, args.op_timeout
        self.count, self.concurrency = args.small_ops, args.concurrency
        self.blob = bytes(range(256)) * (args.small_size // 256) + b"x" * (args.small_size % 256)
        self.digest = hashlib.sha256(self.blob).digest()

    def ops(self, side: str, kind: str, prefix: str) -> Callable[[int], Awaitable[None]]:
        """The op of ``kind`` on ``side`` (gateway, direct), on keys PREFIX/N."""
        table: dict[tuple[str, str], Callable[[str], Awaitable[None]]] = {
            ("gateway", "upload"): self._gateway_upload,
            ("gateway", "stat"): self._gateway_stat,
            ("gateway", "download"): self._gateway_download,
            ("direct", "upload"): self._direct_upload,
            ("direct", "stat"): self._direct_stat,
            ("direct", "download"): self._direct_download,
        }
        op = table[side, kind]
        return lambda index: op(f"{prefix}/{index}")

    async def _gateway_upload(self, key: str) -> None:
        spec = pb.UploadSpec(
            key=key, size=len(self.blob), expected=pb.Checksums(sha256=self.digest)
        )
        requests = iter([pb.UploadRequest(spec=spec), pb.UploadRequest(data=self.blob)])
        reply = await self.stub.Upload(requests, timeout=self.timeout)
        if reply.object.size != len(self.blob):
            raise BenchError(f"Upload {key}: the reply says {reply.object.size} bytes")

    async def _gateway_stat(self, key: str) -> None:
        reply = await self.stub.Stat(pb.StatRequest(key=key), timeout=self.timeout)
        if reply.object.size != len(self.blob):
            raise BenchError(f"Stat {key}: {reply.object.size} bytes")

    async def _gateway_download(self, key: str) -> None:
        got = bytearray()
        async for message in self.stub.Download(pb.DownloadRequest(key=key), timeout=self.timeout):
            data = download_payload(message)
            if data is not None:
                got += data
        if got != self.blob:
            raise BenchError(f"Download {key}: the bytes differ")

    async def _direct_upload(self, key: str) -> None:
        await self.s3.put_object(Bucket=BUCKET, Key=key, Body=self.blob)

    async def _direct_stat(self, key: str) -> None:
        reply = await self.s3.head_object(Bucket=BUCKET, Key=key)
        if reply["ContentLength"] != len(self.blob):
            raise BenchError(f"HeadObject {key}: {reply['ContentLength']} bytes")

    async def _direct_download(self, key: str) -> None:
        body = (await self.s3.get_object(Bucket=BUCKET, Key=key))["Body"]
        async with body:
            got = await body.read()
        if got != self.blob:
            raise BenchError(f"GetObject {key}: the bytes differ")


@dataclass
class Side:
    """Who the small ops go to: ``kind`` gateway or direct, through
    ``small`` (the gateway's stub, or its S3 client); ``requests``
    counts its S3 requests so far (None: not known); ``pids``, the processes
    whose CPU counts (client, moto, and the gateway itself)."""

    name: str
    kind: str
    small: SmallObjects
    requests: Callable[[], Awaitable[Counter[str]]] | None
    pids: dict[str, int]


async def measure_small(sides: list[Side], values: defaultdict[str, list[float]], rep: int) -> None:
    """One repetition: each kind (upload, then Stat, then download of what
    was uploaded) on every side, sides alternating who goes first. Records
    under "small KIND SIDE ...": ops/s, p50 and p99 ms, CPU ms per op of
    each of the side's processes ("cpu PROCESS"), and S3 requests per op,
    in all ("s3") and by operation ("s3 OPERATION")."""
    if rep % 2:
        sides = sides[::-1]
    for kind in KINDS:
        for side in sides:
            small = side.small
            op = small.ops(side.kind, kind, f"small-{side.name.replace(' ', '-')}-{rep}")
            label = f"small {kind} {side.name}"
            before = await side.requests() if side.requests else None
            cpu = {proc: cpu_seconds(pid) for proc, pid in side.pids.items()}
            wall, latencies = await asyncio.wait_for(
                run_ops(small.count, small.concurrency, op), small.timeout
            )
            for proc, pid in side.pids.items():
                spent = cpu_seconds(pid) - cpu[proc]
                values[f"{label} cpu {proc}"].append(1000 * spent / small.count)
            values[f"{label} ops/s"].append(small.count / wall)
            values[f"{label} p50"].append(1000 * statistics.median(latencies))
            values[f"{label} p99"].append(1000 * statistics.quantiles(latencies, n=100)[98])
            if side.requests is not None and before is not None:
                counts = await side.requests() - before
                counts.pop(HEALTH_PROBE, None)
                values[f"{label} s3"].append(sum(counts.values()) / small.count)
                for operation, number in counts.items():
                    values[f"{label} s3 {operation}"].append(number / small.count)
            await asyncio.sleep(0.2)
