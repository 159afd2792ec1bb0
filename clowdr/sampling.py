"""Usage samples of a running tool: its own process tree, or its container's cgroup, never clowdr itself.

A sample is (seconds since start, CPU %, RSS MiB, virtual memory MiB, read bytes, write bytes, processes).
CPU % is computed from CPU-time deltas against the tool's start, so the first sample is real, not 0.0.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, NamedTuple

import psutil

log = logging.getLogger("clowdr")
MIB = 1024 * 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")


class Sample(NamedTuple):
    time: float
    cpu: float
    ram: float
    vmem: float
    read_bytes: int
    write_bytes: int
    procs: int


COLUMNS = Sample._fields


class Totals(NamedTuple):
    """Cumulative figures of a tree at one instant."""

    cpu_seconds: float
    rss: int
    vms: int
    read_bytes: int
    write_bytes: int
    procs: int


class ProcessTree:
    """The live processes under a root pid (children reaped by the tree count through their parent)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cache: dict[int, psutil.Process] = {}

    def _process(self, pid: int) -> psutil.Process:
        proc = self._cache.get(pid)
        if proc is None:
            proc = self._cache[pid] = psutil.Process(pid)
        return proc

    def members(self) -> list[psutil.Process]:
        root = self._process(self.pid)
        return [root, *root.children(recursive=True)]

    def totals(self) -> Totals | None:
        try:
            members = self.members()
        except psutil.Error:
            return None
        return _sum_processes(members)


def _sum_processes(members: list[psutil.Process]) -> Totals | None:
    cpu = 0.0
    rss = vms = rbytes = wbytes = alive = 0
    for proc in members:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                mem = proc.memory_info()
                io = proc.io_counters()
        except psutil.Error:
            continue
        cpu += times.user + times.system + times.children_user + times.children_system
        rss += mem.rss
        vms += mem.vms
        rbytes += io.read_bytes
        wbytes += io.write_bytes
        alive += 1
    return Totals(cpu, rss, vms, rbytes, wbytes, alive) if alive else None


class DockerContainer:
    """A container found through the id docker writes to its --cidfile; measured through its cgroup."""

    def __init__(self, cidfile: str) -> None:
        self.cidfile = cidfile
        self.container_id: str | None = None
        self._dirs: dict[str, Path] = {}

    def _locate(self) -> bool:
        if self.container_id is None:
            try:
                cid = Path(self.cidfile).read_text().strip()
            except OSError:
                return False
            if not cid:
                return False
            self.container_id = cid
        if not self._dirs:
            self._dirs = find_cgroup_dirs(self.container_id)
        return bool(self._dirs)

    def totals(self) -> Totals | None:
        if not self._locate():
            return None
        try:
            pids = [int(p) for p in _read(self._dirs["procs"]).split()]
        except (OSError, ValueError, KeyError):
            return None
        members = []
        for pid in pids:
            try:
                members.append(psutil.Process(pid))
            except psutil.Error:
                continue
        by_process = _sum_processes(members)
        if by_process is None:
            return None
        cpu = _cgroup_cpu_seconds(self._dirs)
        rss = _cgroup_rss(self._dirs)
        io = _cgroup_io(self._dirs)
        return Totals(
            cpu if cpu is not None else by_process.cpu_seconds,
            rss if rss is not None else by_process.rss,
            by_process.vms,
            io[0] if io else by_process.read_bytes,
            io[1] if io else by_process.write_bytes,
            by_process.procs,
        )


def _read(path: Path) -> str:
    return path.read_text()


def find_cgroup_dirs(container_id: str) -> dict[str, Path]:
    """The container's cgroup directories on cgroup v1 (per controller) or v2 (one unified directory)."""
    names = [f"docker/{container_id}", f"system.slice/docker-{container_id}.scope"]
    found: dict[str, Path] = {}
    for name in names:
        unified = CGROUP_ROOT / name
        if (unified / "cgroup.controllers").exists():
            return {"procs": unified / "cgroup.procs", "v2": unified}
        for controller in ("memory", "cpuacct", "blkio", "pids"):
            directory = CGROUP_ROOT / controller / name
            if directory.is_dir():
                found[controller] = directory
                found.setdefault("procs", directory / "cgroup.procs")
        if found:
            return found
    return found


def _cgroup_cpu_seconds(dirs: dict[str, Path]) -> float | None:
    try:
        if "v2" in dirs:
            for line in _read(dirs["v2"] / "cpu.stat").splitlines():
                key, value = line.split()
                if key == "usage_usec":
                    return int(value) / 1e6
            return None
        return int(_read(dirs["cpuacct"] / "cpuacct.usage")) / 1e9
    except (OSError, KeyError, ValueError):
        return None


def _cgroup_rss(dirs: dict[str, Path]) -> int | None:
    """Anonymous plus mapped memory of the container (what RSS means), not its page cache."""
    try:
        stat_file = dirs["v2"] / "memory.stat" if "v2" in dirs else dirs["memory"] / "memory.stat"
        stats = dict(line.split() for line in _read(stat_file).splitlines())
    except (OSError, KeyError, ValueError):
        return None
    if "v2" in dirs:
        return int(stats.get("anon", 0)) + int(stats.get("file_mapped", 0))
    return int(stats.get("total_rss", stats.get("rss", 0))) + int(stats.get("total_mapped_file", stats.get("mapped_file", 0)))


def _cgroup_io(dirs: dict[str, Path]) -> tuple[int, int] | None:
    try:
        if "v2" in dirs:
            read = write = 0
            for line in _read(dirs["v2"] / "io.stat").splitlines():
                fields = dict(f.split("=") for f in line.split()[1:])
                read += int(fields.get("rbytes", 0))
                write += int(fields.get("wbytes", 0))
            return read, write
        read = write = 0
        for line in _read(dirs["blkio"] / "blkio.throttle.io_service_bytes").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == "Read":
                read += int(parts[2])
            elif len(parts) == 3 and parts[1] == "Write":
                write += int(parts[2])
        return read, write
    except (OSError, KeyError, ValueError):
        return None


class Sampler:
    """Samples a target while its tool runs, and stops the moment the tool exits, not at the next tick.

    The thread that waits for the tool samples it between waits: a short tool costs no thread of its own, nor
    the GIL hand-offs of starting and joining one.
    """

    def __init__(self, target: ProcessTree | DockerContainer, started: float, emit: Callable[[list[Sample]], None],
                 first_interval: float, max_interval: float) -> None:
        self.target = target
        self.started = started
        self.emit = emit
        self.first_interval = first_interval
        self.max_interval = max_interval
        self.samples: list[Sample] = []
        self.last: Totals | None = None
        self._prev = (started, 0.0)

    def sample_until(self, ended: Callable[[float], bool]) -> None:
        """Take a sample after each interval that passes without ``ended(interval)`` saying the tool is over
        (``ended`` waits up to that long to know, and returns the moment it does)."""
        interval, sampling = self.first_interval, True
        while not ended(interval):
            try:
                sample = self._take() if sampling else None
                if sample is not None:
                    self.samples.append(sample)
                    self.emit([sample])
            except Exception as exc:   # a record of the tool, not the tool: waiting for it goes on unsampled
                log.warning("usage samples stopped (%s: %s)", type(exc).__name__, exc)
                sampling = False
            interval = min(interval * 2, self.max_interval)

    def _take(self) -> Sample | None:
        totals = self.target.totals()
        now = time.perf_counter()
        if totals is None:
            return None
        self.last = totals
        prev_time, prev_cpu = self._prev
        elapsed = now - prev_time
        cpu = max(0.0, (totals.cpu_seconds - prev_cpu) / elapsed * 100) if elapsed > 0 else 0.0
        self._prev = (now, totals.cpu_seconds)
        return Sample(round(now - self.started, 3), round(cpu, 1), round(totals.rss / MIB, 2),
                      round(totals.vms / MIB, 2), totals.read_bytes, totals.write_bytes, totals.procs)

