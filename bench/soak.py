"""Soak: many concurrent mixed streams through one gateway process for a while.

Starts moto's S3 server and blobgate-server as subprocesses on 127.0.0.1 (the
gateway with an explicit --memory-budget and --max-streams), then drives it
from this process with the project's async client (client.Client, one
channel, no retries: every failure counts) from --streams concurrent workers
for --duration seconds. Worker n has a fixed role (ROLES): 3 of 8 upload, 3 of
8 download, 2 of 8 stat or list; each draws its choices from its own seeded RNG:

- upload: a new object of random size in [--min-size-mib, --max-size-mib] MiB
  (any byte count, so part ends are unaligned), with metadata; the reply must
  carry the size and a sha256;
- download: a previously uploaded object, whole (the client also checks its
  sha256), a middle range or a suffix (negative offset); every byte is
  compared with the known content as it arrives, and the object's description
  with what was uploaded;
- stat (2 in 3 of the stat-or-list calls): size, etag, sha256, content type
  and metadata must match;
- list: every object under the run's prefix, 50 a page; each listed key must
  be one this run uploaded, with its size, and every object that stayed live
  during the listing must be in it.

Object content is cheap to make and to check: a 64-byte header naming the
object, then a seeded random block of 1 MiB + 4087 bytes (a prime) repeated
from an offset of the object's own, so sha256s differ, and bytes shifted by a
whole number of MiB (a message or part put in the wrong place, repeated or
lost) never match.

Objects are deleted (through the client, counted as "delete") after
--reads-per-object downloads and stats, or when more than --max-live are
kept, so moto (which keeps every object) stays small.

Before the soak it measures the idle gateway's RSS and its peak (VmHWM) during
one --max-size-mib upload; then it resets VmHWM and reports the soak's peak
against the bound memory_budget + OVERHEAD_MIB + max_streams x
STREAM_OVERHEAD_MIB (see OVERHEAD_MIB for the reasoning). Exit status 1 if any
operation failed, any byte or field mismatched, a multipart upload was left
behind, the gateway logged an error, or the peak RSS passed the bound.

--stream-cost N measures STREAM_OVERHEAD_MIB instead of soaking: on a gateway
whose memory_budget is one part, N uploads (from a client that sends without
waiting for "blobgate-upload: accepted") wait for budget, then, on a new
gateway, N downloads stop reading after their first data message; it reports
the gateway's RSS growth per stream, steady and at the phase's peak.

    .venv/bin/python -m bench.soak [--duration 60] [--streams 64] [--max-size-mib 64]
        [--budget-mib 256] [--seed 1]
    .venv/bin/python -m bench.soak --stream-cost 64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aioboto3
import grpc

from bench.throughput import (
    AWS_ENV,
    HOST,
    BenchError,
    code_version,
    cpu_seconds,
    free_port,
    gateway_serving,
    machine,
    moto_listening,
    reset_peak_rss,
    spawned,
    status_mib,
    wait_until,
)
from blobgate.client import BlobgateError, Client
from blobgate.client.models import ObjectInfo
from blobgate.v1 import storage_pb2 as pb
from blobgate.v1 import storage_pb2_grpc

T = TypeVar("T")
MiB = 1024 * 1024
BUCKET = "blobgate-soak"
KINDS = ("upload", "download", "stat", "list", "delete")
# Worker n does ROLES[n % 8]: 3 of 8 upload, 3 of 8 download, 2 of 8 stat or list
# (two stats to one list). Fixed roles keep the mix of what runs at once
# steady: with a random kind per operation, the slow uploads would soon hold
# nearly every worker.
ROLES = ("upload", "download", "unary", "upload", "download", "unary", "upload", "download")
UNARY = {"stat": 2, "list": 1}
HEADER_SIZE = 64
BLOCK_SIZE = MiB + 4087  # a prime: no shift by whole MiB (messages, parts) matches
LIST_PAGE = 50
CONTENT_TYPE = "application/octet-stream"  # what the client guesses for *.bin

# The gateway's peak RSS must stay under
#     memory_budget + OVERHEAD_MIB + max_streams x STREAM_OVERHEAD_MIB.
# memory_budget bounds the part buffers of all uploads together; OVERHEAD_MIB
# is what a gateway needs whatever its streams count, measured on this
# project's machine kind (2 cores, AMD EPYC, Python 3.11.7, aioboto3 15.5.0)
# by this benchmark's calibration step (printed by every run) and
# bench/throughput.py:
# - the idle gateway (interpreter, grpcio, botocore, aiohttp) is 91-92 MiB
#   RSS with grpcio 1.85.3 (86 MiB in a throughput run with grpcio 1.85.1);
# - one upload alone peaks, less its budgeted part buffers ((1 +
#   parts_in_flight) x part_size = 40 MiB by default), at 97-118 MiB (one
#   64 MiB upload in this benchmark's runs: 136.7 - 40 to 158.1 - 40, from
#   idle 91-92) and 114-128 MiB (256 MiB uploads in the throughput runs:
#   153.6 - 40 to 167.6 - 40, from idle 92): idle plus 6-36 MiB that a
#   transfer costs beyond its parts (its gRPC receive window, the message
#   being handled, BytesIO slack, aiohttp and botocore buffers, allocator and
#   connection state kept after the first transfer).
# 128 MiB is the highest of those. The bound adds STREAM_OVERHEAD_MIB for
# every stream on top, the first one included, so for one upload it is
# 128 + 40 + 8 = 176 MiB against the 167.6 measured.
OVERHEAD_MIB = 128
# What one open Upload or Download stream holds outside memory_budget, with
# 1 MiB messages: an upload's gRPC receive window (4 MiB, server/app.py),
# which its client fills while the upload waits for budget or S3, and the
# message in hand; a download's message waiting for a slow client and what
# aiohttp read ahead from S3. Measured by `python -m bench.soak --stream-cost
# 64` (this file), 64 streams at once, per stream: an upload waiting for
# budget 3.8-3.9 MiB steady and 5.8-6.9 MiB at the peak of the phase (while
# the waiting uploads go through, one part at a time); a download whose
# client stopped reading 2.6-5.4 MiB (two modes, run to run). 6.9 MiB (also
# the highest of 5 runs with 16 and 32 streams), rounded up to 8.
STREAM_OVERHEAD_MIB = 8


@dataclass(frozen=True)
class SoakOptions:
    """What to run. Sizes are in bytes."""

    duration: float = 60.0  # seconds during which new operations start
    streams: int = 64  # concurrent workers, each with one operation at a time
    min_size: int = 1 * MiB
    max_size: int = 64 * MiB
    budget: int = 256 * MiB  # the gateway's memory_budget
    max_streams: int | None = None  # the gateway's max_streams (None: streams)
    part_size: int = 8 * MiB
    parts_in_flight: int = 4
    seed: int = 1
    max_live: int | None = None  # objects kept in S3 at once (None: half the streams)
    reads_per_object: int = 6  # downloads and stats before an object is deleted
    op_timeout: float = 300.0  # seconds allowed per operation
    log_dir: Path | None = None  # for moto.log and gateway.log (None: a new temp dir)
    gateway_log_level: str = "WARNING"
    gateway_cmd: tuple[str, ...] = ()  # () : blobgate-server beside this Python

    @property
    def gateway_max_streams(self) -> int:
        return self.streams if self.max_streams is None else self.max_streams

    @property
    def live_cap(self) -> int:
        return max(self.streams // 2, 1) if self.max_live is None else self.max_live

    @property
    def bound_mib(self) -> float:
        """memory_budget + OVERHEAD_MIB + max_streams x STREAM_OVERHEAD_MIB."""
        return self.budget / MiB + OVERHEAD_MIB + self.gateway_max_streams * STREAM_OVERHEAD_MIB


@dataclass
class KindStats:
    """What happened to the operations of one kind."""

    ops: int = 0  # completed without error (mismatches included)
    errors: int = 0
    mismatches: int = 0
    nbytes: int = 0  # payload moved by successful operations
    seconds: list[float] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)  # first few errors and mismatches

    def note(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)


@dataclass
class SoakResult:
    options: SoakOptions
    active: float = 0.0  # seconds during which operations started
    elapsed: float = 0.0  # seconds until the last one ended
    stats: dict[str, KindStats] = field(default_factory=lambda: {k: KindStats() for k in KINDS})
    idle_rss: float = 0.0  # MiB, the gateway before any transfer
    calibration_peak: float = 0.0  # MiB, VmHWM during one max-size upload
    calibration_from: float = 0.0  # MiB, VmRSS just before it
    peak_rss: float = 0.0  # MiB, the gateway's VmHWM during the soak
    start_rss: float = 0.0  # MiB, VmRSS when the soak started
    end_rss: float = 0.0  # MiB, VmRSS after the soak
    peak_sampled: float = 0.0  # MiB, the highest VmRSS sample (every 0.2 s)
    peak_sampled_at: float = 0.0  # seconds into the soak of that sample
    moto_peak: float = 0.0  # MiB
    client_peak: float = 0.0  # MiB
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process, soak only
    max_concurrent: dict[str, int] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)  # multipart uploads left in S3
    log_problems: list[str] = field(default_factory=list)  # gateway ERROR/Traceback lines
    log_warnings: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)  # machine, code, commands

    @property
    def bound(self) -> float:
        return self.options.bound_mib

    def failures(self) -> list[str]:
        """Why the run failed; empty if it passed."""
        why = []
        for kind, stats in self.stats.items():
            if stats.errors:
                why.append(f"{stats.errors} {kind} errors, e.g. {stats.examples[:2]}")
            if stats.mismatches:
                why.append(f"{stats.mismatches} {kind} mismatches, e.g. {stats.examples[:2]}")
        if self.peak_rss > self.bound:
            why.append(f"gateway peak RSS {self.peak_rss:.1f} MiB > bound {self.bound:.0f} MiB")
        if self.leftovers:
            why.append(f"multipart uploads left behind: {self.leftovers[:3]}")
        if self.log_problems:
            why.append(f"gateway logged errors: {self.log_problems[:3]}")
        return why


# --- content ---------------------------------------------------------------------


@dataclass
class SoakObject:
    """One uploaded object, and what may be done with it."""

    index: int
    key: str
    size: int
    rotation: int  # where in the block the body starts
    header: bytes
    metadata: dict[str, str]
    sha256: bytes | None = None
    etag: str = ""
    committed: bool = False  # the upload returned
    readers: int = 0  # downloads and stats in flight
    reads: int = 0
    retired: bool = False  # no new reads; delete once readers == 0
    deleting: bool = False


class Corpus:
    """The seeded block, and each object's bytes made from it."""

    def __init__(self, seed: int, prefix: str) -> None:
        rng = random.Random(seed)
        self.block = rng.randbytes(BLOCK_SIZE)
        self.seed = seed
        self.prefix = prefix
        self._rotations = random.Random(seed + 1)

    def new(self, index: int, size: int) -> SoakObject:
        key = f"{self.prefix}{index:06d}.bin"
        header = f"blobgate soak seed={self.seed} object={index} size={size}\n".encode()
        header = header.ljust(HEADER_SIZE, b".")[:HEADER_SIZE]
        metadata = {"soak-seed": str(self.seed), "soak-index": str(index)}
        rotation = self._rotations.randrange(BLOCK_SIZE)
        return SoakObject(index, key, size, rotation, header, metadata)

    def content(self, obj: SoakObject, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of ``obj``."""
        end = obj.size if end is None else min(end, obj.size)
        if start >= end:
            return b""
        out = bytearray()
        if start < HEADER_SIZE:
            out += obj.header[start : min(end, HEADER_SIZE)]
            start = HEADER_SIZE
        if start < end:
            at = (obj.rotation + start - HEADER_SIZE) % BLOCK_SIZE
            rotated = self.block[at:] + self.block[:at]
            count = end - start
            out += memoryview(rotated * (count // BLOCK_SIZE + 1))[:count]
        return bytes(out)


# --- the workers -----------------------------------------------------------------


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

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.deadline = start + self.options.duration
        async with asyncio.TaskGroup() as group:
            for n in range(self.options.streams):
                group.create_task(self.worker(n))
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


# --- the run ---------------------------------------------------------------------


class RssSampler:
    """The gateway's VmRSS every 0.2 s: when during the soak the peak came."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.highest = 0.0
        self.at = 0.0

    async def run(self) -> None:
        start = time.monotonic()
        while True:
            rss = status_mib(self.pid, "VmRSS")
            if rss > self.highest:
                self.highest, self.at = rss, time.monotonic() - start
            await asyncio.sleep(0.2)


async def calibrate(client: Client, options: SoakOptions, pid: int, result: SoakResult) -> None:
    """Idle RSS, then the peak during one max-size upload (and a warm-up
    download of it): what OVERHEAD_MIB is derived from."""
    result.idle_rss = status_mib(pid, "VmRSS")
    corpus = Corpus(options.seed, "calibration/")
    obj = corpus.new(0, options.max_size)
    data = corpus.content(obj)
    result.calibration_from = status_mib(pid, "VmRSS")
    reset_peak_rss(pid)
    async with asyncio.timeout(options.op_timeout):
        info = await client.upload(obj.key, data, metadata=obj.metadata)
    result.calibration_peak = status_mib(pid, "VmHWM")
    if info.size != obj.size:
        raise BenchError(f"calibration upload: reply says size {info.size}, sent {obj.size}")
    received = bytearray()
    async with asyncio.timeout(options.op_timeout):
        async for chunk in client.download(obj.key, offset=-MiB - 17):
            received += chunk
    if received != data[-MiB - 17 :]:
        raise BenchError("calibration download: bytes differ from the upload")
    await client.delete(obj.key)


async def leftover_uploads(endpoint: str) -> list[str]:
    """Multipart uploads S3 still has (the gateway must abort every failed one)."""
    session = aioboto3.Session(
        AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1"
    )
    async with session.client("s3", endpoint_url=endpoint) as s3:
        uploads = (await s3.list_multipart_uploads(Bucket=BUCKET)).get("Uploads", [])
    return [f"{u.get('Key')} ({u.get('UploadId')})" for u in uploads]


@dataclass
class Services:
    """moto and the gateway, running on loopback."""

    moto: subprocess.Popen[bytes]
    gateway: subprocess.Popen[bytes]
    moto_url: str
    gateway_addr: str
    logs: dict[str, Path]
    header: list[str]  # machine, code, commands


@contextlib.asynccontextmanager
async def services(options: SoakOptions, prefix: str) -> AsyncIterator[Services]:
    """Start moto and the gateway (configured from ``options``), wait until
    both answer; stop both on the way out."""
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix=prefix))
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = {"moto": log_dir / "moto.log", "gateway": log_dir / "gateway.log"}
    ports = {"moto": free_port(), "gateway": free_port()}
    moto_url, gateway_addr = f"http://{HOST}:{ports['moto']}", f"{HOST}:{ports['gateway']}"
    gateway_cmd = list(options.gateway_cmd) or [
        str(Path(sys.executable).with_name("blobgate-server"))
    ]
    gateway_cmd += [
        "--listen", gateway_addr, "--s3-endpoint", moto_url, "--s3-region", "us-east-1",
        "--default-bucket", BUCKET, "--create-buckets", "--part-size", str(options.part_size),
        "--parts-in-flight", str(options.parts_in_flight),
        "--memory-budget", str(options.budget), "--max-streams", str(options.gateway_max_streams),
        "--log-level", options.gateway_log_level,
    ]  # fmt: skip
    moto_cmd = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(ports["moto"])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOBGATE_")} | AWS_ENV
    header = [
        machine(),
        code_version(),
        "gateway: " + shlex.join(gateway_cmd),
        "moto:    " + shlex.join(moto_cmd),
        f"logs:    {log_dir}",
    ]
    with (
        spawned("moto", moto_cmd, env, logs["moto"]) as moto,
        spawned("gateway", gateway_cmd, env, logs["gateway"]) as gateway,
    ):
        await wait_until(moto, "moto", logs["moto"], 60, partial(moto_listening, ports["moto"]))
        async with grpc.aio.insecure_channel(gateway_addr) as channel:
            serving = partial(gateway_serving, channel)
            await wait_until(gateway, "gateway", logs["gateway"], 90, serving)
        yield Services(moto, gateway, moto_url, gateway_addr, logs, header)


async def soak(options: SoakOptions) -> SoakResult:
    """Start moto and the gateway, calibrate, soak, stop them; the outcome."""
    result = SoakResult(options)
    async with services(options, "blobgate-soak-") as running:
        result.header = running.header
        moto, gateway = running.moto, running.gateway
        pids = {"client": os.getpid(), "gateway": gateway.pid, "moto": moto.pid}
        client = Client(running.gateway_addr, timeout=options.op_timeout,
                        stream_timeout=options.op_timeout, max_attempts=1)  # fmt: skip
        async with client:
            await calibrate(client, options, gateway.pid, result)
            run = Soak(client, options, result)
            cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            result.start_rss = status_mib(gateway.pid, "VmRSS")
            reset_peak_rss(gateway.pid)
            for pid in (moto.pid, os.getpid()):
                reset_peak_rss(pid)
            sampler = RssSampler(gateway.pid)
            sampling = asyncio.create_task(sampler.run())
            try:
                await run.run()
            finally:
                sampling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampling
            result.peak_rss = status_mib(gateway.pid, "VmHWM")
            result.moto_peak = status_mib(moto.pid, "VmHWM")
            result.client_peak = status_mib(os.getpid(), "VmHWM")
            result.peak_sampled, result.peak_sampled_at = sampler.highest, sampler.at
            result.cpu = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
            result.end_rss = status_mib(gateway.pid, "VmRSS")
            await run.delete_rest()
        result.leftovers = await leftover_uploads(running.moto_url)
        if gateway.poll() is not None:
            result.log_problems.append(f"gateway exited with code {gateway.returncode}")
    for line in running.logs["gateway"].read_text(errors="replace").splitlines():
        if re.search(r"ERROR|CRITICAL|Traceback", line):
            result.log_problems.append(line)
        elif "WARNING" in line:
            result.log_warnings.append(line)
    return result


# --- what a stream costs --------------------------------------------------------

COST_UPLOAD_SIZE = 16 * MiB  # each waiting upload
COST_OBJECT_SIZE = 32 * MiB  # the object every stalled download reads
SETTLE_SECONDS = 3.0  # before the steady state is sampled


@dataclass
class StreamCost:
    """What each of ``streams`` concurrent streams holds outside memory_budget,
    in MiB of the gateway's RSS (its growth, divided by the streams)."""

    streams: int
    header: list[str]
    idle: float = 0.0  # the gateway before any transfer
    upload_held: float = 0.0  # uploads waiting for budget, steady
    upload_peak: float = 0.0  # VmHWM over that phase, until every upload committed
    download_held: float = 0.0  # downloads whose client stopped reading, steady
    download_peak: float = 0.0  # VmHWM over that phase, until every download ended


async def _upload_requests(key: str, data: bytes) -> AsyncIterator[pb.UploadRequest]:
    """Spec and 1 MiB data messages, written as fast as flow control allows:
    unlike client.Client, without waiting for "blobgate-upload: accepted"."""
    yield pb.UploadRequest(spec=pb.UploadSpec(key=key, size=len(data)))
    view = memoryview(data)
    for offset in range(0, len(data), MiB):
        yield pb.UploadRequest(data=bytes(view[offset : offset + MiB]))


async def _steady_rss(pid: int) -> float:
    """The highest VmRSS over 2 s, after SETTLE_SECONDS."""
    await asyncio.sleep(SETTLE_SECONDS)
    samples = []
    for _ in range(10):
        samples.append(status_mib(pid, "VmRSS"))
        await asyncio.sleep(0.2)
    return max(samples)


async def _waiting_uploads(
    stub: Any, pid: int, streams: int, data: bytes, rpc_timeout: float
) -> tuple[float, float]:
    """One upload takes the whole budget (one part) and stalls; ``streams``
    uploads then wait for budget while their clients send what flow control
    lets through. Per stream: (steady, phase peak) RSS growth in MiB."""
    release = asyncio.Event()

    async def stalled() -> AsyncIterator[pb.UploadRequest]:
        yield pb.UploadRequest(spec=pb.UploadSpec(key="cost/blocker.bin"))
        yield pb.UploadRequest(data=bytes(MiB))
        await release.wait()

    blocker = stub.Upload(stalled(), timeout=rpc_timeout)
    await blocker.initial_metadata()  # accepted: it is reading its first part
    await asyncio.sleep(1.0)
    base = status_mib(pid, "VmRSS")
    reset_peak_rss(pid)
    calls = [stub.Upload(_upload_requests(f"cost/{n}.bin", data), timeout=rpc_timeout)
             for n in range(streams)]  # fmt: skip
    try:
        held = await _steady_rss(pid)
    finally:
        release.set()
    replies = await asyncio.gather(blocker, *calls)
    peak = status_mib(pid, "VmHWM")
    if any(reply.object.size != len(data) for reply in replies[1:]):
        raise BenchError("stream cost: an upload committed the wrong size")
    return (held - base) / streams, (peak - base) / streams


async def _stalled_downloads(
    stub: Any, pid: int, streams: int, key: str, size: int, rpc_timeout: float
) -> tuple[float, float]:
    """``streams`` downloads of one object whose clients stop reading after
    the first data message. Per stream: (steady, phase peak) RSS growth in MiB."""
    release, all_stopped = asyncio.Event(), asyncio.Event()
    stopped = 0

    async def download() -> int:
        nonlocal stopped
        received = 0
        async for message in stub.Download(pb.DownloadRequest(key=key), timeout=rpc_timeout):
            if message.WhichOneof("message") == "data":
                if not received:
                    stopped += 1
                    if stopped == streams:
                        all_stopped.set()
                    await release.wait()
                received += len(message.data)
        return received

    base = status_mib(pid, "VmRSS")
    reset_peak_rss(pid)
    tasks = [asyncio.create_task(download()) for _ in range(streams)]
    try:
        async with asyncio.timeout(rpc_timeout):
            await all_stopped.wait()
        held = await _steady_rss(pid)
    finally:
        release.set()
    received = await asyncio.gather(*tasks)
    peak = status_mib(pid, "VmHWM")
    if any(count != size for count in received):
        raise BenchError("stream cost: a download returned the wrong size")
    return (held - base) / streams, (peak - base) / streams


async def stream_cost(options: SoakOptions, streams: int) -> StreamCost:
    """Measure what ``streams`` concurrent uploads waiting for budget, then as
    many downloads whose clients stopped reading, hold outside the budget:
    each kind on a new moto and gateway (memory_budget one part), since what
    one phase freed and the allocator kept would hide the next one's growth."""
    options = replace(options, budget=options.part_size, max_streams=streams + 1)
    data = random.Random(options.seed).randbytes(COST_OBJECT_SIZE)
    key, timeout = "cost/object.bin", options.op_timeout
    cost = StreamCost(streams, [])
    for phase in ("upload", "download"):
        async with services(options, "blobgate-streams-") as running:
            pid = running.gateway.pid
            if phase == "upload":
                cost.header, cost.idle = running.header, status_mib(pid, "VmRSS")
            else:
                cost.header.append(f"logs:    {running.logs['gateway'].parent} (downloads)")
            async with grpc.aio.insecure_channel(running.gateway_addr) as channel:
                stub = storage_pb2_grpc.StorageServiceStub(channel)
                await stub.Upload(_upload_requests(key, data), timeout=timeout)  # and warm up
                async for _ in stub.Download(pb.DownloadRequest(key=key), timeout=timeout):
                    pass
                if phase == "upload":
                    cost.upload_held, cost.upload_peak = await _waiting_uploads(
                        stub, pid, streams, data[:COST_UPLOAD_SIZE], timeout
                    )
                else:
                    cost.download_held, cost.download_peak = await _stalled_downloads(
                        stub, pid, streams, key, len(data), timeout
                    )
    return cost


def cost_report(cost: StreamCost) -> str:
    n = cost.streams
    return "\n".join(
        [
            *cost.header,
            "",
            f"| per stream, {n} at once (MiB of gateway RSS) | steady, while they wait "
            "| peak of the phase |",
            "|---|---:|---:|",
            f"| upload waiting for budget, client not waiting for accepted "
            f"| {cost.upload_held:.2f} | {cost.upload_peak:.2f} |",
            f"| download whose client stopped reading "
            f"| {cost.download_held:.2f} | {cost.download_peak:.2f} |",
            "",
            f"gateway idle RSS {cost.idle:.1f} MiB; the soak's bound counts "
            f"STREAM_OVERHEAD_MIB = {STREAM_OVERHEAD_MIB} per stream",
        ]
    )


# --- the report ------------------------------------------------------------------


def report(result: SoakResult) -> str:
    o = result.options
    count = {r: sum(1 for n in range(o.streams) if ROLES[n % len(ROLES)] == r) for r in ROLES}
    roles = f"upload {count['upload']}, download {count['download']}, stat or list (2:1) "
    roles += f"{count['unary']}"
    lines = [*result.header, ""]
    lines += [
        "| soak | value |",
        "|---|---|",
        f"| duration: operations started for (s) | {result.active:.0f} |",
        f"| duration: until the last ended (s) | {result.elapsed:.1f} |",
        f"| concurrent streams (workers) | {o.streams} |",
        f"| upload sizes (MiB) | {o.min_size / MiB:g} to {o.max_size / MiB:g}, uniform |",
        f"| workers by role | {roles} |",
        f"| gateway settings | memory_budget {o.budget // MiB} MiB, "
        f"max_streams {o.gateway_max_streams}, part_size {o.part_size // MiB} MiB, "
        f"parts_in_flight {o.parts_in_flight} |",
        f"| objects kept at once, reads before delete | {o.live_cap}, {o.reads_per_object} |",
        f"| seed | {o.seed} |",
        "",
        "| kind | ops | errors | mismatches | MiB moved | MB/s (over the whole run) "
        "| most at once | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, s in result.stats.items():
        rate = s.nbytes / result.elapsed / 1e6 if result.elapsed and s.nbytes else 0.0
        times = sorted(s.seconds)
        p50 = statistics.median(times) * 1000 if times else 0.0
        p95 = times[min(len(times) - 1, int(0.95 * len(times)))] * 1000 if times else 0.0
        top = times[-1] * 1000 if times else 0.0
        most = result.max_concurrent.get(kind, 0)
        lines.append(
            f"| {kind} | {s.ops} | {s.errors} | {s.mismatches} | {s.nbytes / MiB:.0f} "
            f"| {rate:.1f} | {most} | {p50:.0f} | {p95:.0f} | {top:.0f} |"
        )
    total_errors = sum(s.errors for s in result.stats.values())
    total_mismatch = sum(s.mismatches for s in result.stats.values())
    lines.append(f"| all | {sum(s.ops for s in result.stats.values())} | {total_errors} "
                 f"| {total_mismatch} | | | | | | |")  # fmt: skip
    ok = "PASS" if result.peak_rss <= result.bound else "FAIL"
    one_part_set = min(o.max_size, (1 + o.parts_in_flight) * o.part_size) / MiB
    lines += [
        "",
        "| memory (MiB) | value | bound | ok |",
        "|---|---:|---:|---|",
        f"| gateway idle RSS | {result.idle_rss:.1f} | | |",
        f"| gateway peak RSS, one {o.max_size // MiB} MiB upload alone "
        f"(from {result.calibration_from:.1f}; its parts {one_part_set:.0f}) "
        f"| {result.calibration_peak:.1f} | | |",
        f"| gateway peak RSS during the soak (VmHWM; from {result.start_rss:.1f}) "
        f"| {result.peak_rss:.1f} | {result.bound:.0f} = {o.budget // MiB} budget "
        f"+ {OVERHEAD_MIB} overhead + {o.gateway_max_streams} max_streams "
        f"x {STREAM_OVERHEAD_MIB} per stream | {ok} |",
        f"| gateway highest VmRSS sample (every 0.2 s), at {result.peak_sampled_at:.0f} s "
        f"| {result.peak_sampled:.1f} | | |",
        f"| gateway RSS after the soak | {result.end_rss:.1f} | | |",
        f"| moto peak RSS during the soak | {result.moto_peak:.1f} | | |",
        f"| client (this process) peak RSS | {result.client_peak:.1f} | | |",
        "",
        "| CPU seconds during the soak | client | gateway | moto |",
        "|---|---:|---:|---:|",
        "| | "
        + " | ".join(f"{result.cpu.get(p, 0.0):.1f}" for p in ("client", "gateway", "moto"))
        + " |",
    ]
    for kind, s in result.stats.items():
        lines += [f"{kind}: {text}" for text in s.examples]
    if result.log_warnings:
        lines.append(f"NOTE: gateway logged {len(result.log_warnings)} warnings, e.g. "
                     f"{result.log_warnings[:3]}")  # fmt: skip
    failures = result.failures()
    lines.append("")
    lines += [f"FAIL: {why}" for why in failures] or ["PASS: no errors, no mismatches, "
                                                     "peak RSS under the bound"]  # fmt: skip
    return "\n".join(lines)


async def bounded(run: Coroutine[Any, Any, T], within: float) -> T:
    """The whole run under one deadline; SIGTERM cancels it like Ctrl-C does."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await asyncio.wait_for(run, within)


def run_bounded(run: Coroutine[Any, Any, T], within: float, what: str) -> T:
    """Run ``run`` under one deadline; on a failure or an interrupt, say so
    and exit (1, or 130 when interrupted) after its subprocesses stopped."""
    try:
        return asyncio.run(bounded(run, within))
    except (BenchError, TimeoutError, OSError, grpc.aio.AioRpcError, BlobgateError) as exc:
        print(f"\n{what} failed: {type(exc).__name__}: {exc or 'timed out'}", file=sys.stderr)
        raise SystemExit(1) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; subprocesses stopped", file=sys.stderr)
        raise SystemExit(130) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add = parser.add_argument
    add("--duration", type=float, default=60.0, help="seconds during which operations start")
    add("--streams", type=int, default=64, help="concurrent workers (streams)")
    add("--min-size-mib", type=int, default=1, help="smallest upload, MiB")
    add("--max-size-mib", type=int, default=64, help="largest upload, MiB")
    add("--budget-mib", type=int, default=256, help="the gateway's memory_budget, MiB")
    add("--max-streams", type=int, help="the gateway's max_streams (default: --streams)")
    add("--part-size-mib", type=int, default=8, help="the gateway's part_size, MiB (>= 5)")
    add("--parts-in-flight", type=int, default=4, help="the gateway's parts_in_flight")
    add("--seed", type=int, default=1, help="seeds the content and every worker's choices")
    add("--max-live", type=int, help="objects kept in S3 at once (default: half of --streams)")
    add("--reads-per-object", type=int, default=6, help="downloads and stats before deleting")
    add("--op-timeout", type=float, default=300.0, help="seconds allowed per operation")
    add("--gateway-cmd", help="command that starts the gateway (default: blobgate-server)")
    add("--gateway-log-level", default="WARNING")
    add("--log-dir", type=Path, help="for moto.log and gateway.log (default: new temp dir)")
    add("--stream-cost", type=int, metavar="N",
        help="instead of soaking, measure what N concurrent streams (N uploads waiting "
             "for budget, then N downloads whose client stopped reading) each hold "
             "outside memory_budget")  # fmt: skip
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.streams < 1 or not 1 <= args.min_size_mib <= args.max_size_mib:
        parser.error("need --duration > 0, --streams >= 1, 1 <= --min-size-mib <= --max-size-mib")
    options = SoakOptions(
        duration=args.duration, streams=args.streams, min_size=args.min_size_mib * MiB,
        max_size=args.max_size_mib * MiB, budget=args.budget_mib * MiB,
        max_streams=args.max_streams, part_size=args.part_size_mib * MiB,
        parts_in_flight=args.parts_in_flight, seed=args.seed, max_live=args.max_live,
        reads_per_object=args.reads_per_object, op_timeout=args.op_timeout,
        log_dir=args.log_dir, gateway_log_level=args.gateway_log_level,
        gateway_cmd=tuple(shlex.split(args.gateway_cmd or "")),
    )  # fmt: skip
    print("command:", shlex.join([sys.executable, "-m", "bench.soak", *sys.argv[1:]]), flush=True)
    started = time.monotonic()
    if args.stream_cost is not None:
        if args.stream_cost < 1:
            parser.error("need --stream-cost >= 1")
        within = 3 * options.op_timeout + 180
        cost = run_bounded(stream_cost(options, args.stream_cost), within, "measurement")
        print(cost_report(cost))
        print(f"\nrun took {time.monotonic() - started:.0f} s")
        return 0
    within = options.duration + 2 * options.op_timeout + 180
    result = run_bounded(soak(options), within, "soak")
    print(report(result))
    print(f"\nrun took {time.monotonic() - started:.0f} s")
    return 1 if result.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
