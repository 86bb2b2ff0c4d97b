"""One throughput run: start moto and the gateway (two gateways, asyncio's
loop and uvloop, with --compare-loops), then time interleaved repetitions of
the transfers and the small-object ops, recording MB/s, CPU and peak RSS."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import statistics
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import grpc
from botocore.config import Config

from bench import MiB
from bench.common.process_usage import cpu_seconds, reset_peak_rss, status_mib
from bench.common.services import ServicePlan, gateway_beside, s3_session, second_gateway, services
from bench.throughput.small_objects import (
    DirectRequests,
    Side,
    SmallObjects,
    gateway_requests,
    measure_small,
)
from bench.throughput.transfers import BUCKET, Transfers
from blobgate.client import Client

T = TypeVar("T")
PAUSE = 0.5  # seconds between timed operations, so one's tail does not bleed into the next
# Direct-download answers per rep whose gateway CPU is measured together: one
# answer costs a few ms, below the 10 ms resolution of /proc/PID/stat.
ANSWERS = 40

# The timed paths: (name, whether it goes through a gateway); the gateway
# ones are named "NAME" or, comparing loops, "NAME [LOOP]".
UPLOADS = ("upload gateway", "upload gateway, no sha256", "upload Client, direct to S3")
DOWNLOADS = (
    "download gateway",
    "download gateway, Client",
    "download gateway, parsed",
    "download Client, direct from S3",
)


def named(op: str, label: str) -> str:
    """``op`` through the gateway labelled ``label`` ("" when there is one)."""
    return f"{op} [{label}]" if label else op


class Recorder:
    """Per-rep values by name: MB/s of each timed transfer, CPU seconds of each
    process during it, gateway peak RSS in MiB."""

    def __init__(self, pids: dict[str, int], op_timeout: float) -> None:
        self.pids, self.op_timeout = pids, op_timeout
        self.values = defaultdict[str, list[float]](list)
        self.labels: list[str] = [""]  # the gateways' labels, in order

    async def timed(
        self, op: str, nbytes: int, run: Callable[[], Awaitable[T]], gateway: int | None = None
    ) -> T:
        """Time ``run``; the CPU of the client, moto and ``gateway`` (the pid of
        the gateway it goes through; default: the first) during it."""
        pids = dict(self.pids)
        if gateway is not None:
            pids["gateway"] = gateway
        reset_peak_rss(pids["gateway"])
        self.values[f"{op} rss0"].append(status_mib(pids["gateway"], "VmRSS"))
        cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        start = time.perf_counter()
        async with asyncio.timeout(self.op_timeout):
            result = await run()
        elapsed = time.perf_counter() - start
        self.values[f"{op} rss"].append(status_mib(pids["gateway"], "VmHWM"))
        self.values[op].append(nbytes / elapsed / 1e6)
        for name, pid in pids.items():
            self.values[f"{op} cpu {name}"].append(cpu_seconds(pid) - cpu[name])
        await asyncio.sleep(PAUSE)
        return result

    def median(self, name: str) -> float:
        return statistics.median(self.values[name])


@dataclass
class Gateway:
    """One gateway under test: its label, process, transfers and S3 request count."""

    label: str
    pid: int
    xfer: Transfers
    small: SmallObjects
    metrics_url: str | None


@contextlib.asynccontextmanager
async def gateways(
    plan: ServicePlan, pid: int, s3: Any, args: argparse.Namespace, notes: list[str]
) -> AsyncIterator[list[Gateway]]:
    """The gateway of ``plan`` (process ``pid``, running), and with
    --compare-loops a second one beside it on uvloop (the first on asyncio's
    loop); their channels open."""
    async with contextlib.AsyncExitStack() as stack:
        found: list[tuple[str, int, ServicePlan]] = []
        found.append(("asyncio" if args.compare_loops else "", pid, plan))
        if args.compare_loops:
            other = second_gateway(plan, "uvloop", ["--event-loop", "uvloop"])
            proc = await stack.enter_async_context(gateway_beside(other))
            found.append(("uvloop", proc.pid, other))
        result = []
        for label, gateway_pid, gateway_plan in found:
            channel = grpc.aio.insecure_channel(gateway_plan.gateway_addr)
            await stack.enter_async_context(channel)
            address, timeout = gateway_plan.gateway_addr, args.op_timeout
            # The Client through the gateway, and the Client sent to S3 (the
            # gateway runs with --direct-transfers; generated stubs do not ask).
            client = Client(address, stream_timeout=timeout, direct_downloads=False)
            await stack.enter_async_context(client)
            direct_client = Client(address, stream_timeout=timeout)
            await stack.enter_async_context(direct_client)
            xfer = Transfers(channel, client, s3, args, notes, direct_client=direct_client)
            small = SmallObjects(xfer.stub, s3, args)
            result.append(Gateway(label, gateway_pid, xfer, small, gateway_plan.metrics_url))
        yield result


async def measure(args: argparse.Namespace, plan: ServicePlan, notes: list[str]) -> Recorder:
    """Start moto and the gateway(s) as ``plan`` says, warm up, time
    ``args.reps`` repetitions; add to ``notes`` what went wrong without
    stopping the run."""
    size, small = args.size_mib * MiB, args.small_mib * MiB
    data = os.urandom(size or 1024)  # the one source object; every transfer sends slices of it
    digest, small_digest = hashlib.sha256(data).digest(), hashlib.sha256(data[:small]).digest()
    config = Config(
        max_pool_connections=max(args.parts_in_flight, args.concurrency) + 4, connect_timeout=5,
        read_timeout=args.op_timeout, retries={"mode": "standard", "max_attempts": 3},
        request_checksum_calculation="when_required",  # what the gateway uses by default
        response_checksum_validation="when_required",
    )  # fmt: skip
    async with (
        services(plan) as running,
        s3_session().client("s3", endpoint_url=running.moto_url, config=config) as s3,
        gateways(plan, running.gateway.pid, s3, args, notes) as gws,
    ):
        direct_requests = DirectRequests(s3)
        client, moto = os.getpid(), running.moto.pid
        rec = Recorder({"client": client, "gateway": gws[0].pid, "moto": moto}, args.op_timeout)
        rec.labels = [gw.label for gw in gws]
        for gw in gws:
            rec.values[named("idle rss", gw.label)].append(status_mib(gw.pid, "VmRSS"))
        sides = [
            Side(named("gateway", gw.label), "gateway", gw.small,
                 None if gw.metrics_url is None else partial(gateway_requests, gw.metrics_url),
                 {"client": client, "gateway": gw.pid, "moto": moto})
            for gw in gws
        ]  # fmt: skip
        direct_pids = {"client": client, "moto": moto}
        sides.append(Side("direct", "direct", gws[0].small, direct_requests.snapshot, direct_pids))
        tiny = data[:1024]  # warm-up: connections, lazy imports; not measured
        for gw in gws:
            await gw.xfer.gateway_upload("tiny", tiny, hashlib.sha256(tiny).digest())
            await gw.xfer.gateway_download("tiny", tiny)
            await gw.xfer.client_download("tiny", tiny)  # the Clients' connections
            await gw.xfer.client_download("tiny", tiny, direct=True)
        await gws[0].xfer.direct_upload("tiny2", tiny)
        await gws[0].xfer.direct_download("tiny2", tiny)
        for rep in range(args.reps):
            print(f"rep {rep + 1}/{args.reps}:", end=" ", flush=True)
            if not size:  # --size-mib 0: the small objects only
                await _small_rep(sides, rec, rep)
                continue
            ups: list[tuple[str, int | None, Callable[[], Awaitable[Any]]]] = []
            downs: list[tuple[str, int | None, Callable[[], Awaitable[Any]]]] = []
            for gw in gws:
                key = named("gw", gw.label)
                await rec.timed(
                    named("upload small", gw.label), small,
                    partial(gw.xfer.gateway_upload, key + "-small", data[:small], small_digest),
                    gw.pid,
                )  # fmt: skip
                await s3.delete_object(Bucket=BUCKET, Key=key + "-small")
                ups += [
                    (named(UPLOADS[0], gw.label), gw.pid,
                     partial(gw.xfer.gateway_upload, key, data, digest)),
                    (named(UPLOADS[1], gw.label), gw.pid,
                     partial(gw.xfer.gateway_upload, key + "-no-sha256", data, digest,
                             declare=False)),
                    (named(UPLOADS[2], gw.label), gw.pid,
                     partial(gw.xfer.client_upload_direct, key + "-direct-up", data)),
                    ]  # fmt: skip
                same = named("gw", gws[0].label)  # every download reads the same object
                downs += [
                    (named(DOWNLOADS[0], gw.label), gw.pid,
                     partial(gw.xfer.gateway_download, same, data)),
                    (named(DOWNLOADS[1], gw.label), gw.pid,
                     partial(gw.xfer.client_download, same, data)),
                    (named(DOWNLOADS[2], gw.label), gw.pid,
                     partial(gw.xfer.gateway_download, same, data, parsed=True)),
                    (named(DOWNLOADS[3], gw.label), gw.pid,
                     partial(gw.xfer.client_download, same, data, direct=True)),
                ]  # fmt: skip
            xfer = gws[0].xfer
            ups.append(("upload direct", None, partial(xfer.direct_upload, "direct", data)))
            same = named("gw", gws[0].label)  # every download reads the same object
            downs.append(("download direct", None, partial(xfer.direct_download, same, data)))
            shift = rep % len(ups)  # rotate who goes first
            ups, downs = ups[shift:] + ups[:shift], downs[shift:] + downs[:shift]
            for op, gateway, upload in ups:
                await rec.timed(op, size, upload, gateway)
            for op, gateway, download in downs:
                await rec.timed(op, size, download, gateway)
            for gw in gws:
                before = cpu_seconds(gw.pid)
                await gw.xfer.direct_answers(same, ANSWERS)
                per_answer = (cpu_seconds(gw.pid) - before) / ANSWERS
                rec.values[named("direct answer cpu", gw.label)].append(per_answer)
                await asyncio.sleep(PAUSE)
            for gw in gws:
                key = named("gw", gw.label)
                await s3.delete_object(Bucket=BUCKET, Key=key)
                await s3.delete_object(Bucket=BUCKET, Key=key + "-no-sha256")
                await s3.delete_object(Bucket=BUCKET, Key=key + "-direct-up")
            await s3.delete_object(Bucket=BUCKET, Key="direct")
            print(", ".join(f"{op} {rec.values[op][-1]:.0f}" for op, _, _ in ups + downs), "MB/s")
            if args.small_ops:
                await _small_rep(sides, rec, rep)
        left = (await s3.list_multipart_uploads(Bucket=BUCKET)).get("Uploads", [])
        if left:
            notes.append(f"{len(left)} multipart uploads left behind in {BUCKET}")
    return rec


async def _small_rep(sides: list[Side], rec: Recorder, rep: int) -> None:
    """One rep of the small-object ops on every side; prints their ops/s."""
    await measure_small(sides, rec.values, rep)
    print("   small ops/s:", ", ".join(
        f"{kind} {side.name} {rec.values[f'small {kind} {side.name} ops/s'][-1]:.0f}"
        for kind in ("upload", "stat", "download") for side in sides
    ))  # fmt: skip
