"""What a training run shows on the terminal: a progress bar over its budget, and lines around it.

Under torchrun only rank 0 speaks; the other ranks hold a ``Console(enabled=False)``.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

BAR_UNITS = 1000  # the bar counts thousandths of the budget


class Console:
    def __init__(self, enabled: bool = True, bar: bool = True):
        self.enabled = enabled
        self.wants_bar = enabled and bar
        self._bar: tqdm | None = None

    def show_bar(self) -> None:
        """Put the progress bar up (once the set-up, with its own progress bars for large texts, is done)."""
        self._bar = tqdm(total=BAR_UNITS, disable=not self.wants_bar, dynamic_ncols=True, leave=True,
                         bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}", desc="training")

    def say(self, message: str) -> None:
        """A line on stderr that the progress bar steps around."""
        if self.enabled:
            tqdm.write(message, file=sys.stderr)

    def progress(self, share: float, status: str | None = None) -> None:
        """Move the bar to ``share`` of the budget (0 to 1), with a short status after it."""
        if self._bar is None:
            return
        self._bar.n = min(BAR_UNITS, int(BAR_UNITS * share))
        if status is not None:
            self._bar.set_postfix_str(status)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
