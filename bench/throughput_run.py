"""One throughput run: start moto and the gateway, then time interleaved
repetitions of the four transfers, recording MB/s, CPU and peak RSS."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import grpc
from botocore.config import Config

from bench import MiB
from bench.process_usage import cpu_seconds, reset_peak_rss, status_mib
from bench.services import ServicePlan, s3_session, services
from bench.throughput_transfers import BUCKET, Transfers
from blobgate.v1 import storage_pb2_grpc

T = TypeVar("T")
PAUSE = 0.5  # seconds between timed operations, so one's tail does not bleed into the next


class Recorder:
    """Per-rep values by name: MB/s of each timed transfer, CPU seconds of each
    process during it, gateway peak RSS in MiB."""

    def __init__(self, pids: dict[str, int], op_timeout: float) -> None:
        self.pids, self.op_timeout = pids, op_timeout
        self.values = defaultdict[str, list[float]](list)

    async def timed(self, op: str, nbytes: int, run: Callable[[], Awaitable[T]]) -> T:
        gateway = self.pids["gateway"]
        reset_peak_rss(gateway)
        self.values[f"{op} rss0"].append(status_mib(gateway, "VmRSS"))
        cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        start = time.perf_counter()
        async with asyncio.timeout(self.op_timeout):
            result = await run()
        elapsed = time.perf_counter() - start
        self.values[f"{op} rss"].append(status_mib(gateway, "VmHWM"))
        self.values[op].append(nbytes / elapsed / 1e6)
        for name, pid in self.pids.items():
            self.values[f"{op} cpu {name}"].append(cpu_seconds(pid) - cpu[name])
        await asyncio.sleep(PAUSE)
        return result

    def median(self, name: str) -> float:
        return statistics.median(self.values[name])


async def measure(args: argparse.Namespace, plan: ServicePlan, notes: list[str]) -> Recorder:
    """Start moto and the gateway as ``plan`` says, warm up, time ``args.reps``
    repetitions; add to ``notes`` what went wrong without stopping the run."""
    size, small = args.size_mib * MiB, args.small_mib * MiB
    data = os.urandom(size)  # the one source object; every transfer sends slices of it
    digest, small_digest = hashlib.sha256(data).digest(), hashlib.sha256(data[:small]).digest()
    config = Config(
        max_pool_connections=args.parts_in_flight + 4, connect_timeout=5,
        read_timeout=args.op_timeout, retries={"mode": "standard", "max_attempts": 3},
        request_checksum_calculation="when_required",  # what the gateway uses by default
        response_checksum_validation="when_required",
    )  # fmt: skip
    async with (
        services(plan) as running,
        grpc.aio.insecure_channel(running.gateway_addr) as channel,
        s3_session().client("s3", endpoint_url=running.moto_url, config=config) as s3,
    ):
        gateway = running.gateway.pid
        rec = Recorder({"client": os.getpid(), "gateway": gateway, "moto": running.moto.pid},
                       args.op_timeout)  # fmt: skip
        rec.values["idle rss"].append(status_mib(gateway, "VmRSS"))
        xfer = Transfers(storage_pb2_grpc.StorageServiceStub(channel), s3, args, notes)
        tiny = data[:1024]  # warm-up: connections, lazy imports; not measured
        await xfer.gateway_upload("tiny", tiny, hashlib.sha256(tiny).digest())
        await xfer.direct_upload("tiny2", tiny)
        await xfer.gateway_download("tiny", tiny)
        await xfer.direct_download("tiny2", tiny)
        for rep in range(args.reps):
            print(f"rep {rep + 1}/{args.reps}:", end=" ", flush=True)
            await rec.timed(
                "upload small",
                small,
                partial(xfer.gateway_upload, "small", data[:small], small_digest),
            )
            await s3.delete_object(Bucket=BUCKET, Key="small")
            ups: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                ("upload gateway", partial(xfer.gateway_upload, "gw", data, digest)),
                ("upload direct", partial(xfer.direct_upload, "direct", data)),
            ]
            downs: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                ("download gateway", partial(xfer.gateway_download, "gw", data)),
                ("download direct", partial(xfer.direct_download, "gw", data)),  # same object
            ]
            if rep % 2:  # alternate who goes first
                ups.reverse()
                downs.reverse()
            for op, upload in ups:
                await rec.timed(op, size, upload)
            await s3.delete_object(Bucket=BUCKET, Key="direct")
            for op, download in downs:
                await rec.timed(op, size, download)
            await s3.delete_object(Bucket=BUCKET, Key="gw")
            print(", ".join(f"{op} {rec.values[op][-1]:.0f}" for op, _ in ups + downs), "MB/s")
        left = (await s3.list_multipart_uploads(Bucket=BUCKET)).get("Uploads", [])
        if left:
            notes.append(f"{len(left)} multipart uploads left behind in {BUCKET}")
    return rec
