"""glibc malloc settings for a process that streams large buffers.

Measured with bench/throughput/ (256 MiB uploads): glibc's default dynamic
mmap threshold rises to the largest buffer freed (8 MiB parts), after which
part buffers come from the heap and their memory is kept; and gRPC's threads
each get arenas that fragment. A fixed 2 MiB threshold (1 MiB messages stay on
the fast heap path, parts are mmapped and returned on free), two arenas and a
16 MiB trim threshold took the gateway's peak RSS during a 256 MiB upload from
~181 MiB to ~150 MiB at the same throughput.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Mapping

log = logging.getLogger(__name__)

# mallopt() parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

MiB = 1024 * 1024
TUNING = {M_ARENA_MAX: 2, M_MMAP_THRESHOLD: 2 * MiB, M_TRIM_THRESHOLD: 16 * MiB}


def tune_malloc(environ: Mapping[str, str]) -> bool:
    """Apply TUNING unless the operator set MALLOC_* variables (theirs win).
    Returns whether it was applied; a no-op where libc has no mallopt."""
    if any(name.startswith("MALLOC_") for name in environ):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    applied = all(mallopt(param, value) == 1 for param, value in TUNING.items())
    if not applied:
        log.debug("mallopt refused a setting; keeping the allocator's defaults")
    return applied
