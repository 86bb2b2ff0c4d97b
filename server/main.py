"""``blobgate-server``: parse the settings, set up logging, pick the event
loop, run the gateway."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from blobgate.server.app import StartupError, serve
from blobgate.server.embedded import DEV_CREDENTIALS, EmbeddedS3, EmbeddedS3Error, dev_settings
from blobgate.server.logs import configure_logging
from blobgate.server.malloc import tune_malloc
from blobgate.server.settings import EventLoop
from blobgate.server.settings_loading import SettingsError, load_settings
from blobgate.server.tracing import TracingError, start_tracing, stop_tracing

log = logging.getLogger("blobgate")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def event_loop(choice: EventLoop) -> tuple[LoopFactory | None, str]:
    """The loop factory for ``asyncio.Runner`` (None: asyncio's own loop) the
    ``event_loop`` setting asks for, and its name for the log. ``auto``
    takes uvloop when it is installed (libuv's loop; ``python -m
    bench.throughput --compare-loops`` measures the two side by side).
    Raises StartupError when ``uvloop`` is asked for and cannot be imported."""
    if choice == "asyncio":
        return None, "asyncio"
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        if choice == "uvloop":
            raise StartupError(
                f"event_loop is uvloop, but uvloop cannot be imported ({exc}); "
                "install it (pip install uvloop) or set event_loop to auto or asyncio"
            ) from None
        return None, "asyncio (uvloop is not installed)"
    factory: LoopFactory = uvloop.new_event_loop
    return factory, f"uvloop {uvloop.__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    tune_malloc(os.environ)  # before gRPC starts its threads
    try:
        settings, args = load_settings(argv)
    except SettingsError as exc:
        print(f"blobgate-server: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        start_tracing()  # if the OTEL_* variables ask for traces
    except TracingError as exc:
        print(f"blobgate-server: {exc}", file=sys.stderr)
        return 2
    embedded: EmbeddedS3 | None = None
    credentials: Mapping[str, str] | None = None
    try:
        loop_factory, loop_name = event_loop(settings.event_loop)
        if args.dev:
            embedded = EmbeddedS3()
            settings = dev_settings(settings, embedded.start())
            credentials = DEV_CREDENTIALS
            log.warning(
                "--dev: serving an in-memory S3 at %s; its data is lost on exit",
                embedded.endpoint,
            )
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(serve(settings, credentials=credentials, loop_name=loop_name))
    except (EmbeddedS3Error, StartupError) as exc:
        print(f"blobgate-server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if embedded is not None:
            embedded.stop()
        stop_tracing()  # flush the spans still buffered


if __name__ == "__main__":
    sys.exit(main())
