"""Markdown table lines, as the benchmarks print their results."""

from __future__ import annotations


def row(*cells: object) -> str:
    """``| a | b |``. A cell that is None prints as one space; "" prints as two."""
    return "|" + "|".join(" " if cell is None else f" {cell} " for cell in cells) + "|"


def head(*columns: str, align: str) -> list[str]:
    """The header row and the rule under it; ``align`` has a letter a column,
    l (left) or r (right)."""
    if len(align) != len(columns):
        raise ValueError(f"{len(columns)} columns, {len(align)} alignments")
    return [row(*columns), "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
