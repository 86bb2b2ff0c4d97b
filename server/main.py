"""``blobgate-server``: parse the settings, set up logging, run the gateway."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from blobgate.server.app import StartupError, serve
from blobgate.server.embedded import DEV_CREDENTIALS, EmbeddedS3, EmbeddedS3Error, dev_settings
from blobgate.server.logs import configure_logging
from blobgate.server.malloc import tune_malloc
from blobgate.server.settings_loading import SettingsError, load_settings
from blobgate.server.tracing import TracingError, start_tracing, stop_tracing

log = logging.getLogger("blobgate")


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
        if args.dev:
            embedded = EmbeddedS3()
            settings = dev_settings(settings, embedded.start())
            credentials = DEV_CREDENTIALS
            log.warning(
                "--dev: serving an in-memory S3 at %s; its data is lost on exit",
                embedded.endpoint,
            )
        return asyncio.run(serve(settings, credentials=credentials))
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
