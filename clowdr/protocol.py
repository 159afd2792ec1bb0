"""What crosses between the client and a worker: the task spec, the events, and the failure classes.

Everything here travels as plain msgpack-able dicts (Dask events must be msgpack serialisable), built and
read only through these classes, so worker and monitor agree on one shape. A task spec holds no path of the
client's: where the back-end shares the client's filesystem it may name the files the worker writes its
logs into directly (``shared_logs``); otherwise the worker runs the task in scratch space of its own and
streams the logs back as ``LogChunk`` events, and only the client writes the provenance directory.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar


class Failure(str, Enum):
    """Why an attempt failed: one class per attempt, the same on every back-end and in every report."""

    TOOL_ERROR = "tool-error"              # the tool exited with a non-zero code
    SIGNAL = "signal"                      # the tool was killed by a signal
    OUT_OF_MEMORY = "out-of-memory"        # the kernel or the scheduler killed it for its memory
    WALLTIME = "walltime"                  # the scheduler's time limit ended the worker job running it
    WORKER_LOST = "worker-lost"            # the worker running it vanished (job deleted, node lost, ...)
    SETUP_ERROR = "setup-error"            # the tool could not be started
    MISSING_OUTPUT = "missing-output"      # the tool succeeded but a required output file is not there
    CONTAINER_ERROR = "container-error"    # the container engine failed (no engine, image, mount, daemon)
    STAGING_ERROR = "staging-error"        # input or output data could not be transferred
    SUBMIT_ERROR = "submit-error"          # the scheduler refused the worker job
    CANCELLED = "cancelled"                # the launch was stopped before the task finished

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RunContext:
    """What every task of a launch needs on a worker: sent once per launch, not with each group."""

    key: str                          # unique per launch: one CommandBuilder per launch and worker
    run_id: str
    topic: str                        # the Dask event topic the client listens on
    backend: str
    descriptor: dict[str, Any]
    container: dict[str, Any]         # clowdr.command.ContainerOptions
    sampling: dict[str, Any]
    retire_margin: float | None       # seconds before a worker job's walltime it stops taking tasks
    scratch: str | None               # base of scratch directories (None: the worker's temporary directory)
    log_chunk: int                    # bytes per log message, at most
    log_interval: float               # seconds between shipments of new log bytes
    earlier_attempt_wait: float       # seconds an attempt waits for an earlier one's processes to end
    job_signal_wait: float            # seconds a batch worker waits before recording a tool a signal ended

    @classmethod
    def of(cls, run_id: str, backend: str, descriptor: dict[str, Any], volumes: list[str], user: bool,
           simg: str | None, retire_margin: float | None = None) -> "RunContext":
        """A launch's context, settings read from clowdr's config."""
        import time

        from clowdr import config

        return cls(key=f"{run_id}/{time.time()}", run_id=run_id, topic=f"clowdr-{run_id}", backend=backend,
                   descriptor=descriptor, container=config.container_settings(volumes, user, simg),
                   sampling=config.sampling_settings(), retire_margin=retire_margin,
                   scratch=config.get("worker.scratch"), log_chunk=int(config.get("worker.log-chunk")),
                   log_interval=float(config.get("worker.log-interval")),
                   earlier_attempt_wait=float(config.get("worker.earlier-attempt-wait")),
                   job_signal_wait=float(config.get("worker.job-signal-wait")))


@dataclass(frozen=True)
class TaskSpec:
    """One attempt of one task, as a worker receives it."""

    task: int
    attempt: int
    invocation: dict[str, Any]
    workdir: str | None = None                  # a directory on the worker (--workdir, or shared); None: scratch
    shared_logs: tuple[str, str] | None = None  # stdout, stderr files the worker may write (shared filesystem)
    memory: int | None = None                   # bytes the tool may use, enforced by the worker (None: no limit)
    staging: dict[str, Any] | None = None       # data to stage in, where outputs go (clowdr.staging.Staging)
    workdir_of_all: bool = False                # workdir is every task's (--workdir), not this task's own

    def to_wire(self) -> dict[str, Any]:
        return {"task": self.task, "attempt": self.attempt, "invocation": self.invocation, "workdir": self.workdir,
                "shared_logs": self.shared_logs, "memory": self.memory, "staging": self.staging,
                "workdir_of_all": self.workdir_of_all}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "TaskSpec":
        logs = data.get("shared_logs")
        return cls(data["task"], data["attempt"], data["invocation"], data.get("workdir"),
                   tuple(logs) if logs else None, data.get("memory"), data.get("staging"),  # type: ignore[arg-type]
                   bool(data.get("workdir_of_all")))


@dataclass(frozen=True)
class Event:
    """Base of the events a worker sends while it runs a task (ordered: they share one stream)."""

    kind: ClassVar[str]
    task: int
    attempt: int

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.__dict__}


@dataclass(frozen=True)
class Started(Event):
    """The tool is about to start on this host, worker and (for a batch back-end) job."""

    kind: ClassVar[str] = "start"
    start_time: str = ""
    hostname: str = ""
    worker: str = ""
    job_id: str | None = None


@dataclass(frozen=True)
class Usage(Event):
    """Usage rows (``sampling.COLUMNS``) taken since the last ones."""

    kind: ClassVar[str] = "usage"
    rows: list[list[Any]] = field(default_factory=list)


@dataclass(frozen=True)
class LogChunk(Event):
    """Bytes of the tool's stdout or stderr, from ``offset``: chunks arrive in order and are appended."""

    kind: ClassVar[str] = "log"
    stream: str = "stdout"
    offset: int = 0
    data: bytes = b""


@dataclass(frozen=True)
class Ended(Event):
    """The attempt's end record (every figure of the summary the worker knows); sent after its last chunk."""

    kind: ClassVar[str] = "end"
    record: dict[str, Any] = field(default_factory=dict)


EVENTS: dict[str, type[Event]] = {cls.kind: cls for cls in (Started, Usage, LogChunk, Ended)}
_FIELDS = {kind: frozenset(f.name for f in fields(cls)) for kind, cls in EVENTS.items()}


def event_from_wire(data: dict[str, Any]) -> Event:
    """The typed event behind a wire dict (keys it does not know, as from a newer worker, are ignored)."""
    kind = data["kind"]
    known = _FIELDS[kind]
    return EVENTS[kind](**{k: v for k, v in data.items() if k in known})
