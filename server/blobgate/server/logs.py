"""Logging set-up for the server process: the operator's level and format
for the gateway, and never the libraries' DEBUG output that holds secrets or
noise.

Two formats: ``text`` (a line of time, level, logger and message, then any
structured fields as ``name=value``) and ``json`` (one JSON object a line:
``time``, ``level``, ``logger``, ``message``, the structured fields, and
``exception`` when there is a traceback). Structured fields are what a call
passes as ``extra=`` (the access log's request id, method, status, ...)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, TextIO

from blobgate.server.core.settings import LogFormat
from blobgate.server.rpc.audit import AUDIT_LOGGER

# botocore's DEBUG records carry request signatures, canonical requests and
# presigned URLs; urllib3/aiohttp's the request lines. They never follow
# log_level below INFO.
_SECRET_BEARING = ("botocore", "aiobotocore", "boto3", "s3transfer", "urllib3")
# The embedded S3 (moto, served by werkzeug) logs every request it answers,
# the health probe's twice every interval: only its warnings, unless DEBUG.
_NOISY = ("werkzeug",)

# What every LogRecord holds; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record was logged with (``extra=``)."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k[0] != "_"}


def _text_value(value: Any) -> str:
    # Strings are quoted with JSON's escapes, so a key with a newline or a
    # quote cannot forge a line or a field.
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class TextFormatter(logging.Formatter):
    """``time level logger: message`` followed by ``name=value`` per field."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = extra_fields(record)
        if not fields:
            return line
        head, sep, tail = line.partition("\n")  # the traceback, if any, stays last
        pairs = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        return f"{head} {pairs}{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message,
    the record's structured fields, and ``exception`` (the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in extra_fields(record).items():
            entry.setdefault(name, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter for ``log_format``."""
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(
    level: str, log_format: LogFormat = "text", stream: TextIO | None = None
) -> None:
    """Set up the root logger at ``level`` (a name such as "INFO"), its
    lines in ``log_format``, written to ``stream`` (default: stderr)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(handlers=[handler])
    logging.getLogger().setLevel(level)
    numeric = logging.getLevelName(level)
    for name in _SECRET_BEARING:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
    # The audit trail is kept whatever the level (docs/operations.md, Logs).
    logging.getLogger(AUDIT_LOGGER).setLevel(logging.INFO)
    for name in _NOISY:
        logging.getLogger(name).setLevel(
            logging.NOTSET if numeric <= logging.DEBUG else logging.WARNING
        )
