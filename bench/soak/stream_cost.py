"""What one open stream holds outside memory_budget: ``python -m bench.soak
--stream-cost N`` measures the gateway's RSS growth per stream with N uploads
waiting for budget, then N downloads whose client stopped reading."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import grpc

from bench import MiB
from bench.common.errors import BenchError
from bench.common.markdown_table import head, row
from bench.common.process_usage import reset_peak_rss, status_mib
from bench.common.services import services
from bench.soak.options import STREAM_OVERHEAD_MIB, SoakOptions
from blobgate.v1 import storage_pb2 as pb
from blobgate.v1 import storage_pb2_grpc

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
        async with services(options.services_plan("blobgate-streams-")) as running:
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
    """The per-stream table, after the run's header lines."""
    columns = (
        f"per stream, {cost.streams} at once (MiB of gateway RSS)",
        "steady, while they wait",
        "peak of the phase",
    )
    return "\n".join(
        [
            *cost.header,
            "",
            *head(*columns, align="lrr"),
            row(
                "upload waiting for budget, client not waiting for accepted",
                f"{cost.upload_held:.2f}",
                f"{cost.upload_peak:.2f}",
            ),
            row(
                "download whose client stopped reading",
                f"{cost.download_held:.2f}",
                f"{cost.download_peak:.2f}",
            ),
            "",
            f"gateway idle RSS {cost.idle:.1f} MiB; the soak's bound counts "
            f"STREAM_OVERHEAD_MIB = {STREAM_OVERHEAD_MIB} per stream",
        ]
    )
