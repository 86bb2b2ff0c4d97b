"""What the server's logging set-up lets through: the operator's level for
the gateway, never botocore's DEBUG records (they hold request signatures
and presigned URLs), and the embedded S3's request lines only at DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from blobgate.server.logs import configure_logging

LIBRARIES = ["botocore", "botocore.auth", "aiobotocore.endpoint", "urllib3.connectionpool"]


@pytest.fixture
def restored() -> Iterator[None]:
    names = ["", "werkzeug", "blobgate.audit", *LIBRARIES]
    saved = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("restored")
def test_debug_never_reaches_signing_libraries() -> None:
    configure_logging("DEBUG")
    assert logging.getLogger("blobgate.server").isEnabledFor(logging.DEBUG)
    for name in LIBRARIES:
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
        assert logging.getLogger(name).isEnabledFor(logging.INFO), name
    assert logging.getLogger("werkzeug").isEnabledFor(logging.INFO)


@pytest.mark.usefixtures("restored")
def test_the_embedded_s3_logs_only_warnings_by_default() -> None:
    configure_logging("INFO")
    assert not logging.getLogger("werkzeug").isEnabledFor(logging.INFO)
    assert logging.getLogger("werkzeug").isEnabledFor(logging.WARNING)
    assert logging.getLogger("blobgate.server").isEnabledFor(logging.INFO)


@pytest.mark.usefixtures("restored")
def test_the_audit_log_stays_on_above_info() -> None:
    configure_logging("WARNING")
    assert not logging.getLogger("blobgate.access").isEnabledFor(logging.INFO)
    assert logging.getLogger("blobgate.audit").isEnabledFor(logging.INFO)
