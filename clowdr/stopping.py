"""Stopping a launch: Ctrl-C, SIGTERM and SIGHUP all ask the launch to stop, the same way ``RunHandle.cancel`` does.

A signal handler only sets an event that the launch checks where stopping is safe (the monitor's loop, and
between the steps before it). Raising an exception from a handler, as Python does for Ctrl-C by default,
lands wherever the main thread happens to be, including inside Dask calls that swallow it; then the tools
ran on and the launch was recorded as finished. A second Ctrl-C still interrupts at once.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType

STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequest(threading.Event):
    """Set when the launch should stop; ``signal_number`` says which signal asked (None: its owner did)."""

    signal_number: int | None = None

    def request(self, signal_number: int | None = None) -> None:
        if not self.is_set():
            self.signal_number = signal_number
        self.set()


def stop_on_signals() -> StopRequest:
    """A stop request that SIGINT, SIGTERM and SIGHUP set (main thread only); a second SIGINT raises
    KeyboardInterrupt as usual, for a user who will not wait for the tools to be stopped."""
    stop = StopRequest()

    def handler(number: int, frame: FrameType | None) -> None:
        if number == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        stop.request(number)

    for number in STOPPING_SIGNALS:
        signal.signal(number, handler)
    return stop
