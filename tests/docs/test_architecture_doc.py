"""docs/architecture.md stays true to the code: the methods it lists for the
store protocols are exactly theirs, and every file or folder of the three
portions that a page names exists."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from blobgate.server.storage import protocols

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
ARCHITECTURE = ROOT / "docs" / "architecture.md"
PAGES = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def listed_methods(protocol: str) -> set[str]:
    """The names the page lists after ``- `Protocol`:``, up to the next item."""
    text = ARCHITECTURE.read_text()
    match = re.search(rf"^\s*- `{protocol}`:(.*?)(?=^\s*- |\Z)", text, re.M | re.S)
    assert match, f"docs/architecture.md lists no methods for {protocol}"
    without_notes = re.sub(r"\([^)]*\)", "", match.group(1))
    return set(re.findall(r"`(\w+)`", without_notes))


@pytest.mark.parametrize("name", ["ObjectStore", "SessionStore"])
def test_the_listed_methods_are_the_protocols(name: str) -> None:
    protocol = getattr(protocols, name)
    methods = {
        member
        for member, value in vars(protocol).items()
        if not member.startswith("_") and inspect.isfunction(value)
    }
    listed = listed_methods(name)
    assert listed - methods == set(), f"listed for {name} but not on it: {listed - methods}"
    assert methods - listed == set(), f"{name}'s methods missing from the page: {methods - listed}"


def test_named_paths_of_the_portions_exist() -> None:
    """A page that names `server/...`, `client/...` or `protos/...` names a
    file or folder that is there (a glob such as `*.py` names its folder)."""
    missing = []
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for path in re.findall(r"`((?:protos|server|client)/[^`\s]*)`", line):
                if not (ROOT / path.split("*")[0]).exists():
                    missing.append(f"{page.relative_to(ROOT)}:{number}: {path}")
    assert not missing, "paths that do not exist:\n" + "\n".join(missing)
