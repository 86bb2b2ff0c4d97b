"""The transfer progress bar the ``blobgate`` command shows on a terminal."""

from __future__ import annotations

from types import TracebackType
from typing import Never, Self, TextIO

from tqdm import tqdm


class ProgressBar:
    """A ``Progress`` callback that draws a byte-count bar (with a percentage
    once the total is known) on ``stream``. The bar appears on the first call;
    ``close`` leaves it on screen after a success, erases it after a failure."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self._label = label
        self._stream = stream
        self._bar: tqdm[Never] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        bar = self._bar
        if bar is None:
            bar = tqdm(
                total=total,
                desc=self._label,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=self._stream,
                dynamic_ncols=True,
            )
            self._bar = bar
        bar.update(done - bar.n)

    def close(self, *, keep: bool = True) -> None:
        """Finish the bar (erase it unless ``keep``); safe to call more than once."""
        bar, self._bar = self._bar, None
        if bar is not None:
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
