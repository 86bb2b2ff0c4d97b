"""What the tests share besides fixtures (those are in the conftest.py files):
helpers for calls, streams and S3 checks, test gateways, subprocess servers,
LocalStack, the storage contract suites' stores and another network host.
Tests import it by name, ``from tests.support.helpers import ...``."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root folder."""
