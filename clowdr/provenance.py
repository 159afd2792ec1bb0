"""The provenance directory: the original tool's layout and file names, richer content, atomic writes.

    <provdir>/<YYYY-mm-dd_HH-MM-SS>-<8 chars>/clowdr/
        run.json, <descriptor copy>, <invocation copies>, task-N.json,
        task-N-summary.json, task-N-usage.csv, task-N-stdout.txt, task-N-stderr.txt   (the current attempt)
        attempts/task-N/attempt-K/{summary.json, usage.csv, stdout.txt, stderr.txt}   (earlier attempts)
    <provdir>/<run id>/work/task-N/      (default working directory of task N)

Every JSON and CSV file is written whole before it gets its name (``write_atomic``), so a reader (``share``,
``--rerun``) never sees half a file, whatever crashes. Paths written by another machine are never trusted: files are
found by name relative to the directory being read.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import random
import re
import string
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from clowdr.errors import InputError, RecordError
from clowdr.plan import TaskPlan, read_file
from clowdr.protocol import Event, LogChunk, TaskSpec, Usage
from clowdr.sampling import COLUMNS
from clowdr.timestamps import iso

RUN_ID = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}-[A-Z0-9]{8}$")
TASK_FILE = re.compile(r"^task-(\d+)\.json$")
RESERVED = re.compile(r"^(task-\d+.*|run\.json|plan\.json|clowdr-summary\.json)$")
PLAN_HEAD = '{"tasks": [\n'                         # plan.json's first line; a task per line follows
LOG_KINDS = ("summary.json", "usage.csv", "stdout.txt", "stderr.txt")
# Keys of the original tool's task-N-summary.json: always present, even for a task that never started.
ORIGINAL_KEYS: dict[str, Any] = {"duration": None, "exitcode": None, "launchtime": None, "outputs": []}


def new_run_id() -> str:
    """``YYYY-mm-dd_HH-MM-SS-XXXXXXXX`` as the original tool names runs."""
    suffix = "".join(random.SystemRandom().choices(string.ascii_uppercase + string.digits, k=8))
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-{suffix}"


@contextlib.contextmanager
def recording(path: Path | str) -> Iterator[None]:
    """A failed write of the record (ENOSPC, EROFS, EACCES, ...) is a RecordError naming the file."""
    try:
        yield
    except OSError as exc:
        raise RecordError(path, exc) from None


def write_atomic(path: Path | str, data: str | bytes | Iterable[str]) -> None:
    """Write a whole file (given whole, or as pieces of text written as they come), then give it its name: a
    reader sees the whole file or none (or its earlier content).

    Every byte is written (a full disk may take only part of a write) before the file gets its name. Where the
    filesystem has unnamed files (``O_TMPFILE``: ext4, xfs, btrfs, tmpfs) a new file is written unnamed and
    linked into place, which costs what creating a file in place does and leaves nothing behind whatever
    happens; a file that exists already, or a filesystem without them (NFS), takes a temporary name
    in the same directory that is renamed over it, removed on any failure.
    """
    directory, name = os.path.split(path)
    directory = directory or "."
    text = [data] if isinstance(data, (str, bytes)) else data
    with recording(path):
        fd = _unnamed(directory)
        if fd is None:
            tmp = _temporary_name(directory, name)
            _renamed(tmp, path, lambda: _write_new(tmp, text))
            return
        try:
            _write_all(fd, text)
            try:
                _link(fd, path)
            except FileExistsError:
                tmp = _temporary_name(directory, name)
                _renamed(tmp, path, lambda: _link(fd, tmp))
        finally:
            os.close(fd)


def _temporary_name(directory: str, name: str) -> str:
    return f"{directory}/.{name}.{os.getpid()}.{random.randrange(1 << 30)}.tmp"


#: ``open()`` flags of an unnamed file in a directory, where this system has them (the kernel may still refuse)
_UNNAMED = os.O_WRONLY | os.O_TMPFILE if hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd") else None
_proc_fd_dir: tuple[int, int] | None = None     # (pid, descriptor of /proc/<pid>/fd); two threads may both open it


def _unnamed(directory: str) -> int | None:
    """A new unnamed file in ``directory``, or None where its filesystem has none."""
    if _UNNAMED is None:
        return None
    try:
        return os.open(directory, _UNNAMED, 0o644)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise


def _link(fd: int, path: Path | str) -> None:
    """Name an unnamed file (FileExistsError if the name is taken) through this process's ``/proc/<pid>/fd``,
    opened once per process: linkat with AT_SYMLINK_FOLLOW there needs no privilege, unlike AT_EMPTY_PATH."""
    global _proc_fd_dir
    if _proc_fd_dir is None or _proc_fd_dir[0] != os.getpid():
        _proc_fd_dir = (os.getpid(), os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    os.link(str(fd), path, src_dir_fd=_proc_fd_dir[1], follow_symlinks=True)


def _renamed(tmp: str, path: Path | str, make: Callable[[], None]) -> None:
    """Make the whole file under the temporary name ``tmp`` (same directory), then rename it over ``path``; on
    any failure ``tmp`` is removed (unless it was taken already: then it is not ours) and ``path`` untouched."""
    try:
        make()
        os.replace(tmp, path)
    except BaseException as exc:
        if not isinstance(exc, FileExistsError):
            with contextlib.suppress(OSError):
                os.remove(tmp)
        raise


def _write_new(path: str, data: Iterable[str | bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, pieces: Iterable[str | bytes], chunk: int = 1 << 20) -> None:
    """Every byte, in writes of about ``chunk`` bytes."""
    pending = bytearray()
    for piece in pieces:
        pending += piece.encode() if isinstance(piece, str) else piece
        if len(pending) >= chunk:
            _write_bytes(fd, bytes(pending))
            pending.clear()
    _write_bytes(fd, bytes(pending))


def _write_bytes(fd: int, data: bytes) -> None:
    """A full disk may take only part of one write: the rest is written (or the error raised) after it."""
    left = memoryview(data)
    while left:
        left = left[os.write(fd, left):]


#: one encoder for every record (``json.dumps`` with an option builds a new one per call: a summary has ~40 values)
_encode = json.JSONEncoder(default=str).encode
_encode_string = json.encoder.encode_basestring_ascii


def _encode_value(value: Any) -> str:
    """What ``_encode`` gives, sooner for the scalars most values are (it sets up the C encoder for each one)."""
    kind = type(value)
    if kind is str:
        return _encode_string(value)
    if value is None:
        return "null"
    if kind is int:
        return int.__repr__(value)
    if kind is float and value - value == 0:           # finite: json writes nan and infinities its own way
        return float.__repr__(value)
    return _encode(value)


_key_texts: dict[str, str] = {}


def _key_text(key: Any) -> str:
    """``  "key": `` -- records share their keys: each is encoded once (up to a few thousand of them)."""
    text = _key_texts.get(key) if type(key) is str else None
    if text is None:
        text = f"  {_encode_string(str(key))}: "
        if type(key) is str and len(_key_texts) < 4096:
            _key_texts[key] = text
    return text


def write_json(path: Path | str, data: Any) -> None:
    """An object is written a key per line, each value on its line: as readable as an indented file for the
    flat records clowdr keeps (a usage series stays one line instead of one number per line), and written by
    json's C encoder, which ``indent`` turns off (a 100,000-task --setup spent a fifth of its time indenting)."""
    if isinstance(data, dict) and data:
        text = "{\n" + ",\n".join([_key_text(key) + _encode_value(value) for key, value in data.items()]) + "\n}\n"
    else:
        text = _encode(data) + "\n"
    write_atomic(path, text)


def read_json(path: Path) -> Any | None:
    """A JSON file, or None when it is absent or unreadable (a partial run is a normal thing to read)."""
    return _read_json_at(str(path))


def _read_json_at(path: str) -> Any | None:
    try:
        return json.loads(read_file(path))
    except (OSError, ValueError):
        return None


def usage_csv(rows: Iterable[Iterable[Any]]) -> str:
    return ",".join(COLUMNS) + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows)


@dataclass
class TaskRecord:
    """What the directory says about one task (ours or the original tool's); its task file is read when asked
    for (choosing what to rerun needs only the summaries)."""

    index: int
    meta: str                     # the task file's directory and name: strings, a Path per task costs --rerun time
    name: str
    summary: dict[str, Any] | None

    @property
    def path(self) -> Path:
        return Path(f"{self.meta}/{self.name}")

    @cached_property
    def definition(self) -> dict[str, Any]:
        definition = read_json(self.path)
        if not isinstance(definition, dict):
            raise InputError(str(self.path), "task file is not a JSON object")
        return definition


class RunDir:
    """One run: ``<provdir>/<run id>``, its ``clowdr/`` metadata directory and its task working directories."""

    def __init__(self, root: Path, meta: Path | None = None) -> None:
        self.root = root
        self.meta = meta or root / "clowdr"
        self.run_id = root.name

    @classmethod
    def of_meta(cls, meta: Path) -> "RunDir":
        """The run whose metadata directory is ``meta`` (``clowdr/`` in every layout we write)."""
        return cls(meta.parent, meta)

    # -- creating and opening -------------------------------------------------------------------
    @classmethod
    def create(cls, provdir: str | Path) -> "RunDir":
        base = existing_provdir(provdir)
        while True:
            run = cls(base / new_run_id())
            try:
                with recording(run.meta):
                    run.meta.mkdir(parents=True)
                return run
            except RecordError as exc:
                if not isinstance(exc.error, FileExistsError):
                    raise

    @classmethod
    def open(cls, provdir: str | Path, run_id: str) -> "RunDir":
        base = existing_provdir(provdir)
        run = cls(base / run_id)
        if not run_id or "/" in run_id or run_id in (".", "..") or not run.meta.is_dir():
            raise InputError("--run_id", f"no run '{run_id}' in {base} (expected a directory {base}/{run_id}/clowdr)")
        return run

    # -- file names -----------------------------------------------------------------------------
    def task_file(self, n: int) -> Path:
        return self.meta / f"task-{n}.json"

    def file(self, n: int, kind: str) -> Path:
        """``task-N-summary.json``, ``task-N-usage.csv``, ``task-N-stdout.txt`` or ``task-N-stderr.txt``."""
        return self.meta / f"task-{n}-{kind}"

    def default_workdir(self, n: int) -> str:
        return f"{self.root}/work/task-{n}"

    @cached_property
    def _meta(self) -> str:
        """``meta`` as a string: what is written per task is named with strings (a Path each costs --setup)."""
        return str(self.meta)

    def attempts_dir(self, n: int) -> Path:
        return self.meta / "attempts" / f"task-{n}"

    # -- writing ----------------------------------------------------------------------------------
    def write_run(self, data: dict[str, Any]) -> None:
        write_json(self.meta / "run.json", data)

    def read_run(self) -> dict[str, Any]:
        return read_json(self.meta / "run.json") or {}

    def begin_launch(self, launch: dict[str, Any], tool: str, descriptor: str, total: int) -> None:
        """Append a launch to run.json (created for a new run, or for an original-tool run that has none)."""
        launch = dict(launch, start=iso(time.time()), end=None, versions=versions(), client=this_client())
        data = self.read_run() or {"run_id": self.run_id, "tool": tool, "descriptor": descriptor,
                                   "start": launch["start"], "end": None, "launches": []}
        data.update({k: launch[k] for k in ("command", "options", "cluster", "versions")}, tasks=total)
        data["launches"].append(launch)
        self.write_run(data)

    def end_launch(self, status: str, succeeded: int, failed: int) -> None:
        data = self.read_run()
        now = iso(time.time())
        data["end"] = now
        data["launches"][-1].update(end=now, status=status, succeeded=succeeded, failed=failed)
        self.write_run(data)

    def copy_descriptor(self, source: Path, descriptor: dict[str, Any]) -> Path:
        target = self.meta / source.name
        write_json(target, descriptor)
        return target

    def write_task(self, n: int, definition: dict[str, Any]) -> None:
        write_json(self.task_file(n), definition)

    def record_task(self, task: TaskPlan, descriptor: str, workdir: str | None) -> None:
        """A task's own files: its invocation copy, then task-N.json (the original keys)."""
        invocation_copy = f"{self._meta}/{task.invocation_name}"
        write_json(invocation_copy, task.invocation)
        self.write_task(task.index, {"tool": f"{self._meta}/{descriptor}", "invocation": invocation_copy,
                                     "dataloc": task.dataloc, "taskloc": workdir})

    def write_plan(self, lines: Iterable[str]) -> None:
        """Every task of the run in one file (``TaskPlan.line`` each), written before any of them runs: one JSON
        object, a task per line, so that it is written and read a line at a time (a 100,000-task plan is never one
        string)."""
        write_atomic(self.meta / "plan.json", itertools.chain(
            [PLAN_HEAD], (line if number == 0 else ",\n" + line for number, line in enumerate(lines)), ["\n]}\n"]))

    def planned_tasks(self) -> Iterator[TaskPlan]:
        """The tasks of the plan, one at a time (none if the run has no plan)."""
        try:
            handle = open(self.meta / "plan.json", encoding="utf-8")
        except OSError:
            return
        with handle:
            if handle.readline() == PLAN_HEAD:
                yield from (TaskPlan.of_line(line) for line in handle if line.startswith("["))
                return
            handle.seek(0)                                   # not a task per line: read whole
            try:
                plan = json.loads(handle.read())
            except ValueError:
                return
            entries = plan.get("tasks") or [] if isinstance(plan, dict) else []
            yield from (TaskPlan.of_entry(entry) for entry in entries)

    def unrecorded_tasks(self, recorded: set[int]) -> list[TaskPlan]:
        """The tasks of the plan that have no task file (their recording was cut short)."""
        return [task for task in self.planned_tasks() if task.index not in recorded]

    def write_summary(self, n: int, summary: dict[str, Any]) -> None:
        write_json(self.file(n, "summary.json"), summary)

    def write_usage(self, n: int, rows: list[list[Any]]) -> None:
        write_atomic(self.file(n, "usage.csv"), usage_csv(rows))

    def append_usage(self, n: int, rows: list[list[Any]]) -> None:
        """Grow a running task's usage file: whole lines in one write, the header first."""
        path = self.file(n, "usage.csv")
        text = "".join(",".join(str(v) for v in row) + "\n" for row in rows)
        with recording(path), open(path, "a") as handle:
            if handle.tell() == 0:
                text = ",".join(COLUMNS) + "\n" + text
            handle.write(text)

    def append_log(self, n: int, stream: str, offset: int, data: bytes) -> None:
        """Grow a running task's stdout or stderr with the bytes a worker sent from ``offset`` (chunks come in
        order; one already written, as after a resent message, is not written twice)."""
        path = self.file(n, f"{stream}.txt")
        with recording(path), open(path, "ab") as handle:
            end = handle.tell()
            if offset + len(data) <= end:
                return
            handle.write(data[end - offset:] if offset < end else data)

    def record_progress(self, event: Event) -> None:
        """What a running task's events add to its files: usage rows and log bytes."""
        if isinstance(event, Usage):
            self.append_usage(event.task, event.rows)
        elif isinstance(event, LogChunk):
            self.append_log(event.task, event.stream, event.offset, event.data)

    def write_attempt(self, n: int, record: dict[str, Any], submit_time: float | None,
                      history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Write the usage series and the summary of a finished attempt (atomically, usage first); return the
        summary. ``history`` says how earlier attempts of the same launch ended."""
        record = dict(record)
        prefix = f"{self._meta}/task-{n}-"          # strings: this runs for every task, in the client
        write_atomic(prefix + "usage.csv", usage_csv(record.pop("usage", [])))
        summary = dict(ORIGINAL_KEYS)
        summary.update(record)
        summary.update(submit_time=iso(submit_time) if submit_time else summary.get("start_time"),
                       stdout=prefix + "stdout.txt", stderr=prefix + "stderr.txt", usage=prefix + "usage.csv")
        if history:
            summary["previous_attempts_ended"] = list(history)
        for path in (summary["stdout"], summary["stderr"]):
            if not os.path.exists(path):
                with recording(path):
                    open(path, "ab").close()
        write_json(prefix + "summary.json", summary)
        return summary

    def write_lost_attempt(self, n: int, ended: dict[str, Any], submit_time: float) -> None:
        """The summary of an attempt whose worker vanished, before the task runs again (then archived with it)."""
        self.write_summary(n, dict(ORIGINAL_KEYS, task=n, status="failed", submit_time=iso(submit_time), **ended))

    def task_spec(self, n: int, attempt: int, invocation: dict[str, Any], workdir: str | None,
                  shared: bool, memory: int | None = None) -> TaskSpec:
        """What a worker needs to run attempt ``attempt`` of task N; on a shared filesystem it writes the
        task's logs in place, elsewhere it streams them here."""
        logs = (f"{self._meta}/task-{n}-stdout.txt", f"{self._meta}/task-{n}-stderr.txt") if shared else None
        return TaskSpec(n, attempt, invocation, workdir, logs, memory,
                        workdir_of_all=workdir is not None and workdir != self.default_workdir(n))

    # -- attempts -------------------------------------------------------------------------------
    def next_attempt(self, n: int) -> int:
        """Move the task's current files (if any) into its attempt history; return the new attempt number."""
        history = self.attempts_dir(n)
        archived = [int(p.name.split("-")[1]) for p in history.glob("attempt-*") if p.name.split("-")[1].isdigit()]
        last = max(archived, default=0)
        summary = read_json(self.file(n, "summary.json"))
        present = [kind for kind in LOG_KINDS if self.file(n, kind).exists()]
        if not present:
            return last + 1
        current = int(summary.get("attempt", last + 1)) if isinstance(summary, dict) else last + 1
        current = max(current, last + 1)
        target = history / f"attempt-{current}"
        with recording(target):
            target.mkdir(parents=True, exist_ok=True)
            for kind in present:
                os.replace(self.file(n, kind), target / kind)
        return current + 1

    # -- reading (ours or the original tool's) ----------------------------------------------------
    def tasks(self) -> list[TaskRecord]:
        """Every task of the run, in task order, with its current summary if it has one."""
        meta = str(self.meta)
        names = set(os.listdir(meta))
        records = []
        for name in names:
            match = TASK_FILE.match(name)
            if not match:
                continue
            n = int(match.group(1))
            summary_name = f"task-{n}-summary.json"
            # plain strings, not Path objects: a 10,000-task run reads 10,000 summaries to choose what to rerun
            summary = _read_json_at(f"{meta}/{summary_name}") if summary_name in names else None
            records.append(TaskRecord(n, meta, name, summary if isinstance(summary, dict) else None))
        return sorted(records, key=lambda r: r.index)

    def local_copy(self, recorded_path: str, field: str, where: Path) -> Path:
        """A path recorded by (possibly) another machine, found by its name in this run's metadata directory."""
        candidate = self.meta / Path(recorded_path).name
        if candidate.is_file():
            return candidate
        raise InputError(str(where), f"field '{field}': {Path(recorded_path).name} is not in {self.meta}")


def unique_name(wanted: str, taken: set[str]) -> str:
    """A file name for an invocation copy that clashes with nothing clowdr writes (nor with ``taken``, which gets
    it)."""
    name, number = wanted, 0
    while name in taken or RESERVED.match(name):
        number += 1
        name = f"invocation-{number}-{wanted}"
    taken.add(name)
    return name


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for package in ("clowdr", "boutiques", "dask", "distributed"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found



def this_client() -> dict[str, Any]:
    """What identifies the process writing a launch: a reader can tell whether it still runs."""
    import psutil

    return {"host": _hostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def launch_over(launch: dict[str, Any]) -> bool:
    """Whether a launch has ended: recorded so, or its client, on this host, is no longer running (a client
    killed with SIGKILL writes nothing more, and its tasks are then interrupted, not running)."""
    if launch.get("end"):
        return True
    client = launch.get("client")
    if not isinstance(client, dict) or client.get("host") != _hostname():
        return False                     # another machine's client, or an older record: assume it runs
    import psutil

    try:
        return abs(psutil.Process(int(client["pid"])).create_time() - float(client["started"])) > 1.0
    except (psutil.Error, KeyError, TypeError, ValueError):
        return True


def _hostname() -> str:
    import socket

    return socket.gethostname()


def existing_provdir(provdir: str | Path) -> Path:
    path = Path(provdir).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(str(provdir), "the provenance directory is a file, not a directory")
    if not path.is_dir():
        raise InputError(str(provdir), "provenance directory does not exist (create it first)")
    return path.resolve()


def writable_provdir(provdir: str | Path) -> None:
    """A launch writes its record here: refused before anything starts if it cannot."""
    path = existing_provdir(provdir)
    if not os.access(path, os.W_OK | os.X_OK):
        reason = "a read-only file system" if _read_only(path) else "no write permission"
        raise InputError(str(provdir), f"the provenance directory cannot be written ({reason})")


def _read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def select_for_rerun(records: list[TaskRecord], mode: str) -> list[TaskRecord]:
    """all; failed (a summary whose status is failed or exit code non-zero); incomplete (no summary yet)."""
    if mode == "all":
        return records
    if mode == "failed":
        return [r for r in records if r.summary is not None and _failed(r.summary)]
    if mode == "incomplete":
        return [r for r in records if r.summary is None]
    raise InputError("--rerun", f"unknown mode '{mode}' (all, failed or incomplete)")


def _failed(summary: dict[str, Any]) -> bool:
    if "status" in summary:
        return summary["status"] != "succeeded"
    return summary.get("exitcode") != 0
