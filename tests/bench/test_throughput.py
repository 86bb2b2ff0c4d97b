"""The throughput benchmark (python -m bench.throughput), tiny: one rep of
8 MiB transfers and 32 small ops of each kind, through two gateway processes
(asyncio's loop and uvloop) on a real moto server process. Every byte is
checked by the benchmark itself; here, that it ran clean and printed every
table, with the S3 requests it counted. And the client-only download
benchmark (python -m bench.client_download) and the direct uploads' cost
model (python -m bench.throughput.direct_upload_cost), tiny."""

from __future__ import annotations

import re

import pytest

from bench import client_download
from bench.throughput import direct_upload_cost
from bench.throughput.main import main


def test_tiny_throughput_run_prints_every_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--reps", "1", "--size-mib", "8", "--small-mib", "5", "--small-ops", "32",
            "--concurrency", "4", "--compare-loops"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    # What went wrong without stopping the run: multipart uploads left behind,
    # a reply or a message that differs from what was sent, errors in a
    # gateway's log. (A warning there, say S3 not answering yet at start-up, is
    # not a failure of the run.)
    notes = [line for line in out.splitlines() if line.startswith("NOTE:")]
    failures = [n for n in notes if "log has" not in n or re.search(r"ERROR|CRITICAL|Traceback", n)]
    assert not failures, failures
    for loop in ("asyncio", "uvloop"):
        for path in ("upload gateway", "upload gateway, no sha256",
                     "upload Client, direct to S3", "download gateway",
                     "download gateway, Client", "download gateway, parsed",
                     "download Client, direct from S3"):  # fmt: skip
            assert re.search(rf"^\| {re.escape(path)} \[{loop}\] \| \d+ \| [\d.]+ \|", out, re.M), (
                path,
                loop,
            )
        for kind in ("upload", "stat", "download"):
            assert re.search(rf"^\| {kind} gateway \[{loop}\] \| \d+ \| [\d.]+ \|", out, re.M)
    # The direct client's S3 calls, counted from botocore's events: one each.
    for kind, operation in (
        ("upload", "PutObject"),
        ("stat", "HeadObject"),
        ("download", "GetObject"),
    ):
        assert re.search(rf"^\| {kind} direct \| .*\| 1\.00 \({operation} 1\.00\) \|", out, re.M)
    # The gateways' counts came from their /metrics (not '-').
    counted = r"\| \d\.\d\d \(HeadObject [\d.]+\) \|"
    assert re.search(rf"^\| stat gateway \[uvloop\] \| .*{counted}", out, re.M)
    assert "| gateway path | MB/s uvloop / asyncio |" in out


def test_small_objects_alone(capsys: pytest.CaptureFixture[str]) -> None:
    """--size-mib 0: the small objects only, one at a time, with each op's
    p50 over direct S3's and the gateway's CPU over the direct client's."""
    assert main(["--reps", "1", "--size-mib", "0", "--small-ops", "8", "--concurrency", "1"]) == 0
    out = capsys.readouterr().out
    assert "MiB, medians of" not in out  # no big transfers
    for kind in ("upload", "stat", "download"):
        # ops/s, / direct, p50, p50 added, p99, S3 requests, 3 CPUs, CPU over direct's
        cells = r"\| \d+ \| [\d.]+ \| [\d.]+ \| -?[\d.]+ \| [\d.]+ \| .* \| [\d.]+ \|$"
        assert re.search(rf"^\| {kind} gateway {cells}", out, re.M), kind
        target = rf"^\| small {kind} gateway: p50 ms added to direct's \| -?[\d.]+ \|"
        assert re.search(target, out, re.M), kind


def test_tiny_client_download_run_prints_each_way(capsys: pytest.CaptureFixture[str]) -> None:
    assert client_download.main(["--size-mib", "4", "--reps", "1"]) == 0
    out = capsys.readouterr().out
    ways = (
        "client's stub (views)",
        "generated stub (protobuf objects)",
        "Client.open_download().views() (+ CRC32C)",
        "Client.open_download().views() (+ sha256)",
        "Client.download() (bytes, + CRC32C)",
    )
    for way in ways:
        assert re.search(rf"^\| {re.escape(way)} \| [\d.]+ \| \d+ \| [\d.]+ \|$", out, re.M), way


def test_tiny_direct_upload_cost_run_prints_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--sessions", "3", "--parts", "8", "--big-sessions", "1", "--big-parts", "2"]
    assert direct_upload_cost.main(argv) == 0
    out = capsys.readouterr().out
    # The S3 requests of a session, without and with the sha256 in the spec.
    for operation, plain, declared in (
        ("CreateMultipartUpload", 1, 1),
        ("ListParts", 1, 1),
        ("CompleteMultipartUpload", 1, 1),
        ("HeadObject", 1, 0),
        ("PutObject", 2, 1),
        ("DeleteObject", 1, 1),
    ):
        assert f"| {operation} | {plain}.00 | {declared}.00 |" in out, operation
    for calls in ("PresignUploadPart, one a call", "PresignUploadParts, 64 a call"):
        assert re.search(rf"^\| {calls} \| \d+\.\d+ \|$", out, re.M), calls
    assert re.search(r"^model: [\d.]+ ms a session", out, re.M)
    for size in ("128 MiB", "1024 MiB", "10240 MiB"):
        assert re.search(rf"^\| {size} \| [\d.]+ \| [\d.]+ \|$", out, re.M), size
