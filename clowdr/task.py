"""The original tool's ``clowdr.task.TaskHandler``: run one task file here, with full provenance.

``TaskHandler(taskfile, **kwargs)`` runs the task as it is made (the original's ``__init__`` called
``manageTask``), through ``clowdr task``'s code (``clowdr.handrun``): the record goes to the task's own run as
a new attempt, and the launch is recorded in its ``run.json``. What the original kept on the handler stays
there: ``task_id``, ``output`` (``stdout``, ``stderr``, ``exit_code``) and ``cpu_ram_usage`` (a pandas table of
``time``, ``cpu``, ``ram``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clowdr.errors import InputError, NotAvailableError
from clowdr.provenance import TASK_FILE


@dataclass
class TaskOutput:
    """What the tool printed and how it exited (the original's Boutiques execution result)."""

    stdout: str
    stderr: str
    exit_code: int | None


class TaskHandler:
    """One task file run here: its summary in ``summary``, its outputs in ``output`` and ``cpu_ram_usage``."""

    def __init__(self, taskfile: str, **kwargs: Any) -> None:
        self.manageTask(taskfile, **kwargs)

    def manageTask(self, taskfile: str, provdir: str | None = None, verbose: bool = False, **kwargs: Any) -> None:
        """Run the task of ``taskfile`` (``workdir`` and ``volumes`` as ``clowdr task`` takes them).

        ``provdir`` was the original's staging directory for files copied from S3; records now always go to
        the task's own run, so it is accepted and not needed. ``local`` is accepted likewise.
        """
        from clowdr.handrun import run_task_files

        if str(taskfile).startswith("s3://"):
            raise NotAvailableError(f"{taskfile}: task files on S3 need the cloud back-end, not available yet in "
                                    "this version of clowdr")
        match = TASK_FILE.match(Path(taskfile).name)
        if not match:
            raise InputError(str(taskfile), "not a task file (expected a file named task-N.json)")
        self.task_id = match.group(1)
        done = run_task_files([str(taskfile)], workdir=kwargs.get("workdir"), volumes=kwargs.get("volumes"),
                              command=["clowdr.task.TaskHandler", str(taskfile)])
        meta = done.run.meta
        index = int(self.task_id)
        self.localtaskdir = str(meta)
        self.summary: dict[str, Any] = _read(meta / f"task-{index}-summary.json")
        self.output = TaskOutput(_text(meta / f"task-{index}-stdout.txt"), _text(meta / f"task-{index}-stderr.txt"),
                                 self.summary.get("exitcode"))
        self.cpu_ram_usage = _usage(meta / f"task-{index}-usage.csv")


def _read(path: Path) -> dict[str, Any]:
    from clowdr.provenance import read_json

    summary = read_json(path)
    return summary if isinstance(summary, dict) else {}


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _usage(path: Path) -> Any:
    import pandas as pd

    table = pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame(columns=["time", "cpu", "ram"])
    return table.reindex(columns=["time", "cpu", "ram"])
