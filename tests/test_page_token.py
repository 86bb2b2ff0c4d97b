"""List page tokens are bound to the listing they came from."""

from __future__ import annotations

import pytest

from blobgate.server.errors import InvalidArgument
from blobgate.server.rpc import page_token


def test_round_trip() -> None:
    token = page_token.encode("bkt", "a/", "/", "s3-continuation")
    assert token and "=" not in token
    assert page_token.decode(token, "bkt", "a/", "/") == "s3-continuation"


def test_last_page_and_first_page_are_empty() -> None:
    assert page_token.encode("bkt", "", "", "") == ""
    assert page_token.decode("", "bkt", "", "") == ""


@pytest.mark.parametrize("change", [("other", "a/", "/"), ("bkt", "b/", "/"), ("bkt", "a/", "")])
def test_foreign_token_is_refused(change: tuple[str, str, str]) -> None:
    token = page_token.encode("bkt", "a/", "/", "s3")
    with pytest.raises(InvalidArgument, match="another listing"):
        page_token.decode(token, *change)


@pytest.mark.parametrize("forged", ["!!!", "bm90IGpzb24", "e30", "eyJ2IjoyfQ", "W10"])
def test_forged_token_is_refused(forged: str) -> None:
    with pytest.raises(InvalidArgument, match="page_token"):
        page_token.decode(forged, "bkt", "", "")
