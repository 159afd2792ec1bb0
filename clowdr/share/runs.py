"""Runs as the dashboard shows them: what each run ran and how it was launched, and one row per run.

A run's tool (name, version, container, error codes, suggested resources) comes from its descriptor copy; its
launches (command, back-end, what each task was asked to fit in, which tasks it ran, whether it is over) from
``run.json``. The original tool's runs have no ``run.json``: their descriptor is the one their task files name.
Times shown per run are that run's own: a run's wall time is the time its launches took, never a span across
runs.
"""
from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clowdr.provenance import launch_over

if TYPE_CHECKING:
    import pandas

#: Task statuses in the order a person looks at them: what went wrong first, what went well last.
STATUS_ORDER = ("failed", "interrupted", "running", "pending", "not launched", "succeeded")
RUN_COLUMNS = ("tool", "version", "run_id", "launched", "command", "backend", "launches", "tasks", "by_status",
               "failed", "wall_time", "cpu_hours", "peak_memory_mib")
MIB = 1024 * 1024


@dataclass
class RunInfo:
    """One run's descriptor facts and launches (what a task row needs beyond its own files)."""

    run_id: str
    meta: str
    format: str                                        # "clowdr" (ours) or "original" (Clowdr 0.1.2)
    tool: str | None = None
    tool_version: str | None = None
    container: str | None = None
    error_codes: dict[int, str] = field(default_factory=dict)
    suggested: dict[str, Any] = field(default_factory=dict)
    launches: list[dict[str, Any]] = field(default_factory=list)
    start: str | None = None

    def describe(self, descriptor: dict[str, Any] | None) -> None:
        """Take the tool's name, version, container image, error codes and suggested resources."""
        if not descriptor:
            return
        name, version = descriptor.get("name"), descriptor.get("tool-version")
        self.tool = name if isinstance(name, str) else self.tool
        self.tool_version = str(version) if isinstance(version, (str, int, float)) else None
        image = descriptor.get("container-image")
        if isinstance(image, dict) and isinstance(image.get("image"), str):
            self.container = image["image"]
        for entry in descriptor.get("error-codes") or []:
            if isinstance(entry, dict) and isinstance(entry.get("code"), int) and isinstance(
                    entry.get("description"), str):
                self.error_codes[entry["code"]] = entry["description"]
        resources = descriptor.get("suggested-resources")
        self.suggested = dict(resources) if isinstance(resources, dict) else {}

    def running_launches(self) -> list[tuple[int, dict[str, Any]]]:
        """The launches that ran tasks (not ``--setup``), with their positions in run.json."""
        return [(n, launch) for n, launch in enumerate(self.launches)
                if isinstance(launch, dict) and not launch.get("setup_only")]

    def launch_of_tasks(self) -> tuple[dict[int, int], int | None]:
        """Which launch last ran each task (task -> position), and the launch that ran every task when one
        records no task list (an older record)."""
        chosen: dict[int, int] = {}
        every: int | None = None
        for n, launch in self.running_launches():
            tasks = launch.get("tasks")
            if isinstance(tasks, list):
                for task in tasks:
                    if isinstance(task, int):
                        chosen[task] = n
            else:
                every, chosen = n, {}
        return chosen, every

    def launches_over(self) -> set[int]:
        """Positions of the launches that have ended (recorded so, or their client is gone)."""
        return {n for n, launch in self.running_launches() if launch_over(launch)}

    def command_text(self) -> str:
        """The first launch's command as a person would type it again: ``clowdr local ...`` for the command line
        (whatever path it was started by), as recorded for the Python API (``clowdr.launch ...``)."""
        for launch in self.launches:
            argv = launch.get("command")
            if isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv):
                program = argv[0].replace("\\", "/").rsplit("/", 1)[-1]
                if program in ("clowdr", "__main__.py", "-m"):
                    return shlex.join(["clowdr", *argv[1:]])
                return shlex.join(argv)
        return ""

    def backends(self) -> str:
        names = [str(launch.get("cluster")) for _, launch in self.running_launches() if launch.get("cluster")]
        return ", ".join(dict.fromkeys(names))


def requested_of(launch: dict[str, Any] | None) -> dict[str, Any]:
    """What a launch asked for each task (cpus, memory bytes, walltime seconds); empty for older records."""
    requested = launch.get("requested") if isinstance(launch, dict) else None
    return requested if isinstance(requested, dict) else {}


def status_rank(status: Any) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)


def wall_time(info: RunInfo, tasks: pandas.DataFrame) -> tuple[float, bool]:
    """Seconds the run's launches took (summed, each from its start to its end), and whether it is still going.

    A launch whose client died has no end: its last task end stands for it. The original tool recorded no
    launch: its run spans its first task start to its last task end.
    """
    import pandas as pd

    if info.format == "original" or not info.launches:
        starts, ends = tasks["start_time"].dropna(), tasks["end_time"].dropna()
        return (max((ends.max() - starts.min()).total_seconds(), 0.0) if len(starts) and len(ends) else 0.0), False
    total, going = 0.0, False
    over = info.launches_over()
    last_end = tasks["end_time"].dropna().max() if tasks["end_time"].notna().any() else None
    for n, launch in info.running_launches():
        start = pd.to_datetime(launch.get("start"), utc=True, errors="coerce")
        end = pd.to_datetime(launch.get("end"), utc=True, errors="coerce")
        if pd.isna(start):
            continue
        if pd.isna(end):
            if n in over:
                end = last_end if last_end is not None and last_end > start else start
            else:
                end, going = pd.Timestamp.now(tz="UTC"), True
        total += max((end - start).total_seconds(), 0.0)
    return total, going


def by_status_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{counts[s]} {s}" for s in (*STATUS_ORDER, *sorted(set(counts) - set(STATUS_ORDER)))
                     if counts.get(s))


def run_table(runs: list[RunInfo], frame: pandas.DataFrame) -> pandas.DataFrame:
    """One row per run, newest first: tool, launch, back-end, tasks by status, wall time, CPU hours, peak memory."""
    import pandas as pd

    rows = []
    groups = dict(tuple(frame.groupby("run_id", sort=False))) if len(frame) else {}
    for info in runs:
        tasks = groups.get(info.run_id, frame.iloc[:0])
        counts = {str(k): int(v) for k, v in tasks["status"].value_counts().items()}
        wall, going = wall_time(info, tasks)
        start = info.start or (tasks["start_time"].min().isoformat() if tasks["start_time"].notna().any() else None)
        launched = pd.to_datetime(start, utc=True, errors="coerce") if start else pd.NaT
        cpu = tasks["cpu_time"].astype("float64")
        peak = tasks["peak_rss"].astype("float64").max()
        rows.append({
            "run_id": info.run_id, "tool": info.tool or "", "version": info.tool_version or "",
            "launched": "" if pd.isna(launched) else launched.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": info.command_text() or ("(the original Clowdr: not recorded)" if info.format == "original"
                                               else ""),
            "backend": info.backends() or ("(not recorded)" if info.format == "original" else ""),
            "launches": len(info.running_launches()), "tasks": len(tasks), "by_status": by_status_text(counts),
            "failed": counts.get("failed", 0), "wall_time": seconds_text(wall) + (" so far" if going else ""),
            "cpu_hours": round(float(cpu.sum()) / 3600, 4) if cpu.notna().any() else math.nan,
            "peak_memory_mib": round(float(peak) / MIB, 1) if not math.isnan(peak) else math.nan,
            "_sort": "" if pd.isna(launched) else launched.isoformat(),
        })
    table = pd.DataFrame(rows, columns=[*RUN_COLUMNS, "_sort"])
    table = table.sort_values(["_sort", "run_id"], ascending=False, kind="stable").drop(columns="_sort")
    return table.reset_index(drop=True)


def seconds_text(seconds: float) -> str:
    """1h 02m 03s, 2m 03s, 4.2 s or 0.012 s: readable at a glance."""
    if not math.isfinite(seconds):
        return "-"
    if seconds < 1:
        return f"{seconds:.3f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"
