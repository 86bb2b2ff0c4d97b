"""LocalStack's S3 as a real HTTP server on loopback: a stricter S3 than moto
(it checks request checksums, the full-object CRC32C and size at
CompleteMultipartUpload, conditional writes and presigned signatures).

LocalStack needs Python 3.13 and its own virtual environment
(``make localstack``); ``LOCALSTACK_PYTHON`` names that interpreter. Where it
is missing the tests that need it are skipped with the reason, except under
CI (``CI`` set), where a missing LocalStack is an error (the
``localstack_endpoint`` fixture in tests/conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import ROOT

DEFAULT_PYTHON = ROOT / ".venv-localstack" / "bin" / "python"


def localstack_python() -> Path | None:
    """The interpreter LocalStack is installed in, or None."""
    path = Path(os.environ.get("LOCALSTACK_PYTHON", DEFAULT_PYTHON))
    return path if path.exists() else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.bind(("::1", 0))
        port: int = sock.getsockname()[1]
        return port


def _load_s3(endpoint: str, timeout: float) -> None:
    """Make the first S3 request, a ListBuckets: LocalStack loads its S3 on
    it (2 s on an idle machine, longer on a busy one), which would otherwise
    outlast the start-up probe of the first gateway. Only presigned URLs
    have their signature checked, so the header only names the service."""
    credential = "test/20260101/us-east-1/s3/aws4_request"
    request = urllib.request.Request(
        f"{endpoint}/",
        headers={
            "Authorization": f"AWS4-HMAC-SHA256 Credential={credential}, "
            "SignedHeaders=host, Signature=0"
        },
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        assert response.status == 200, response.status


@contextmanager
def running_localstack(python: Path, within: float = 60.0) -> Iterator[str]:
    """Start LocalStack's S3 on a free port of [::1]; yield its endpoint."""
    port = _free_port()
    endpoint = f"http://[::1]:{port}"
    with tempfile.TemporaryDirectory(prefix="localstack-") as volume:
        env = {
            **os.environ,
            "SERVICES": "s3",
            # An IPv6 address keeps Twisted on loopback (an IPv4 one binds 0.0.0.0).
            "GATEWAY_LISTEN": f"[::1]:{port}",
            # hypercorn hands LocalStack truncated bodies of dropped requests.
            "GATEWAY_SERVER": "twisted",
            "DNS_ADDRESS": "0",
            "S3_SKIP_SIGNATURE_VALIDATION": "0",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DISABLE_EVENTS": "1",
            "LOCALSTACK_VOLUME_DIR": volume,
        }
        log = Path(volume) / "localstack.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(python), "-m", "localstack.runtime.main"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            deadline = time.monotonic() + within
            while True:
                try:
                    with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=1):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"LocalStack did not start: {log.read_text(errors='replace')[-2000:]}"
                        ) from None
                    time.sleep(0.1)
            _load_s3(endpoint, timeout=max(deadline - time.monotonic(), 10.0))
            yield endpoint
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
