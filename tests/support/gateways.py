"""In-process test gateways: their settings and a stop that shows where a
hung one is stuck."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from blobgate.server.app import Gateway
from blobgate.server.core.settings import Settings
from tests.support.helpers import MiB


def gateway_settings(endpoint: str, bucket: str, **overrides: Any) -> Settings:
    """Settings for a test gateway on the S3 at ``endpoint``: port 0, this
    test's bucket, small parts."""
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "s3_endpoint": endpoint,
        "s3_region": "us-east-1",
        "default_bucket": bucket,
        "create_buckets": True,
        "part_size": 5 * MiB,
        "health_interval": 0.2,
        "shutdown_grace": 5.0,
        "drain_delay": 0.0,
    }
    values.update(overrides)
    return Settings(**values)


async def stop_gateway(gw: Gateway, grace: float = 1.0) -> None:
    """Stop a test gateway; if that hangs, show every task's stack and fail."""
    try:
        await asyncio.wait_for(gw.stop(grace=grace), grace + 20)
    except TimeoutError:
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stderr)
        raise
