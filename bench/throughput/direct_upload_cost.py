"""The gateway's CPU for direct uploads, as a cost model: a fixed cost per
session and a cost per part, each from many calls (one call costs less
than the 10 ms resolution of /proc/PID/stat).

Starts moto and a gateway with --direct-transfers (as bench.throughput
does), then, from this process:

- ``--sessions`` one-part direct uploads as the Client makes them
  (StartResumableUpload, one PresignUploadParts, the PUT,
  CompleteDirectUpload with the sha256), and as many whose spec declares
  the sha256 (no sha256 record, no HEAD at the commit): the gateway's CPU
  per session, per call kind, and its S3 requests per session by operation
  (from its /metrics);
- ``--big-sessions`` uploads of ``--big-parts`` parts as the Client makes
  them: their commit's CPU over a one-part session's gives what each part
  adds to the commit (ListParts lists it, CompleteMultipartUpload names it);
- ``--parts`` part URLs of one session, signed by PresignUploadPart one a
  call, then by PresignUploadParts in batches of 64 (the Client's) and of
  1000 (the most a call takes): the gateway's CPU per part.

The gateway runs with 5 MiB parts (S3's smallest), so that the parts PUT
to moto are few bytes; no figure depends on the part size. Prints the
model: gateway CPU per upload = fixed + calls x per-call + parts x
per-part, and what it gives in CPU-seconds per GiB for some sizes with the
default 8 MiB parts.

    python -m bench.throughput.direct_upload_cost [--sessions 200] [--parts 2000]
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import urllib.request
from collections import Counter
from typing import Any

import crc32c

from bench import MiB
from bench.common.command_line import bench_parser, command_line
from bench.common.markdown_table import head, row
from bench.common.process_usage import cpu_seconds
from bench.common.services import gateway_channel, plan_services, services
from blobgate.v1 import storage_pb2, storage_pb2_grpc

pb = storage_pb2
PART = 5 * MiB  # the gateway's part_size here: S3's smallest
DEFAULT_PART = 8 * MiB  # the gateway's default part_size, for the model
BATCHES = (64, 1000)
_COUNT = re.compile(r'^blobgate_s3_request_duration_seconds_count\{operation="(\w+)".*\} (\S+)$')


def _put(url: str, headers: dict[str, str], data: bytes) -> None:
    request = urllib.request.Request(url, data=data, method="PUT", headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        response.read()


def _s3_requests(metrics_url: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            match = _COUNT.match(line)
            if match:
                counts[match.group(1)] += int(float(match.group(2)))
    return counts


async def _sessions(stub: Any, pid: int, count: int, *, declared: bool) -> dict[str, float]:
    """ms of gateway CPU per session, in all and per call kind; ``declared``:
    the spec declares the sha256."""
    spent: Counter[str] = Counter()
    for i in range(count):
        data = b"direct upload cost %d" % i
        crc, sha = crc32c.crc32c(data), hashlib.sha256(data).digest()
        spec = pb.UploadSpec(key=f"cost/{i}", size=len(data))
        if declared:
            spec.expected.sha256 = sha
        mark = cpu_seconds(pid)
        started = await stub.StartResumableUpload(
            pb.StartResumableUploadRequest(spec=spec, direct=True)
        )
        now = cpu_seconds(pid)
        spent["StartResumableUpload"] += now - mark
        mark = now
        part = pb.UploadPart(part_number=1, size=len(data), crc32c=crc)
        signed = await stub.PresignUploadParts(
            pb.PresignUploadPartsRequest(upload_id=started.upload_id, parts=[part])
        )
        spent["PresignUploadParts"] += cpu_seconds(pid) - mark
        url = signed.parts[0]
        await asyncio.to_thread(_put, url.url, dict(url.headers), data)
        mark = cpu_seconds(pid)
        await stub.CompleteDirectUpload(
            pb.CompleteDirectUploadRequest(
                upload_id=started.upload_id, size=len(data), crc32c=crc, sha256=sha
            )
        )
        spent["CompleteDirectUpload"] += cpu_seconds(pid) - mark
    result = {name: seconds * 1000 / count for name, seconds in spent.items()}
    result["session"] = sum(result.values())
    return result


async def _big_sessions(stub: Any, pid: int, count: int, parts: int) -> float:
    """ms of gateway CPU per commit of a ``parts``-part upload (the Client's
    calls; the PUTs and the start are not counted)."""
    data = bytes(range(256)) * (PART // 256)
    crc = crc32c.crc32c(data)
    whole, size = 0, parts * PART
    for _ in range(parts):
        whole = crc32c.crc32c(data, value=whole)
    spent = 0.0
    for i in range(count):
        spec = pb.UploadSpec(key=f"cost/big-{i}", size=size)
        started = await stub.StartResumableUpload(
            pb.StartResumableUploadRequest(spec=spec, direct=True)
        )
        specs = [pb.UploadPart(part_number=n, size=PART, crc32c=crc) for n in range(1, parts + 1)]
        signed = await stub.PresignUploadParts(
            pb.PresignUploadPartsRequest(upload_id=started.upload_id, parts=specs)
        )
        for url in signed.parts:
            await asyncio.to_thread(_put, url.url, dict(url.headers), data)
        await asyncio.sleep(0.2)  # the PUTs' tail
        sha = hashlib.sha256(data * parts).digest()
        mark = cpu_seconds(pid)
        await stub.CompleteDirectUpload(
            pb.CompleteDirectUploadRequest(
                upload_id=started.upload_id, size=size, crc32c=whole, sha256=sha
            )
        )
        spent += cpu_seconds(pid) - mark
    return spent * 1000 / count


async def _per_part(stub: Any, pid: int, parts: int) -> dict[str, float]:
    """ms of gateway CPU per part URL, one a call and in batches."""
    spec = pb.UploadSpec(key="cost/parts", size=parts * PART)
    started = await stub.StartResumableUpload(
        pb.StartResumableUploadRequest(spec=spec, direct=True)
    )
    result: dict[str, float] = {}
    mark = cpu_seconds(pid)
    for number in range(1, parts + 1):
        await stub.PresignUploadPart(
            pb.PresignUploadPartRequest(
                upload_id=started.upload_id, part_number=number, size=PART, crc32c=number
            )
        )
    result["PresignUploadPart, one a call"] = (cpu_seconds(pid) - mark) * 1000 / parts
    for batch in BATCHES:
        mark = cpu_seconds(pid)
        for first in range(1, parts + 1, batch):
            numbers = range(first, min(parts, first + batch - 1) + 1)
            specs = [pb.UploadPart(part_number=n, size=PART, crc32c=n) for n in numbers]
            await stub.PresignUploadParts(
                pb.PresignUploadPartsRequest(upload_id=started.upload_id, parts=specs)
            )
        result[f"PresignUploadParts, {batch} a call"] = (cpu_seconds(pid) - mark) * 1000 / parts
    await stub.CancelResumableUpload(pb.CancelResumableUploadRequest(upload_id=started.upload_id))
    return result


async def run(sessions: int, parts: int, big_sessions: int, big_parts: int) -> None:
    plan = plan_services(
        bucket="blobgate-bench",
        settings=["--part-size", str(PART), "--log-level", "WARNING", "--direct-transfers"],
        log_dir=None,
        log_prefix="blobgate-direct-cost-",
        metrics=True,
    )
    print(*plan.header, f"command: {command_line('bench.throughput.direct_upload_cost')}", sep="\n")
    async with services(plan) as running, gateway_channel(plan) as channel:
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        pid = running.gateway.pid
        await _sessions(stub, pid, 5, declared=False)  # warm up: connections, caches
        assert plan.metrics_url is not None
        before = _s3_requests(plan.metrics_url)
        fixed = await _sessions(stub, pid, sessions, declared=False)
        middle = _s3_requests(plan.metrics_url)
        declared = await _sessions(stub, pid, sessions, declared=True)
        after = _s3_requests(plan.metrics_url)
        per_part = await _per_part(stub, pid, parts)
        big_commit = await _big_sessions(stub, pid, big_sessions, big_parts)
    print()
    title = f"gateway CPU, {sessions} one-part sessions"
    print(*head(title, "ms a session", "sha256 in the spec", align="lrr"), sep="\n")
    for name, ms in fixed.items():
        print(row(name, f"{ms:.2f}", f"{declared[name]:.2f}"))
    print()
    print(*head("S3 requests a session", "count", "sha256 in the spec", align="lrr"), sep="\n")
    undeclared, known = middle - before, after - middle
    for operation in sorted(set(undeclared) | set(known)):
        if operation != "HeadBucket":  # the health probe's
            print(row(operation, f"{undeclared[operation] / sessions:.2f}",
                      f"{known[operation] / sessions:.2f}"))  # fmt: skip
    print()
    print(*head(f"gateway CPU, {parts} part URLs", "ms a part", align="lr"), sep="\n")
    for name, ms in per_part.items():
        print(row(name, f"{ms:.3f}"))
    commit_part = max(0.0, (big_commit - fixed["CompleteDirectUpload"]) / (big_parts - 1))
    print()
    print(f"commit of a {big_parts}-part upload: {big_commit:.2f} ms ({big_sessions} uploads), "
          f"so {commit_part:.3f} ms a part at the commit")  # fmt: skip
    base = fixed["session"] - fixed["PresignUploadParts"]
    call = fixed["PresignUploadParts"]  # a call for one part
    widest = BATCHES[-1]
    sign = max(
        0.0, (per_part[f"PresignUploadParts, {widest} a call"] * widest - call) / (widest - 1)
    )
    part = sign + commit_part
    print()
    print(
        f"model: {base:.1f} ms a session (start, commit of one part) + {call:.2f} ms a "
        f"PresignUploadParts call + {part:.3f} ms a further part ({sign:.3f} signing it, "
        f"{commit_part:.3f} at the commit); the Client's uploads (batches of {BATCHES[0]}, "
        "the sha256 declared at the commit), 8 MiB parts:"
    )
    print(*head("object", "gateway ms", "CPU-s/GiB", align="lrr"), sep="\n")
    for mib in (128, 1024, 10240):
        count = mib * MiB // DEFAULT_PART
        calls = -(-count // BATCHES[0])
        ms = base + calls * call + (count - calls) * sign + (count - 1) * commit_part
        print(row(f"{mib} MiB", f"{ms:.1f}", f"{ms / 1000 / (mib / 1024):.3f}"))


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("bench.throughput.direct_upload_cost", __doc__)
    parser.add_argument("--sessions", type=int, default=200, help="one-part sessions (default 200)")
    parser.add_argument("--parts", type=int, default=2000, help="part URLs signed (default 2000)")
    parser.add_argument(
        "--big-sessions", type=int, default=4, help="many-part uploads committed (default 4)"
    )
    parser.add_argument(
        "--big-parts", type=int, default=32, help="parts of each (default 32, of 5 MiB)"
    )
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.parts < 1 or args.big_sessions < 1 or args.big_parts < 2:
        parser.error("--sessions, --parts and --big-sessions take 1 or more, --big-parts 2 or more")
    asyncio.run(run(args.sessions, args.parts, args.big_sessions, args.big_parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
