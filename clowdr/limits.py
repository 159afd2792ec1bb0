"""A memory limit for one attempt of a tool run on this machine, and a true account of an out-of-memory kill.

Where no scheduler enforces memory (the local back-end), an attempt with a memory limit runs in a memory
cgroup of its own, made under this process's own cgroup: the cgroup v1 memory controller, or cgroup v2 where
the memory controller is enabled for children there. The tool's first process moves itself into it before it
becomes the tool (so everything it starts is counted), the kernel kills it when the limit is reached, and the
cgroup's own counters then say so (``oom_kill``) and give the peak. Where no such cgroup can be made, the
limit cannot be enforced: said once, and the attempt runs without it.

Without a limit, a tool killed by the kernel's OOM killer is still named for it: the machine's ``oom_kill``
count (``/proc/vmstat``) grew while it ran and it died of SIGKILL.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

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


def _parent() -> tuple[Path, str] | None:
    """Where attempt cgroups go, and the cgroup version there ("v1" or "v2"), or None."""
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
        if "memory" in enabled and os.access(parent, os.W_OK):
            return parent, "v2"
    return None


class MemoryLimit:
    """The cgroup of one attempt, limited to ``limit`` bytes."""

    def __init__(self, path: Path, version: str, limit: int) -> None:
        self.path, self.version, self.limit = path, version, limit

    @classmethod
    def create(cls, name: str, limit: int) -> "MemoryLimit | None":
        global _warned
        found = _parent()
        try:
            if found is None:
                raise OSError("no writable memory cgroup")
            parent, version = found
            path = parent / name
            path.mkdir()
            limit_file = "memory.limit_in_bytes" if version == "v1" else "memory.max"
            (path / limit_file).write_text(str(limit))
            if version == "v2":
                (path / "memory.swap.max").write_text("0")
            return cls(path, version, limit)
        except OSError as exc:
            if not _warned:
                log.warning("tasks cannot be held to a memory limit on this machine (%s); they run without one", exc)
                _warned = True
            return None

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` started by a shell that first moves itself into this cgroup (its children are then counted)."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *argv]

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
        """Kill whatever is left in it, then remove it."""
        for pid in self._read("cgroup.procs").split():
            try:
                os.kill(int(pid), 9)
            except OSError:
                pass
        try:
            self.path.rmdir()
        except OSError:
            pass


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
