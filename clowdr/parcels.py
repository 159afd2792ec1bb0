"""How many task groups travel in one Dask future (a parcel).

Each Dask future costs the client's event loop several messages (submit, compute, finished, release), some
milliseconds: as much as a trivial tool's whole run. Groups whose tools turn out to be short therefore travel
together, one future running them in turn; each task still reports its start and its end as they happen, so a
record appears when its task ends, not when its parcel does. Nothing is parcelled before tools have been seen
to end, and a parcel holds about ``target`` seconds of tools, judged from the recent ones, and never more than
a share of what waits: the last parcels are small, and no worker idles while another has a queue.
"""
from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field

#: a tool is never judged shorter than this (seconds): clock noise must not make parcels huge
SHORTEST = 0.001


@dataclass
class Parcels:
    """Parcel sizes for a launch whose back-end runs ``slots`` tasks at once."""

    slots: int
    target: float                  # seconds of tools per parcel (monitor.parcel-seconds); 0: one group each
    _recent: deque[float] = field(default_factory=lambda: deque(maxlen=64))

    @property
    def in_flight(self) -> int:
        """Futures to keep in Dask: every worker busy, and its next parcel already waiting."""
        return 2 * max(1, self.slots)

    def ended(self, seconds: float | None) -> None:
        """A tool ran this long (its realtime)."""
        if seconds is not None:
            self._recent.append(max(float(seconds), SHORTEST))

    def size(self, waiting: int) -> int:
        """Tasks the next parcel should hold, given ``waiting`` tasks not yet handed to Dask."""
        if not self._recent or self.target <= 0:
            return 1
        by_time = int(self.target / statistics.median(self._recent))
        fair_share = math.ceil(waiting / self.in_flight)
        return max(1, min(by_time, fair_share))


def take(ready: deque[list], size: int) -> list:
    """Whole groups from the front of ``ready`` until they hold ``size`` tasks (always one group at least)."""
    parcel = list(ready.popleft())
    while ready and len(parcel) + len(ready[0]) <= size:
        parcel.extend(ready.popleft())
    return parcel
