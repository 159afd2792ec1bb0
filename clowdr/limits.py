"""A cgroup for each attempt of a tool run on this machine: everything the tool starts stays countable and
killable (even a daemon that left its session with ``setsid``), a memory limit can be held, and an
out-of-memory kill is told truly.

The cgroup is made under this process's own: in the cgroup v1 memory hierarchy, or in the unified (v2) one
(where a memory limit needs the memory controller enabled for children there). The tool's shell writes its own
pid into it before it runs the tool's command, so everything the command starts is in it; when the tool ends,
whatever is left in it is killed, and the worker's spawner does the same if the worker dies first. With a limit
the kernel kills the tool when it is reached, and the cgroup's own counters then say so (``oom_kill``) and give
the peak. Where no such cgroup can be made, tools are still stopped by process group (a ``setsid`` daemon then
escapes), and a limit cannot be enforced: said once, and the attempt runs without it.

Without a limit, a tool killed by the kernel's OOM killer is still named for it: the machine's ``oom_kill``
count (``/proc/vmstat``) grew while it ran and it died of SIGKILL.

Where this process's own cgroup already holds it to the task's memory (a batch job the scheduler holds to its
memory, e.g. SLURM's task/cgroup), the tool gets no cgroup of its own (``held_to``): the job's limit is the same,
and a kill inside a child cgroup would be hidden from the scheduler, which counts out-of-memory kills in the
job's own cgroup only (SLURM then records the job as OUT_OF_MEMORY).
"""
from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

from clowdr.spawner import remove_cgroup

log = logging.getLogger("clowdr")
ROOT = Path("/sys/fs/cgroup")
_warned = False


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per hierarchy ("memory" for v1, "" for the unified v2 one)."""
    found = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                found[controller] = path
    except OSError:
        pass
    return found


@lru_cache(maxsize=2)
def _parent(memory: bool) -> tuple[Path, str] | None:
    """Where attempt cgroups go, and the cgroup version there ("v1" or "v2"), or None. ``memory``: one that can
    hold a memory limit. Found once per process: every attempt asks, and a process's cgroup does not move."""
    own = _own_cgroups()
    if "memory" in own:
        parent = ROOT / "memory" / own["memory"].lstrip("/")
        if os.access(parent, os.W_OK):
            return parent, "v1"
    if "" in own and (ROOT / "cgroup.controllers").exists():
        parent = ROOT / own[""].lstrip("/")
        try:
            enabled = (parent / "cgroup.subtree_control").read_text().split()
        except OSError:
            enabled = []
        if ("memory" in enabled or not memory) and os.access(parent, os.W_OK):
            return parent, "v2"
    return None


@lru_cache(maxsize=1)
def _own_limit() -> int | None:
    """The memory limit this process's cgroup and its ancestors hold it to (None: none, or not known)."""
    own = _own_cgroups()
    limits = []
    try:
        if "memory" in own:         # v1: the hierarchy works it out
            stat = (ROOT / "memory" / own["memory"].lstrip("/") / "memory.stat").read_text().split()
            limits.append(int(stat[stat.index("hierarchical_memory_limit") + 1]))
        elif "" in own and (ROOT / "cgroup.controllers").exists():
            path = ROOT / own[""].lstrip("/")
            while path != ROOT:
                text = (path / "memory.max").read_text().strip() if (path / "memory.max").exists() else "max"
                limits.extend([int(text)] if text.isdigit() else [])
                path = path.parent
    except (OSError, ValueError, IndexError):
        return None
    limit = min(limits, default=None)
    return limit if limit is not None and limit < 1 << 60 else None


def held_to(limit: int | None) -> bool:
    """Whether this process's own cgroup already holds it (and what it starts) to ``limit`` bytes or less."""
    own = _own_limit()
    return limit is not None and own is not None and own <= limit


class TaskCgroup:
    """The cgroup of one attempt, limited to ``limit`` bytes if a limit is given."""

    def __init__(self, path: Path, version: str, limit: int | None) -> None:
        self.path, self.version, self.limit = path, version, limit

    @classmethod
    def create(cls, name: str, limit: int | None) -> "TaskCgroup | None":
        global _warned
        found = _parent(memory=limit is not None)
        try:
            if found is None:
                raise OSError("no writable cgroup")
            parent, version = found
            path = parent / name
            path.mkdir()
            if limit is not None:
                (path / ("memory.limit_in_bytes" if version == "v1" else "memory.max")).write_text(str(limit))
                if version == "v2":
                    (path / "memory.swap.max").write_text("0")
            return cls(path, version, limit)
        except OSError as exc:
            if limit is not None and not _warned:
                log.warning("tasks cannot be held to a memory limit on this machine (%s); they run without one", exc)
                _warned = True
            return None

    def shell(self, command: str) -> list[str]:
        """``/bin/sh`` running ``command`` as ``sh -c`` would, after moving itself into this cgroup (what it
        starts is then in it too); a shell that cannot join runs nothing (exit 125). ``command`` stays an
        argument of its own, so it may still be as long as Linux allows one argument to be."""
        return ["/bin/sh", "-c", 'echo $$ > "$1" || exit 125; shift; eval "$1"', "sh",
                str(self.path / "cgroup.procs"), command]

    def _read(self, name: str) -> str:
        try:
            return (self.path / name).read_text()
        except OSError:
            return ""

    def oom_killed(self) -> bool:
        text = self._read("memory.oom_control" if self.version == "v1" else "memory.events")
        counts = dict(line.split() for line in text.splitlines() if len(line.split()) == 2)
        return int(counts.get("oom_kill", "0")) > 0

    def peak(self) -> int | None:
        text = self._read("memory.max_usage_in_bytes" if self.version == "v1" else "memory.peak").strip()
        return int(text) if text.isdigit() else None

    def remove(self) -> None:
        """Kill whatever is left in it (a process forking meanwhile is caught by the next pass), then remove it."""
        remove_cgroup(str(self.path))


def oom_kills() -> int | None:
    """The machine's count of OOM-killer kills so far (None where it is not known)."""
    try:
        with open("/proc/vmstat") as handle:
            for line in handle:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None
