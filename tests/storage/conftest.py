"""The storage contract suites' ``stores``: each store kind in turn."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.contract_stores import Stores, open_stores


@pytest.fixture
async def stores(
    request: pytest.FixtureRequest, store_kind: str, bucket: str
) -> AsyncIterator[Stores]:
    """The stores of the test's run (each store kind in turn, for the contract
    suites, marked both_s3s(memory=True))."""
    async with open_stores(request, store_kind, bucket) as opened:
        yield opened
