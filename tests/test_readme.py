"""The README documents every setting, under its flag and its variable, and
backs every guarantee with a test that exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from blobgate.server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_every_setting_is_in_the_configuration_table() -> None:
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        # Consul's standard variables keep their own names (the field's alias).
        aliases = getattr(field.validation_alias, "choices", [])
        variable = aliases[-1] if aliases else "BLOBGATE_" + name.upper()
        assert any(f"| `{name}` | `{flag}` / `{variable}` |" in row for row in rows), (
            f"README's configuration table lacks {name}"
        )


def test_every_guarantee_names_tests_that_exist() -> None:
    text = README.read_text()
    section = text.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "::" in line]
    assert len(rows) >= 15
    for row in rows:
        named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", row)
        assert named, f"a guarantee without a test: {row[:60]}"
        for path, test in named:
            tree = ast.parse((ROOT / path).read_text())
            defined = {
                node.name
                for node in tree.body
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            assert test in defined, f"README names {path}::{test}, which does not exist"
