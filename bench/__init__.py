"""Benchmarks for blobgate; run ``python -m bench.throughput``."""

import sys
from pathlib import Path

# The generated code lives under protos/; let the benchmarks import it even
# before the project is pip-installed (the editable install puts it on the path).
_PROTOS = str(Path(__file__).resolve().parent.parent / "protos")
if _PROTOS not in sys.path:
    sys.path.append(_PROTOS)
