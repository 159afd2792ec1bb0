"""The back-end interface: what a place to run tasks must say, declared in a few attributes and small hooks.

A back-end starts the Dask cluster the tasks run on, and knows the scheduler behind it: what it refuses
(checked before anything is written), what a worker job looks like (``--setup``), why a worker vanished, and,
on the worker itself, which job it is and how long it may still run. Nothing else in clowdr names a
scheduler: engine, monitor, worker and share ask the back-end.
"""
from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from clowdr.protocol import Failure, TaskSpec


@dataclass
class ClusterRequest:
    """What a launch asks of its back-end."""

    clusterargs: str | None = None                             # --clusterargs, k:v,k:v
    jobname: str | None = None                                 # --jobname
    resources: dict[str, Any] = field(default_factory=dict)    # the descriptor's suggested-resources
    groups: int = 1                                            # task groups to run: caps the worker jobs
    submits: bool = True                                       # False: --setup, nothing will be submitted
    cloud: Any = None                                          # a cloud back-end's context (backends.cloud)
    run_id: str | None = None                                  # set once the run exists, before start()


class Backend(ABC):
    """One place to run tasks. Subclasses declare ``name`` and implement ``start``; the rest has defaults."""

    #: the value of ``--cluster`` (and the section of ``configs/clowdr.yaml`` holding its settings)
    name: ClassVar[str]
    #: a command that must be on PATH to submit anything (checked unless nothing will be submitted)
    submit_command: ClassVar[str | None] = None
    #: whether worker jobs leave logs of their own, kept in ``<run>/clowdr/<name>/`` on a shared filesystem
    keeps_job_logs: ClassVar[bool] = False

    def __init__(self, request: ClusterRequest | None = None) -> None:
        self.request = request or ClusterRequest()

    def setting(self, key: str) -> Any:
        from clowdr import config

        return config.get(f"{self.name}.{key}")

    @property
    def shared_filesystem(self) -> bool:
        """Whether workers see the client's files: if not, tasks run in worker scratch space and only the client
        writes the provenance directory."""
        return bool(self.setting("shared-filesystem"))

    def task_memory(self) -> int | None:
        """Bytes each task may use (None: no limit); an attempt killed for its memory runs again with more."""
        return None

    def placement(self, specs: list[TaskSpec]) -> dict[str, Any]:
        """Extra Dask submit arguments for a parcel of ``specs``: where it may run (e.g. a worker job with the
        memory its tasks ask for); ``{}``: anywhere."""
        return {}

    def slots(self) -> int:
        """Tasks the back-end runs at once at most (its workers' threads): the monitor keeps enough work in Dask
        for each of them (``clowdr.parcels``)."""
        return 1

    def requested(self) -> dict[str, int | None]:
        """What each task was asked to fit in, for the record (run.json): CPUs, memory in bytes, walltime in
        seconds; None where the back-end asks for nothing."""
        return {"cpus": None, "memory": self.task_memory(), "walltime": None}

    @property
    def retire_margin(self) -> float | None:
        """Seconds before its walltime at which a worker job stops taking tasks (None: no walltime)."""
        return None

    def check(self) -> None:
        """Refuse, with an InputError, what the scheduler would refuse; called before anything is written."""
        import shutil

        from clowdr.errors import InputError

        if self.request.submits and self.submit_command and not shutil.which(self.submit_command):
            raise InputError("--cluster", f"{self.name}: '{self.submit_command}' is not on PATH (run clowdr where "
                                          f"jobs can be submitted, or use --setup to see the job script)")

    def prepare(self) -> None:
        """What must happen in the main thread before ``start`` runs in another (e.g. imports that set signals)."""

    @abstractmethod
    def start(self, log_directory: Path | None = None) -> Any:
        """Start the Dask cluster the tasks run on (called in a thread, while the run is recorded)."""

    def worker_descriptor(self, descriptor: dict[str, Any]) -> dict[str, Any]:
        """The descriptor as workers run it (a cloud back-end may run a container tool inside its own image)."""
        return descriptor

    def job_script(self) -> str | None:
        """What each worker job would run (``--setup``), or None where there are no worker jobs."""
        return None

    def submit_error(self) -> str | None:
        """Why the scheduler refuses worker jobs, once no task can run because of it (None: nothing refused)."""
        return None

    def refused_memory(self, memory: int) -> str | None:
        """Why no worker job will hold a task that needs ``memory`` bytes: the scheduler refused a job that big and
        took none as big (None: one may yet come)."""
        return None

    def explain_lost(self, job_id: str | None) -> tuple[Failure, str] | None:
        """Why the worker job ``job_id`` vanished, from the scheduler: a failure class and a reason."""
        return None

    # -- on the worker ------------------------------------------------------------------------------------
    @classmethod
    def worker_job_id(cls) -> str | None:
        """The scheduler's id of the job this worker runs in (None outside a batch job)."""
        return None

    @classmethod
    def worker_seconds_left(cls) -> float | None:
        """Seconds before this worker's job reaches its walltime (set by the job script; None: no limit)."""
        started, walltime = os.environ.get(STARTED_VARIABLE), os.environ.get(WALLTIME_VARIABLE)
        if not started or not walltime:
            return None
        return float(started) + float(walltime) - time.time()


# Exported by a worker job's script: when the job started and its walltime, for ``worker_seconds_left``.
STARTED_VARIABLE = "CLOWDR_JOB_STARTED"
WALLTIME_VARIABLE = "CLOWDR_WALLTIME_SECONDS"
