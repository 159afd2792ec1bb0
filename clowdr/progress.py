"""A one-line progress display on a terminal; silent when stderr is not one.

Log lines (``--verbose``) go above the progress line: ``ProgressLogHandler`` clears it, writes the
message, and draws it again, so the two never overwrite each other.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """done / failed / running, elapsed, and an ETA from the mean completion rate so far."""

    shown: "Progress | None" = None       # the line on screen now, for ProgressLogHandler

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self._text = ""

    def line(self, done: int, failed: int, running: int) -> str:
        elapsed = time.monotonic() - self.started
        finished = done + failed
        eta = "--:--:--" if finished == 0 else _clock(elapsed / finished * (self.total - finished))
        return (f"clowdr: {finished}/{self.total} finished ({done} ok, {failed} failed), {running} running"
                f" | elapsed {_clock(elapsed)} | ETA {eta}")

    def update(self, done: int, failed: int, running: int) -> None:
        if not self.enabled:
            return
        self.clear()
        self._text = self.line(done, failed, running)
        self.draw()
        Progress.shown = self

    def clear(self) -> None:
        if self._text:
            self.stream.write("\r" + " " * len(self._text) + "\r")

    def draw(self) -> None:
        self.stream.write(self._text)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._text:
            self.stream.write("\n")
            self.stream.flush()
        self._text = ""
        Progress.shown = None


class ProgressLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes log records above the progress line instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        shown = Progress.shown if Progress.shown is not None and Progress.shown.stream is self.stream else None
        if shown is not None:
            shown.clear()
        super().emit(record)
        if shown is not None:
            shown.draw()
