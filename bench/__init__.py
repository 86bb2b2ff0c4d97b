"""Benchmarks for blobgate: ``python -m bench.throughput`` and ``python -m
bench.soak`` (bench/README.md). bench.common holds what both use (the S3 and
gateway subprocesses, process usage, the run header, the command line,
tables); bench.client_download measures the client alone."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository
MiB = 1024 * 1024

# The code lives in three portions of the blobgate namespace package
# (protos/: blobgate.v1 and blobgate.shared, server/, client/); let the
# benchmarks import it even before the project is pip-installed (the editable
# install finds it without this). Appended, so an installed blobgate wins.
for _portion in ("protos", "server", "client"):
    _path = str(ROOT / _portion)
    if _path not in sys.path:
        sys.path.append(_path)
