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
from blobgate.server.core.settings import EventLoop, LogFormat, Settings
from blobgate.server.core.tracing import TracingError, start_tracing, stop_tracing
from blobgate.server.embedded import DEV_CREDENTIALS, EmbeddedS3, EmbeddedS3Error, dev_settings
from blobgate.server.logs import configure_logging
from blobgate.server.malloc import tune_malloc
from blobgate.server.native_stderr import StderrCapture
from blobgate.server.settings_loading import SettingsError, load_settings

log = logging.getLogger("blobgate")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

# Exit codes (docs/operations.md, Exit codes). 2: the settings (flags,
# variables, the config file, OTEL_*) do not parse or validate, and nothing
# was started; 1: valid settings, but the gateway refused or failed to start
# with them (or stopped on an unexpected error); 130: interrupted before serving.
EXIT_STARTUP = 1
EXIT_SETTINGS = 2
EXIT_INTERRUPTED = 130


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


def _refuse(message: str, code: int, log_format: LogFormat) -> int:
    """Report why the server cannot start, in one line, in the log format;
    ``code`` is returned for the exit."""
    if log_format == "json":
        log.critical("%s", message, extra={"exit_code": code})
    else:
        print(f"blobgate-server: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server; the exit code (docs/operations.md, Exit codes)."""
    tune_malloc(os.environ)  # before gRPC starts its threads
    try:
        settings, args = load_settings(argv)
    except SettingsError as exc:
        # Before the log format is known: a plain line.
        print(f"blobgate-server: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    # In JSON, gRPC's own lines on stderr are captured and logged as JSON too.
    capture = StderrCapture() if settings.log_format == "json" else None
    configure_logging(
        settings.log_level, settings.log_format, None if capture is None else capture.stream
    )
    if capture is not None and not capture.start():
        log.warning("no SOCK_SEQPACKET here: gRPC's own lines on stderr are not JSON")
    try:
        return _run(settings, args.dev)
    finally:
        if capture is not None:
            capture.stop()


def _run(settings: Settings, dev: bool) -> int:
    try:
        start_tracing()  # if the OTEL_* variables ask for traces
    except TracingError as exc:
        return _refuse(str(exc), EXIT_SETTINGS, settings.log_format)
    embedded: EmbeddedS3 | None = None
    credentials: Mapping[str, str] | None = None
    try:
        loop_factory, loop_name = event_loop(settings.event_loop)
        if dev:
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
        return _refuse(str(exc), EXIT_STARTUP, settings.log_format)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:
        log.critical("stopped by an unexpected error", exc_info=True)
        return EXIT_STARTUP
    finally:
        if embedded is not None:
            embedded.stop()
        stop_tracing()  # flush the spans still buffered


if __name__ == "__main__":
    sys.exit(main())
