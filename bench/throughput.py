"""Gateway vs direct-S3 throughput, and the gateway's memory, in one run.

Starts moto's S3 server and blobgate-server as subprocesses on 127.0.0.1; this
process is the client (three processes sharing the machine). Over --reps
interleaved repetitions it uploads and downloads one --size-mib object through
the gateway (grpc.aio, 1 MiB messages, expected sha256 computed beforehand) and
directly with aioboto3 (multipart with the gateway's part size and parts in
flight; get_object read in 1 MiB reads), checks every downloaded byte against the
source as it arrives, and reads the gateway's peak RSS (VmHWM, reset through
/proc/PID/clear_refs) around each transfer. Prints medians, paired
gateway/direct ratios and the targets.

    .venv/bin/python -m bench.throughput [--reps 3] [--size-mib 256]
        [--gateway-env MALLOC_MMAP_THRESHOLD_=67108864 --gateway-env ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import aioboto3
import grpc
from botocore.config import Config
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ByteSize, TypeAdapter, ValidationError

from blobgate.v1 import storage_pb2 as pb
from blobgate.v1 import storage_pb2_grpc

T = TypeVar("T")
MiB = 1024 * 1024
HOST = "127.0.0.1"
BUCKET = "blobgate-bench"
ROOT = Path(__file__).resolve().parent.parent
AWS_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
AWS_ENV["AWS_DEFAULT_REGION"] = "us-east-1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
UPLOAD_RATIO, DOWNLOAD_RATIO, PEAK_RSS_MIB, RSS_GROWTH_PCT = 0.9, 0.7, 160, 20  # the targets
PAUSE = 0.5  # seconds between timed operations, so one's tail does not bleed into the next


class BenchError(Exception):
    """The benchmark cannot go on or a transfer came back wrong."""


def parse_size(text: str) -> int:
    """Sizes as the gateway parses them (pydantic's ByteSize): 8MiB, 8388608, 8MB."""
    try:
        return int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 8MiB)") from None


def env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


# --- subprocesses and /proc -------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the benchmark dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


@contextlib.contextmanager
def spawned(
    name: str, cmd: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run cmd in its own session (Ctrl-C reaches only us); stop it on the way out."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    print(f"{name} ignored SIGTERM for 10 s; killing it", file=sys.stderr)
                    proc.kill()
                    proc.wait(timeout=5)


def status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no {field} in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


async def wait_until(
    proc: subprocess.Popen[bytes], what: str, log: Path, within: float,
    ready: Callable[[], Awaitable[bool]],
) -> None:  # fmt: skip
    """Poll ready() until it says yes; fail early if the process exits."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with code {proc.returncode}; see {log}")
        with contextlib.suppress(OSError, grpc.aio.AioRpcError):
            if await ready():
                return
        await asyncio.sleep(0.25)
    raise BenchError(f"{what} not ready within {within:.0f} s; see {log}")


async def moto_listening(port: int) -> bool:
    _, writer = await asyncio.open_connection(HOST, port)
    writer.close()
    return True


async def gateway_serving(channel: grpc.aio.Channel) -> bool:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


# --- the four transfers -------------------------------------------------------


class Transfers:
    def __init__(self, stub: Any, s3: Any, args: argparse.Namespace, notes: list[str]) -> None:
        self.stub, self.s3, self.timeout, self.notes = stub, s3, args.op_timeout, notes
        self.part_size, self.in_flight = args.part_size, args.parts_in_flight

    async def gateway_upload(self, key: str, data: bytes, digest: bytes) -> None:
        async def requests() -> AsyncIterator[pb.UploadRequest]:
            expected = pb.Checksums(sha256=digest)
            yield pb.UploadRequest(spec=pb.UploadSpec(key=key, size=len(data), expected=expected))
            view = memoryview(data)
            for offset in range(0, len(data), MiB):  # protobuf wants bytes: one 1 MiB copy each
                yield pb.UploadRequest(data=bytes(view[offset : offset + MiB]))

        reply = await self.stub.Upload(requests(), timeout=self.timeout)
        if reply.object.size != len(data) or reply.object.checksums.sha256 != digest:
            self.notes.append(f"Upload {key}: reply size/sha256 differ from what was sent")

    async def gateway_download(self, key: str, expect: bytes) -> None:
        offset = 0
        call = self.stub.Download(pb.DownloadRequest(key=key), timeout=self.timeout)
        async for message in call:
            if message.WhichOneof("message") == "data":
                data = message.data  # each access copies the field: read it once
                if len(data) > MiB:
                    self.notes.append(f"Download {key}: a data message above 1 MiB")
                offset = check(key, expect, offset, data)
            elif offset:
                self.notes.append(f"Download {key}: an Object message after data")
        check_end(key, expect, offset)

    async def direct_upload(self, key: str, data: bytes) -> None:
        s3 = self.s3
        if len(data) <= self.part_size:
            await s3.put_object(Bucket=BUCKET, Key=key, Body=data)
            return
        upload_id = (await s3.create_multipart_upload(Bucket=BUCKET, Key=key))["UploadId"]
        budget = asyncio.Semaphore(self.in_flight)

        async def part(number: int, offset: int) -> dict[str, Any]:
            async with budget:  # slice inside: at most in_flight parts in memory
                body = data[offset : offset + self.part_size]
                reply = await s3.upload_part(
                    Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                )
                return {"PartNumber": number, "ETag": reply["ETag"]}

        try:
            async with asyncio.TaskGroup() as group:
                offsets = range(0, len(data), self.part_size)
                tasks = [group.create_task(part(n, off)) for n, off in enumerate(offsets, 1)]
            parts = [task.result() for task in tasks]
            await s3.complete_multipart_upload(
                Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)
            raise

    async def direct_download(self, key: str, expect: bytes) -> None:
        offset = 0
        body = (await self.s3.get_object(Bucket=BUCKET, Key=key))["Body"]
        async with body:  # entering yields aiohttp's response; read through the StreamingBody
            while chunk := await body.read(MiB):
                offset = check(key, expect, offset, chunk)
        check_end(key, expect, offset)


def check(key: str, expect: bytes, offset: int, chunk: bytes) -> int:
    """Compare a received chunk with the source in place and return the next offset.
    Done while timing, at ~13 GB/s: keeping the chunks to compare later was
    measured to slow the direct download ~30% (every chunk page-faults fresh
    memory) and so to flatter the gateway's ratio."""
    if not expect.startswith(chunk, offset):
        raise BenchError(
            f"{key}: received bytes differ from the source in [{offset}, +{len(chunk)})"
        )
    return offset + len(chunk)


def check_end(key: str, expect: bytes, offset: int) -> None:
    if offset != len(expect):
        raise BenchError(f"{key}: received {offset} bytes, sent {len(expect)}")


# --- the run ------------------------------------------------------------------


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


async def measure(
    args: argparse.Namespace, procs: dict[str, subprocess.Popen[bytes]], urls: dict[str, str],
    logs: dict[str, Path], notes: list[str],
) -> Recorder:  # fmt: skip
    size, small = args.size_mib * MiB, args.small_mib * MiB
    data = os.urandom(size)  # the one source object; every transfer sends slices of it
    digest, small_digest = hashlib.sha256(data).digest(), hashlib.sha256(data[:small]).digest()
    moto_port = int(urls["moto"].rpartition(":")[2])
    await wait_until(procs["moto"], "moto", logs["moto"], 60, partial(moto_listening, moto_port))
    config = Config(
        max_pool_connections=args.parts_in_flight + 4, connect_timeout=5,
        read_timeout=args.op_timeout, retries={"mode": "standard", "max_attempts": 3},
        request_checksum_calculation="when_required",  # what the gateway uses by default
        response_checksum_validation="when_required",
    )  # fmt: skip
    session = aioboto3.Session(
        AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1"
    )
    s3_client = session.client("s3", endpoint_url=urls["moto"], config=config)
    async with grpc.aio.insecure_channel(urls["gateway"]) as channel, s3_client as s3:
        serving = partial(gateway_serving, channel)
        await wait_until(procs["gateway"], "gateway", logs["gateway"], 90, serving)
        pids = {"client": os.getpid(), **{name: p.pid for name, p in procs.items()}}
        rec = Recorder(pids, args.op_timeout)
        rec.values["idle rss"].append(status_mib(procs["gateway"].pid, "VmRSS"))
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


async def bounded(run: Awaitable[T], within: float) -> T:
    """The whole run under one deadline; SIGTERM cancels it like Ctrl-C does."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await asyncio.wait_for(run, within)


def report(rec: Recorder, args: argparse.Namespace) -> None:
    big, small = f"{args.size_mib} MiB", f"{args.small_mib} MiB"
    per_rep = rec.values
    for kind in ("upload", "download"):
        pairs = zip(per_rep[f"{kind} gateway"], per_rep[f"{kind} direct"], strict=True)
        per_rep[f"{kind} ratio"] = [gateway / direct for gateway, direct in pairs]
    pairs = zip(per_rep["upload gateway rss"], per_rep["upload small rss"], strict=True)
    per_rep["rss growth"] = [100 * (big_rss / small_rss - 1) for big_rss, small_rss in pairs]
    rows = [  # label, values, target text, target test
        ("upload gateway (MB/s)", "upload gateway", "", None),
        ("upload direct (MB/s)", "upload direct", "", None),
        ("upload ratio gateway/direct", "upload ratio", f">= {UPLOAD_RATIO}",
         lambda v: v >= UPLOAD_RATIO),
        ("download gateway (MB/s)", "download gateway", "", None),
        ("download direct (MB/s)", "download direct", "", None),
        ("download ratio gateway/direct", "download ratio", f">= {DOWNLOAD_RATIO}",
         lambda v: v >= DOWNLOAD_RATIO),
        (f"gateway peak RSS, {small} upload (MiB)", "upload small rss", "", None),
        (f"gateway peak RSS, {big} upload (MiB)", "upload gateway rss", f"<= {PEAK_RSS_MIB}",
         lambda v: v <= PEAK_RSS_MIB),
        (f"RSS growth, {big} vs {small} upload (%)", "rss growth", f"<= {RSS_GROWTH_PCT}",
         lambda v: v <= RSS_GROWTH_PCT),
        (f"gateway peak RSS, {big} download (MiB)", "download gateway rss", "", None),
        ("gateway idle RSS before transfers (MiB)", "idle rss", "", None),
    ]  # fmt: skip
    print(f"\n| metric (median of {args.reps} reps) | value | per rep | target | ok |")
    print("|---|---:|---|---|---|")
    for label, name, target, test in rows:
        value = rec.median(name)
        verdict = "" if test is None else ("PASS" if test(value) else "FAIL")
        each = ", ".join(f"{v:.2f}" if "ratio" in name else f"{v:.1f}" for v in per_rep[name])
        if per_rep.get(f"{name}0"):  # peak RSS: show where each transfer started from
            pairs = zip(per_rep[name], per_rep[f"{name}0"], strict=True)
            each = ", ".join(f"{peak:.1f} (from {start:.1f})" for peak, start in pairs)
        print(f"| {label} | {value:.2f} | {each} | {target} | {verdict} |")
    print("Ratios are medians of per-rep ratios. Peak RSS is VmHWM after resetting it to the")
    print("current RSS just before the transfer, so memory kept from earlier transfers counts.")
    print(f"\n| {big} transfer (medians) | MB/s | client CPU s | gateway CPU s | moto CPU s |")
    print("|---|---:|---:|---:|---:|")
    for op in ("upload gateway", "upload direct", "download gateway", "download direct"):
        cpus = " | ".join(
            f"{rec.median(f'{op} cpu {p}'):.2f}" for p in ("client", "gateway", "moto")
        )
        print(f"| {op} | {rec.median(op):.0f} | {cpus} |")


def code_version() -> str:
    """The commit, and a digest of server/ as it is on disk (the tree may be ahead of it)."""
    git = ["git", "-C", str(ROOT)]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run([*git, "status", "--porcelain", "server"], capture_output=True,
                               text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = "?", ""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "server").glob("*.py")):
        digest.update(path.read_bytes())
    state = " + uncommitted changes" if dirty else ""
    return f"gateway code: commit {commit}{state}, server/*.py sha256 {digest.hexdigest()[:12]}"


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        "?",
    )
    malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    return (
        f"machine: nproc {len(os.sched_getaffinity(0))}, CPU {model}, {platform.platform()}, "
        f"Python {platform.python_version()}, grpcio {version('grpcio')}, "
        f"aioboto3 {version('aioboto3')}, moto {version('moto')}"
        + (f", client env {malloc}" if malloc else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add = parser.add_argument
    add("--reps", type=int, default=3, help="interleaved repetitions; medians are reported")
    add("--size-mib", type=int, default=256, help="object size for throughput and peak RSS")
    add("--small-mib", type=int, default=32, help="the small upload that peak RSS is compared to")
    add("--part-size", type=parse_size, default="8MiB", help="multipart part size, e.g. 8MiB")
    add("--parts-in-flight", type=int, default=4, help="parts uploaded at once")
    add("--gateway-env", type=env_pair, action="append", default=[], metavar="KEY=VALUE",
        help="extra environment for the gateway process (repeatable)")  # fmt: skip
    add("--gateway-cmd", help="command that starts the gateway (default: blobgate-server)")
    add("--gateway-log-level", default="WARNING")
    add("--op-timeout", type=float, default=300, help="seconds allowed per transfer")
    add("--timeout", type=float, default=1800, help="seconds allowed for the whole run")
    add("--log-dir", type=Path, help="for moto.log and gateway.log (default: new temp dir)")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.size_mib < 1 or not 1 <= args.small_mib <= args.size_mib:
        parser.error("--reps and --size-mib must be >= 1, and 1 <= --small-mib <= --size-mib")
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="blobgate-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = {"moto": log_dir / "moto.log", "gateway": log_dir / "gateway.log"}
    ports = {"moto": free_port(), "gateway": free_port()}
    urls = {"moto": f"http://{HOST}:{ports['moto']}", "gateway": f"{HOST}:{ports['gateway']}"}
    gateway_cmd = shlex.split(
        args.gateway_cmd or str(Path(sys.executable).with_name("blobgate-server"))
    )
    gateway_cmd += [
        "--listen", urls["gateway"], "--s3-endpoint", urls["moto"], "--s3-region", "us-east-1",
        "--default-bucket", BUCKET, "--create-buckets", "--part-size", str(args.part_size),
        "--parts-in-flight", str(args.parts_in_flight), "--log-level", args.gateway_log_level,
    ]  # fmt: skip
    moto_cmd = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(ports["moto"])]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("BLOBGATE_")} | AWS_ENV
    extra_env = dict(args.gateway_env)
    print(machine())
    print(code_version())
    print("command:", shlex.join([sys.executable, "-m", "bench.throughput", *sys.argv[1:]]))
    print("gateway:", shlex.join([f"{k}={v}" for k, v in extra_env.items()] + gateway_cmd))
    print("moto:   ", shlex.join(moto_cmd), f"\nlogs:    {log_dir}")
    notes: list[str] = []
    started = time.monotonic()
    try:
        with (
            spawned("moto", moto_cmd, base_env, logs["moto"]) as moto,
            spawned("gateway", gateway_cmd, base_env | extra_env, logs["gateway"]) as gateway,
        ):
            run = measure(args, {"gateway": gateway, "moto": moto}, urls, logs, notes)
            rec = asyncio.run(bounded(run, args.timeout))
    except (BenchError, TimeoutError, OSError, grpc.aio.AioRpcError) as exc:
        why = str(exc) or "timed out (see --op-timeout, --timeout)"
        print(f"\nbenchmark failed: {type(exc).__name__}: {why}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; subprocesses stopped", file=sys.stderr)
        return 130
    report(rec, args)
    gateway_log = logs["gateway"].read_text(errors="replace").splitlines()
    problems = [ln for ln in gateway_log if re.search(r"WARNING|ERROR|CRITICAL|Traceback", ln)]
    if problems:
        notes.append(f"gateway log has {len(problems)} warning/error lines, e.g. {problems[:3]}")
    for note in notes:
        print("NOTE:", note)
    print(f"\nrun took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
