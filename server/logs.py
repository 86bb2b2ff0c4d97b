"""Logging set-up for the server process: the operator's level for the
gateway, and never the libraries' DEBUG output that holds secrets or noise."""

from __future__ import annotations

import logging

# botocore's DEBUG records carry request signatures, canonical requests and
# presigned URLs; urllib3/aiohttp's the request lines. They never follow
# log_level below INFO.
_SECRET_BEARING = ("botocore", "aiobotocore", "boto3", "s3transfer", "urllib3")
# The embedded S3 (moto, served by werkzeug) logs every request it answers,
# the health probe's twice every interval: only its warnings, unless DEBUG.
_NOISY = ("werkzeug",)


def configure_logging(level: str) -> None:
    """Set up the root logger at ``level`` (a name such as "INFO")."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    numeric = logging.getLevelName(level)
    for name in _SECRET_BEARING:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
    for name in _NOISY:
        logging.getLogger(name).setLevel(
            logging.NOTSET if numeric <= logging.DEBUG else logging.WARNING
        )
