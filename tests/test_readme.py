"""The README documents every setting, under its flag and its variable."""

from __future__ import annotations

from pathlib import Path

from server.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


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
