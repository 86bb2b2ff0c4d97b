"""The transfer progress bar the ``blobgate`` command shows on a terminal."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Never, Self, TextIO

from tqdm import tqdm

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
_KNOWN_TOTAL = "{l_bar}{bar}| {n_bin}/{total_bin} [{elapsed}<{remaining}, {rate_bin}]"
_UNKNOWN_TOTAL = "{desc}: {n_bin} [{elapsed}, {rate_bin}]"


def binary_size(size: float) -> str:
    """``size`` bytes in binary units, as a bar shows them: 512B, 3.00MiB."""
    if size < 1024:
        return f"{size:.0f}B"
    value = size / 1024
    for unit in _UNITS[:-1]:
        if value < 1024:
            return f"{value:.2f}{unit}"
        value /= 1024
    return f"{value:.2f}{_UNITS[-1]}"


class _BinaryBar(tqdm):  # type: ignore[type-arg]
    """A tqdm bar that counts bytes in binary units (MiB, as the summary
    lines do); tqdm's own scaling would write MB for MiB."""

    @staticmethod
    def format_meter(  # type: ignore[override]
        n: float, total: float | None, elapsed: float, **kwargs: Any
    ) -> str:
        rate = kwargs.get("rate") or (n / elapsed if elapsed else None)
        fields: dict[str, Any] = {
            **kwargs,
            "n_bin": binary_size(n),
            "total_bin": binary_size(total) if total is not None else "?",
            "rate_bin": f"{binary_size(rate)}/s" if rate else "?B/s",
        }
        meter: Any = tqdm.format_meter  # typed without the bar_format fields it takes
        return str(meter(n, total, elapsed, **fields))


class ProgressBar:
    """A ``Progress`` callback that draws a byte-count bar (with a percentage
    once the total is known) on ``stream``. The bar appears on the first call;
    ``close`` leaves it on screen after a success, erases it after a failure.
    With ``finishing`` (e.g. "committing"), the label says so once every
    byte of a known total moved, while the transfer waits for its end (an
    upload for the server to commit the object)."""

    def __init__(self, label: str, stream: TextIO, *, finishing: str | None = None) -> None:
        self._label = label
        self._stream = stream
        self._finishing = finishing
        self._bar: tqdm[Never] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        bar = self._bar
        if bar is None:
            bar = _BinaryBar(
                total=total,
                desc=self._label,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                bar_format=_KNOWN_TOTAL if total is not None else _UNKNOWN_TOTAL,
                file=self._stream,
                dynamic_ncols=True,
            )
            self._bar = bar
        bar.update(done - bar.n)
        if self._finishing and total is not None and done >= total:
            bar.set_description_str(f"{self._label} ({self._finishing})")

    def close(self, *, keep: bool = True) -> None:
        """Finish the bar (erase it unless ``keep``); safe to call more than once."""
        bar, self._bar = self._bar, None
        if bar is not None:
            if keep:  # the line left on screen: the plain label again
                bar.set_description_str(self._label, refresh=False)
            bar.leave = keep
            bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(keep=exc_type is None)
