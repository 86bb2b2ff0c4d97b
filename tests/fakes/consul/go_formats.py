"""Go's text formats the agent reads and writes: time.Duration strings and
strconv.ParseBool."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

SECOND_NS = 1_000_000_000
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC greek mu
    "ms": 1_000_000,
    "s": SECOND_NS,
    "m": 60 * SECOND_NS,
    "h": 3600 * SECOND_NS,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration_ns(value: object) -> int:
    """Nanoseconds from a Go duration ("10s", "1m30s", "0.3s", "500ms"); a JSON
    number is taken as nanoseconds, as Go's time.Duration decodes it."""
    if isinstance(value, bool):
        raise ValueError(f"time: invalid duration {value!r}")
    if isinstance(value, int | float):
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"time: invalid duration {value!r}")
    text = value.strip()
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    if text == "0":
        return 0
    if not text:
        raise ValueError(f'time: invalid duration "{value}"')
    total = Decimal(0)
    pos = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        try:
            total += Decimal(match.group(1)) * _UNIT_NS[match.group(2)]
        except InvalidOperation as exc:
            raise ValueError(f'time: invalid duration "{value}"') from exc
        pos = match.end()
    if pos != len(text):
        raise ValueError(f'time: invalid duration "{value}"')
    return sign * int(total)


def parse_duration(value: object) -> float:
    """Seconds from a Go duration string (see parse_duration_ns)."""
    return parse_duration_ns(value) / SECOND_NS


def format_duration(ns: int) -> str:
    """A duration as Go's time.Duration.String() writes it ("1m0s", "300ms")."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)

    def frac(value: int, size: int) -> str:
        whole, rest = divmod(value, size)
        if not rest:
            return str(whole)
        digits = str(rest).rjust(len(str(size)) - 1, "0").rstrip("0")
        return f"{whole}.{digits}"

    if ns < SECOND_NS:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000)):
            if ns >= size:
                return f"{sign}{frac(ns, size)}{unit}"
        return f"{sign}{ns}ns"
    hours, rest = divmod(ns, 3600 * SECOND_NS)
    minutes, rest = divmod(rest, 60 * SECOND_NS)
    seconds = frac(rest, SECOND_NS) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return f"{sign}{seconds}"


def parse_bool(raw: str) -> bool:
    """Go's strconv.ParseBool."""
    if raw in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if raw in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError(raw)
