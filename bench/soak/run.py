"""One soak run: start moto and the gateway, calibrate, run the workers while
measuring the processes, then collect what S3 and the gateway's log show."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re

from bench import MiB
from bench.common.errors import BenchError
from bench.common.process_usage import RssSampler, cpu_seconds, reset_peak_rss, status_mib
from bench.common.services import s3_session, services
from bench.soak.abusers import Abusers
from bench.soak.content import Corpus
from bench.soak.identity import Access, make_identity
from bench.soak.options import BUCKET, SoakOptions
from bench.soak.result import SoakResult
from bench.soak.workers import Soak
from blobgate.client import Client

WORKER = "soak-worker"  # the workers' principal in JWT mode (allowed every stream)


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
    async with s3_session().client("s3", endpoint_url=endpoint) as s3:
        uploads = (await s3.list_multipart_uploads(Bucket=BUCKET)).get("Uploads", [])
    return [f"{u.get('Key')} ({u.get('UploadId')})" for u in uploads]


async def soak(options: SoakOptions) -> SoakResult:
    """Start moto and the gateway, calibrate, soak, stop them; the outcome."""
    result = SoakResult(options)
    identity = make_identity(options.identity, options.log_dir)
    async with services(options.services_plan("blobgate-soak-", identity)) as running:
        result.header = running.header
        moto, gateway = running.moto, running.gateway
        pids = {"client": os.getpid(), "gateway": gateway.pid, "moto": moto.pid}
        access = Access(running.gateway_addr, identity)
        client = Client(running.gateway_addr, timeout=options.op_timeout,
                        stream_timeout=options.op_timeout, max_attempts=1,
                        **access.client_keywords(WORKER))  # fmt: skip
        async with client:
            await calibrate(client, options, gateway.pid, result)
            run = Soak(client, options, result)
            abusers = None
            if options.abusers:
                abusers = Abusers(
                    access, options.abusers, options.seed, run.readable, options.idle_timeout,
                )  # fmt: skip
                result.abusers = abusers
            cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            result.start_rss = status_mib(gateway.pid, "VmRSS")
            reset_peak_rss(gateway.pid)
            for pid in (moto.pid, os.getpid()):
                reset_peak_rss(pid)
            sampler = RssSampler(gateway.pid)
            sampling = asyncio.create_task(sampler.run())
            try:
                await run.run(abusers)
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
