"""Benchmarks for blobgate; run ``python -m bench.throughput``."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository
MiB = 1024 * 1024

# The generated code lives under protos/; let the benchmarks import it even
# before the project is pip-installed (the editable install puts it on the path).
_PROTOS = str(ROOT / "protos")
if _PROTOS not in sys.path:
    sys.path.append(_PROTOS)
