"""A one-line progress display on a terminal; silent when stderr is not one."""
from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """done / failed / running, elapsed, and an ETA from the mean completion rate so far."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self._width = 0

    def line(self, done: int, failed: int, running: int) -> str:
        elapsed = time.monotonic() - self.started
        finished = done + failed
        eta = "--:--:--" if finished == 0 else _clock(elapsed / finished * (self.total - finished))
        return (f"clowdr: {finished}/{self.total} finished ({done} ok, {failed} failed), {running} running"
                f" | elapsed {_clock(elapsed)} | ETA {eta}")

    def update(self, done: int, failed: int, running: int) -> None:
        if not self.enabled:
            return
        text = self.line(done, failed, running)
        self.stream.write("\r" + text.ljust(self._width))
        self._width = len(text)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
