"""The data layer of the dashboard: provenance directories (ours or Clowdr 0.1.2's) read into pandas tables.

Only the dashboard imports this module (pandas is not needed to run tools). Everything here reads
directories that may be written at the same moment by a live run, or that were written on another machine:

* files are found by name in the ``clowdr/`` directory being read, never through paths recorded inside them;
* a missing, half-written or unparsable file is treated as absent, never raised;
* each directory is listed once (``os.scandir``) and each file read once, so 10,000 tasks load in well
  under a second or two.
"""
from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clowdr.errors import InputError
from clowdr.protocol import Failure
from clowdr.share.runs import RunInfo, requested_of

if TYPE_CHECKING:
    import pandas

META_NAME = "clowdr"
SUMMARY_INDEX = "clowdr-summary.json"
TASK_FILE = re.compile(r"^task-(\d+)(\.json|-summary\.json)$")
ATTEMPT_DIR = re.compile(r"^attempt-(\d+)$")
STREAMS = ("stdout", "stderr")
ORIGINAL_LAUNCHTIME = "%Y-%m-%d %H:%M:%S"
CHUNK = 1 << 16
MIB = 1024 * 1024

#: Columns every task table has, in this order; ``param.<id>`` columns follow, sorted.
COLUMNS = (
    "run_id", "task", "status", "exitcode", "failure", "attempt", "attempts",
    "submit_time", "start_time", "end_time", "queue_wait", "duration",
    "cpu_time", "user_time", "system_time", "cpu_percent", "peak_rss", "peak_rss_upper_bound", "peak_vmem",
    "read_bytes", "write_bytes", "hostname", "worker", "backend", "job_id", "command", "container_image", "exit_description", "error", "signal",
    "peak_cpu", "requested_cpus", "requested_memory", "requested_walltime", "tool", "tool_version", "format", "meta",
)
#: Summary keys copied as they are (the other columns are derived).
COPIED = ("exitcode", "failure", "cpu_time", "user_time", "system_time", "cpu_percent", "peak_rss",
          "peak_rss_upper_bound", "peak_vmem",
          "read_bytes", "write_bytes", "hostname", "worker", "backend", "job_id", "command", "container_image",
          "exit_description", "error", "signal")
NUMERIC = ("cpu_time", "user_time", "system_time", "cpu_percent", "duration", "peak_cpu")
INTEGER = ("exitcode", "attempt", "attempts", "peak_rss", "peak_vmem", "read_bytes", "write_bytes", "requested_cpus",
           "requested_memory", "requested_walltime")
TIMES = ("submit_time", "start_time", "end_time")


# -- finding runs -----------------------------------------------------------------------------------------
def find_runs(location: str | Path) -> list[Path]:
    """The ``clowdr/`` metadata directories under LOCATION, sorted by run id.

    LOCATION is a provenance directory of many runs, one run directory, a run's ``clowdr/`` directory, or a
    ``clowdr-summary.json`` file (the original ``share`` output; its directory is read). An empty directory is a
    provenance directory with no runs yet (a dashboard may watch it fill); anything else raises InputError.
    An ``s3://bucket/prefix`` of any of these is read through a local mirror (``clowdr.storage``), brought up to
    date by each call; the paths returned are then the mirror's.
    """
    text = str(location)
    if text.startswith("s3://"):
        from clowdr import storage

        path = storage.mirror(text, keep=wanted_in_mirror)      # re-synced by every call (a live dashboard)
    else:
        path = Path(os.path.abspath(Path(text).expanduser()))
    if path.is_file():
        if path.name != SUMMARY_INDEX:
            raise InputError(text, f"not a provenance location (a file other than {SUMMARY_INDEX})")
        path = path.parent
    if not path.is_dir():
        raise InputError(text, "no such provenance directory, run directory, clowdr/ directory "
                               f"or {SUMMARY_INDEX}")
    if _is_meta(path):
        return [path]
    if (path / META_NAME).is_dir():
        return [path / META_NAME]
    found, entries = [], 0
    try:
        with os.scandir(path) as listing:
            for entry in listing:
                entries += 1
                if entry.is_dir() and not entry.name.startswith(".") and os.path.isdir(
                        os.path.join(entry.path, META_NAME)):
                    found.append(Path(entry.path) / META_NAME)
    except OSError as exc:
        raise InputError(text, f"cannot list it ({exc.strerror})") from None
    if not found and entries:
        raise InputError(text, "not a provenance location: no <run id>/clowdr/ directories, and not a run "
                               f"directory, a clowdr/ directory or {SUMMARY_INDEX}")
    return sorted(found, key=lambda meta: (meta.parent.name, str(meta)))


def wanted_in_mirror(parts: tuple[str, ...]) -> bool:
    """Whether a file at PARTS (relative to an S3 location) is one this module may read, so worth mirroring.

    That is a file of a run's metadata directory (the location itself, ``clowdr/`` or ``<run id>/clowdr/``) or of
    its ``attempts/task-N/attempt-K/``; a run's outputs and work files are not downloaded.
    """
    for depth in (0, 1, 2):
        if depth and (len(parts) <= depth or parts[depth - 1] != META_NAME):
            continue
        rest = parts[depth:]
        if len(rest) == 1 or (len(rest) == 4 and rest[0] == "attempts"):
            return True
    return False


def _is_meta(path: Path) -> bool:
    """A run's metadata directory: named ``clowdr`` (maybe still empty), or holding run.json or task files."""
    if path.name == META_NAME:
        return True
    try:
        with os.scandir(path) as listing:
            return any(entry.name == "run.json" or TASK_FILE.match(entry.name) for entry in listing)
    except OSError:
        return False


# -- reading files tolerantly -------------------------------------------------------------------------------
def _read_bytes(path: str) -> bytes | None:
    """A whole file, or None. Plain fds: for small files one read() is the whole cost (no buffered-io layer)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)   # a FIFO must not block the dashboard
    except OSError:
        return None
    try:
        chunks = [os.read(fd, CHUNK)]
        while len(chunks[-1]) == CHUNK:     # a short read of a regular file is its end
            chunks.append(os.read(fd, CHUNK))
        return b"".join(chunks) if len(chunks) > 1 else chunks[0]
    except OSError:
        return None
    finally:
        os.close(fd)


def _json_object(path: str) -> dict[str, Any] | None:
    """A JSON object, or None when the file is absent, partial (being written) or not an object."""
    data = _read_bytes(path)
    if not data:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _listing(path: str) -> dict[str, os.DirEntry[str]]:
    try:
        with os.scandir(path) as listing:
            return {entry.name: entry for entry in listing}
    except OSError:
        return {}


def _attempt_numbers(path: str) -> list[int]:
    """Archived attempt numbers in ``attempts/task-N/``, ascending."""
    numbers = []
    for name in _listing(path):
        match = ATTEMPT_DIR.match(name)
        if match:
            numbers.append(int(match.group(1)))
    return sorted(numbers)


def _basename(recorded: Any) -> str | None:
    """The file name of a path recorded on (maybe) another machine: the only part we trust."""
    if not isinstance(recorded, str) or not recorded:
        return None
    name = recorded.replace("\\", "/").rsplit("/", 1)[-1]
    return name if name not in ("", ".", "..") else None


def _has_usage_rows(path: str) -> bool:
    """Whether a usage file holds at least one sample after its header."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    newline = head.find(b"\n")
    return newline >= 0 and bool(head[newline + 1:].strip())


def _status(summary: dict[str, Any] | None, started: bool, launched: bool, launch_ended: bool) -> str:
    """A task's status from its files and its launch: ``not launched`` when no launch ran it (``--setup``,
    ``--dev``), ``interrupted`` when the launch that ran it ended (its client died, or was stopped) without its
    summary."""
    if summary is not None:
        if isinstance(summary.get("status"), str):
            return summary["status"]
        return "succeeded" if summary.get("exitcode") == 0 else "failed"   # the original tool's summary
    if not launched:
        return "not launched"
    if launch_ended:
        return "interrupted"
    return "running" if started else "pending"


def _launch_epoch(value: Any) -> float | None:
    """The original tool's ``launchtime`` (local time of the machine that ran it, read as this machine's zone)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, ORIGINAL_LAUNCHTIME).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# -- the task table ------------------------------------------------------------------------------------------
def load_tasks(location: str | Path) -> pandas.DataFrame:
    """One row per task of every run under LOCATION, in (run_id, task) order (see COLUMNS and ``param.<id>``)."""
    return load_tables(location)[0]


def load_tables(location: str | Path) -> tuple[pandas.DataFrame, list[RunInfo]]:
    """The task table of every run under LOCATION, and what each run is (``RunInfo``, in run id order).

    ``status`` is the summary's, or for an original-tool summary succeeded/failed from its exit code. Without a
    summary: ``not launched`` if no launch of the run ran the task (``--setup``, ``--dev``), ``interrupted`` if
    the launch that ran it is over (a crash, Ctrl-C, a killed client), else ``running`` once it has a stdout
    file or usage samples, ``pending`` before. Times are tz-aware (UTC) Timestamps, NaT when unknown; durations
    and queue_wait are seconds. ``exit_description`` falls back on the descriptor's ``error-codes``, the
    container on its ``container-image``; the original tool's runs take peak RAM and CPU from its
    ``clowdr-summary.json`` or else their usage files. ``requested_*`` are what the task's launch asked for
    (CPUs, memory bytes, walltime seconds), the memory limit of the attempt itself first.
    """
    rows: list[dict[str, Any]] = []
    launch_epochs: list[float | None] = []
    runs = [_run_rows(meta, rows, launch_epochs) for meta in find_runs(location)]
    return _frame(rows, launch_epochs), runs


def _original_peaks(base: str, names: dict[str, os.DirEntry[str]]) -> dict[int, tuple[Any, Any]]:
    """Per task, (RAM max in MiB, CPU max in %) from the original ``share``'s ``clowdr-summary.json``."""
    if SUMMARY_INDEX not in names:
        return {}
    data = _read_bytes(os.path.join(base, SUMMARY_INDEX))
    try:
        records = json.loads(data) if data else []
    except ValueError:
        return {}
    found = {}
    for record in records if isinstance(records, list) else []:
        if isinstance(record, dict) and str(record.get("Task ID", "")).isdigit():
            found[int(record["Task ID"])] = (_number(record.get("RAM: Max (MB)")), _number(record.get("CPU: Max (%)")))
    return found


def _usage_peaks(path: str) -> tuple[float | None, float | None]:
    """(RAM max in MiB, CPU max in %) of a usage file with ``cpu`` and ``ram`` columns (whole lines only)."""
    data = _read_bytes(path)
    if not data:
        return None, None
    lines = data[:data.rfind(b"\n") + 1].decode("utf-8", errors="replace").splitlines()
    if not lines:
        return None, None
    header = [name.strip() for name in lines[0].split(",")]
    if "ram" not in header or "cpu" not in header:
        return None, None
    ram_at, cpu_at = header.index("ram"), header.index("cpu")
    ram = cpu = None
    for line in lines[1:]:
        cells = line.split(",")
        try:
            r, c = float(cells[ram_at]), float(cells[cpu_at])
        except (IndexError, ValueError):
            continue
        ram, cpu = (r if ram is None else max(ram, r)), (c if cpu is None else max(cpu, c))
    return ram, cpu


def _run_rows(meta: Path, rows: list[dict[str, Any]], launch_epochs: list[float | None]) -> RunInfo:
    """Append the rows of one run (its directory listed once, each of its files read at most once)."""
    base = str(meta)
    names = _listing(base)
    run = _json_object(os.path.join(base, "run.json")) if "run.json" in names else None
    run_id = meta.parent.name            # the directory's name is what --run_id takes, even if it was renamed
    info = RunInfo(run_id=run_id, meta=base, format="clowdr" if run is not None else "original")
    if run is not None:
        info.tool = run.get("tool") if isinstance(run.get("tool"), str) else None
        launches = run.get("launches") if isinstance(run.get("launches"), list) else []
        info.launches = [launch for launch in launches if isinstance(launch, dict)]
        info.start = run.get("start") if isinstance(run.get("start"), str) else None
    launch_of, every = info.launch_of_tasks()
    over = info.launches_over()

    indices = sorted({int(m.group(1)) for m in map(TASK_FILE.match, names) if m})
    history: dict[int, list[int]] = {}
    if "attempts" in names:
        for name in _listing(os.path.join(base, "attempts")):
            if name.startswith("task-") and name[5:].isdigit():
                numbers = _attempt_numbers(os.path.join(base, "attempts", name))
                if numbers:
                    history[int(name[5:])] = numbers
    peaks = _original_peaks(base, names) if run is None else {}

    descriptor_name = _basename(run.get("descriptor")) if run else None
    if descriptor_name in names:
        info.describe(_json_object(os.path.join(base, str(descriptor_name))))
    invocations: dict[str, dict[str, Any] | None] = {}
    for n in indices:
        prefix = f"task-{n}"
        definition = _json_object(os.path.join(base, prefix + ".json")) if prefix + ".json" in names else None
        definition = definition or {}
        if descriptor_name is None and _basename(definition.get("tool")):    # the original tool's: as tasks name it
            descriptor_name = str(_basename(definition.get("tool")))
            info.describe(_json_object(os.path.join(base, descriptor_name)) if descriptor_name in names else None)
            info.tool = info.tool or descriptor_name.rsplit(".", 1)[0]
        summary = (_json_object(os.path.join(base, prefix + "-summary.json"))
                   if prefix + "-summary.json" in names else None)
        started = summary is None and (prefix + "-stdout.txt" in names or (
            prefix + "-usage.csv" in names and _has_usage_rows(os.path.join(base, prefix + "-usage.csv"))))
        launch = launch_of.get(n, every)
        status = _status(summary, started, run is None or launch is not None, launch in over)
        archived = history.get(n, [])
        s = summary or {}
        row: dict[str, Any] = {"run_id": run_id, "task": n, "status": status, "format": info.format, "meta": base}
        for key in COPIED:
            row[key] = s.get(key)
        if status == "failed" and not row["failure"] and isinstance(row["exitcode"], int):
            row["failure"] = str(Failure.TOOL_ERROR)      # the original tool's summaries name no class
        if not row["exit_description"] and isinstance(row["exitcode"], int):
            row["exit_description"] = info.error_codes.get(row["exitcode"])
        row["container_image"] = row["container_image"] or info.container
        attempt = s.get("attempt")
        if not isinstance(attempt, int) or isinstance(attempt, bool):
            attempt = (archived[-1] if archived else 0) + 1
        row["attempt"] = attempt
        row["attempts"] = len(archived) + (0 if status in ("pending", "not launched") else 1)
        for key in TIMES:
            value = s.get(key)
            row[key] = value if isinstance(value, str) else None
        duration = _number(s.get("realtime"))
        row["duration"] = duration if duration is not None else _number(s.get("duration"))
        launch_epochs.append(_launch_epoch(s.get("launchtime")) if row["start_time"] is None else None)
        if run is None and prefix + "-usage.csv" in names:
            ram, cpu = peaks.get(n) or _usage_peaks(os.path.join(base, prefix + "-usage.csv"))
            row["peak_rss"] = ram * MIB if ram is not None else None
            row["peak_cpu"] = cpu
        requested = requested_of(info.launches[launch] if launch is not None else None)
        row["requested_cpus"] = requested.get("cpus")
        row["requested_memory"] = s.get("memory_limit") or requested.get("memory")
        row["requested_walltime"] = requested.get("walltime")
        row["tool"] = info.tool
        row["tool_version"] = info.tool_version
        invocation_name = _basename(definition.get("invocation"))
        if invocation_name is not None:
            if invocation_name not in invocations:
                invocations[invocation_name] = (_json_object(os.path.join(base, invocation_name))
                                                if invocation_name in names else None)
            for key, value in (invocations[invocation_name] or {}).items():
                row["param." + key] = value
        rows.append(row)
    return info


def _frame(rows: list[dict[str, Any]], launch_epochs: list[float | None]) -> pandas.DataFrame:
    """The rows as one DataFrame with typed columns (built once: per-row DataFrame work is what is slow)."""
    import pandas as pd

    frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=list(COLUMNS))
    params = sorted(c for c in frame.columns if c.startswith("param."))
    frame = frame.reindex(columns=[*COLUMNS, *params])
    for key in NUMERIC:
        frame[key] = pd.to_numeric(frame[key], errors="coerce").astype("float64")
    for key in INTEGER:
        values = pd.to_numeric(frame[key], errors="coerce").astype("float64")
        frame[key] = values.where(values.abs() < 2.0 ** 63).round().astype("Int64")   # Infinity is valid JSON
    frame["task"] = frame["task"].astype("int64")
    for key in TIMES:
        frame[key] = pd.to_datetime(frame[key], format="ISO8601", utc=True, errors="coerce").dt.as_unit("us")
    launched = pd.to_datetime(pd.Series(launch_epochs, index=frame.index, dtype="float64"), unit="s",
                              utc=True).dt.as_unit("us")
    frame["start_time"] = frame["start_time"].fillna(launched)
    elapsed = (frame["end_time"] - frame["start_time"]).dt.total_seconds()
    frame["duration"] = frame["duration"].fillna(elapsed)
    finished = frame["start_time"] + pd.to_timedelta(frame["duration"], unit="s").dt.as_unit("us")
    frame["end_time"] = frame["end_time"].fillna(finished)
    frame["queue_wait"] = (frame["start_time"] - frame["submit_time"]).dt.total_seconds()
    return frame


# -- one task: usage, attempts, logs --------------------------------------------------------------------------
def _checked(task: int, attempt: int | None) -> None:
    """Task and attempt numbers are non-negative ints, so the file names built from them stay in meta_dir."""
    for what, value in (("task", task), ("attempt", attempt)):
        if value is None and what == "attempt":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InputError(what, f"expected a non-negative integer, got {value!r}")


def _task_file(meta_dir: Path, task: int, kind: str, attempt: int | None) -> Path:
    """``task-N-<kind>`` for the current attempt, or ``attempts/task-N/attempt-K/<kind>`` for an earlier one."""
    if attempt is None:
        return Path(meta_dir) / f"task-{task}-{kind}"
    return Path(meta_dir) / "attempts" / f"task-{task}" / f"attempt-{attempt}" / kind


def load_usage(meta_dir: Path, task: int, max_points: int | None = None,
               attempt: int | None = None) -> pandas.DataFrame:
    """The task's usage samples (time, cpu, ram, and vmem, read_bytes, write_bytes, procs when recorded).

    A growing file's partial last line and any malformed line are skipped. With ``max_points`` (at least 3) a
    longer series is cut into time buckets keeping each column's maximum, plus the first and last rows, so
    plots stay small and no peak disappears. ``attempt`` reads an earlier attempt's file instead.
    """
    import io

    import numpy as np
    import pandas as pd

    _checked(task, attempt)
    if max_points is not None and max_points < 3:
        raise ValueError("max_points must be at least 3 (first row, last row and one bucket)")
    empty = pd.DataFrame({name: pd.Series(dtype="float64") for name in ("time", "cpu", "ram")})
    data = _read_bytes(str(_task_file(meta_dir, task, "usage.csv", attempt)))
    if not data:
        return empty
    data = data[:data.rfind(b"\n") + 1]          # a line still being written is not a sample yet
    if not data.strip():
        return empty
    try:
        frame = pd.read_csv(io.BytesIO(data), on_bad_lines="skip", skipinitialspace=True, index_col=False)
    except (ValueError, pd.errors.ParserError):
        return empty
    if "time" not in frame.columns:
        return empty
    frame = frame.apply(pd.to_numeric, errors="coerce").astype("float64")
    required = [name for name in ("time", "cpu", "ram") if name in frame.columns]
    frame = frame.dropna(subset=required).reset_index(drop=True)      # a short or garbled line is not a sample
    if max_points is None or len(frame) <= max_points:
        return frame
    middle = frame.iloc[1:-1]
    times = middle["time"].to_numpy()
    buckets = max_points - 2
    edges = np.linspace(times.min(), times.max(), buckets + 1)
    bucket = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, buckets - 1)
    reduced = middle.groupby(bucket, sort=True).max()
    return pd.concat([frame.iloc[:1], reduced, frame.iloc[-1:]], ignore_index=True)


def load_attempts(meta_dir: Path, task: int, ended: bool = False) -> list[dict[str, Any]]:
    """Every attempt of the task, oldest first, ending with the current one.

    Each is its summary with ``attempt`` and ``status`` filled in: an archived attempt without a readable
    summary is ``interrupted``; a current attempt without one is ``running`` (only listed when its logs exist),
    or ``interrupted`` when the launch that ran it has ``ended``.
    """
    _checked(task, None)
    meta = Path(meta_dir)
    found: list[dict[str, Any]] = []
    numbers = _attempt_numbers(str(meta / "attempts" / f"task-{task}"))
    for number in numbers:
        summary = _json_object(str(_task_file(meta, task, "summary.json", number)))
        record: dict[str, Any] = dict(summary) if summary else {}
        record.setdefault("attempt", number)
        record["status"] = _status(summary, False, True, True) if summary else "interrupted"
        found.append(record)
    summary = _json_object(str(_task_file(meta, task, "summary.json", None)))
    next_number = (numbers[-1] if numbers else 0) + 1
    if summary is not None:
        record = dict(summary)
        record.setdefault("attempt", next_number)
        record["status"] = _status(summary, False, True, True)
        found.append(record)
    elif (_task_file(meta, task, "stdout.txt", None).exists()
          or _has_usage_rows(str(_task_file(meta, task, "usage.csv", None)))):
        found.append({"attempt": next_number, "status": "interrupted" if ended else "running"})
    return found


def read_log_tail(meta_dir: Path, task: int, stream: str, max_bytes: int = 64 * 1024,
                  attempt: int | None = None) -> tuple[str, bool]:
    """The last ``max_bytes`` of the task's stdout or stderr (undecodable bytes replaced), and whether it was cut.

    Only ``task-N-stdout.txt``/``task-N-stderr.txt`` in meta_dir (or an attempt's ``stdout.txt``/``stderr.txt``)
    can be read: the stream name and numbers are checked. A missing log is empty.
    """
    if stream not in STREAMS:
        raise InputError("stream", f"expected stdout or stderr, got {stream!r}")
    _checked(task, attempt)
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
        raise InputError("max_bytes", f"expected a non-negative integer, got {max_bytes!r}")
    path = _task_file(meta_dir, task, f"{stream}.txt", attempt)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            truncated = size > max_bytes
            if truncated:
                handle.seek(size - max_bytes)
            data = handle.read(max_bytes)
    except OSError:
        return "", False
    return data.decode("utf-8", errors="replace"), truncated
