"""Ctrl-C and SIGTERM as requests to stop at the next safe point, not as exceptions at any line."""

from __future__ import annotations

import signal
import sys
import time
from typing import Any


class StopRequest:
    """Within the block, the first SIGINT or SIGTERM sets ``requested`` (the signal's name) for the
    loop to act on where it is safe to (after a training step; between two rounds of the sweep
    scheduler, never inside a call to its database); ``announce`` says on stderr what will happen.
    A second Ctrl-C aborts at once."""

    def __init__(self, announce: str | None = None):
        self.announce = announce
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        if self.announce:
            print(f"\n{self.requested}: {self.announce} (Ctrl-C again to abort)", file=sys.stderr)

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when a stop is requested meanwhile (checked every 50 ms)."""
        end = time.monotonic() + seconds
        while not self.requested and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
