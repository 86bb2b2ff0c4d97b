"""The Python client's own cost of a download, without S3 or the gateway.

A bare grpc.aio server in a subprocess serves one --size-mib object from
memory (the Object message, with its sha256 and CRC32C, then pre-encoded
1 MiB data messages, as the gateway sends them); this process downloads it
--reps times in each of five ways, interleaved, and reports this process's
CPU-seconds per GiB (getrusage), MB/s, and the CPU over the client's stub's:

- the client's stub (``blobgate.client.wire.StorageStub``): data messages as
  views of the received bytes, no protobuf objects;
- the generated ``StorageServiceStub``: a protobuf object per message, its
  ``data`` read once;
- ``Client.open_download(...).views()``: the client's stub plus the
  DownloadStream's bookkeeping and its check of the whole object, by
  CRC32C (what ``download_to`` does), and by sha256 (``verify_sha256``);
- iterating ``Client.download(...)``: the CRC32C way, each chunk copied to
  ``bytes``.

    .venv/bin/python -m bench.client_download [--size-mib 256] [--reps 5]
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from bench import MiB
from bench.common.command_line import bench_parser, command_line
from bench.common.markdown_table import head, row
from bench.common.run_header import machine
from blobgate.client import Client
from blobgate.client.wire import MAX_MESSAGE_SIZE, StorageStub, download_payload
from blobgate.v1 import storage_pb2 as pb
from blobgate.v1 import storage_pb2_grpc

GiB = 1024 * MiB
SERVER = r"""
import asyncio, hashlib, sys
import crc32c, grpc
from blobgate.server.rpc.codecs import encoded_data_message
from blobgate.v1 import storage_pb2 as pb

MiB, size = 1024 * 1024, int(sys.argv[1])
chunk = bytes(range(256)) * (MiB // 256)
info = pb.Object(bucket="bench", key="object", size=size, etag="e")
info.checksums.sha256 = hashlib.sha256(chunk * (size // MiB)).digest()
info.checksums.crc32c = crc32c.crc32c(chunk * (size // MiB))
first = pb.DownloadResponse(object=info).SerializeToString()
data = encoded_data_message([chunk])

async def download(request, context):
    yield first
    for _ in range(size // MiB):
        yield data

async def main():
    server = grpc.aio.server(options=[("grpc.max_send_message_length", 8 * MiB)])
    handler = grpc.unary_stream_rpc_method_handler(
        download, pb.DownloadRequest.FromString, lambda raw: raw)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "blobgate.v1.StorageService", {"Download": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(address: str, size: int, reps: int) -> dict[str, list[tuple[float, float]]]:
    """(CPU-s/GiB, MB/s) of each way, per rep, from the server at ``address``."""
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_SIZE)]
    async with (
        grpc.aio.insecure_channel(address, options=options) as channel,
        Client(address) as client,
        Client(address, verify_sha256=True) as sha256_client,
    ):
        raw, generated = StorageStub(channel), storage_pb2_grpc.StorageServiceStub(channel)

        async def stub(which: Any) -> int:
            received = 0
            request = pb.DownloadRequest(key="object")
            async for message in which.Download(request):
                data = download_payload(message)
                received += 0 if data is None else len(data)
            return received

        async def views(which: Client) -> int:
            async with await which.open_download("object") as stream:
                return sum([len(view) async for view in stream.views()])

        async def chunks() -> int:
            return sum([len(chunk) async for chunk in client.download("object")])

        ways: dict[str, Callable[[], Awaitable[int]]] = {
            "client's stub (views)": lambda: stub(raw),
            "generated stub (protobuf objects)": lambda: stub(generated),
            "Client.open_download().views() (+ CRC32C)": lambda: views(client),
            "Client.open_download().views() (+ sha256)": lambda: views(sha256_client),
            "Client.download() (bytes, + CRC32C)": chunks,
        }
        await stub(raw)  # warm-up
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        for _ in range(reps):
            for name, way in ways.items():
                cpu, start = cpu_seconds(), time.perf_counter()
                received = await way()
                elapsed, spent = time.perf_counter() - start, cpu_seconds() - cpu
                if received != size:
                    raise RuntimeError(f"{name}: received {received} of {size} bytes")
                results[name].append((spent / (size / GiB), size / elapsed / 1e6))
        return results


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("bench.client_download", __doc__)
    parser.add_argument("--size-mib", type=int, default=256, help="object size")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.reps < 1:
        parser.error("--size-mib and --reps must be >= 1")
    print(machine())
    print("command:", command_line("bench.client_download"))
    size = args.size_mib * MiB
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(size)], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        address = f"127.0.0.1:{int(server.stdout.readline())}"
        results = asyncio.run(measure(address, size, args.reps))
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
    print()
    title = f"{args.size_mib} MiB from memory, medians of {args.reps}"
    columns = ("client CPU-s/GiB", "MB/s", "CPU / the stub's")
    print(*head(title, *columns, align="lrrr"), sep="\n")
    stub = results["client's stub (views)"]
    for name, values in results.items():
        cpu = statistics.median(v[0] for v in values)
        ratio = statistics.median(v[0] / s[0] for v, s in zip(values, stub, strict=True) if s[0])
        print(row(name, f"{cpu:.2f}", f"{statistics.median(v[1] for v in values):.0f}",
                  f"{ratio:.2f}"))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
