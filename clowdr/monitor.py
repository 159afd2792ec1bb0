"""The client-side monitor: streams what workers report into the provenance directory as it happens.

Workers send Dask events (task started, usage rows, task ended); future callbacks say when a group's
future is over. Both land in one queue that a single loop drains, so the Dask event loop is never
blocked by file I/O and every provenance write happens in one place. A group whose worker vanished is
resubmitted (new attempt number, earlier attempt archived) up to the configured limit.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from clowdr.clusters import lost_job_reason
from clowdr.errors import ClowdrError
from clowdr.progress import Progress
from clowdr.provenance import RunDir
from clowdr.timestamps import iso
from clowdr.worker import run_group

log = logging.getLogger("clowdr")
MAX_REQUEUES = 20   # a task never started may go back to the queue this often (workers retiring, lost)
# Keys of the original tool's task-N-summary.json: always present, even for a task that never started.
ORIGINAL_KEYS: dict[str, Any] = {"duration": None, "exitcode": None, "launchtime": None, "outputs": []}


class LaunchStopped(ClowdrError):
    """The launch was stopped by its owner (``RunHandle.cancel``) before every task had finished."""


@dataclass
class TaskState:
    """A task as the monitor sees it."""

    index: int
    spec: dict[str, Any]
    submit_time: float = 0.0
    slurm_job_id: str | None = None     # the worker job running the current attempt, once it started
    started: bool = False               # the current attempt's tool has been started
    requeued: int = 0                   # times it went back to the queue without ever starting
    summary: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)   # how earlier attempts of this launch ended

    @property
    def attempt(self) -> int:
        return int(self.spec["attempt"])


class Monitor:
    """Submits task groups, records their results, resubmits lost ones; ``run()`` returns when all are final."""

    def __init__(self, run: RunDir, client: Any, context: dict[str, Any], groups: Iterator[list[TaskState]],
                 total: int, progress: Progress, worker_lost_retries: int, refresh: float,
                 stop: threading.Event | None = None) -> None:
        self.run = run
        self.client = client
        self.context = context
        self.groups = groups
        self.progress = progress
        self.retries = worker_lost_retries
        self.refresh = refresh
        self.tasks: dict[int, TaskState] = {}
        self.stop = stop or threading.Event()
        self.queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._context_future: Any = None
        self._futures: dict[str, Any] = {}
        self._ready: list[list[TaskState]] = []
        self._submitted = 0
        self.running: set[int] = set()
        self.remaining = total
        self.succeeded = self.failed = 0

    # -- Dask side: only enqueue, never block the event loop ------------------------------------
    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        self.queue.put(("event", event[1]))

    def _on_done(self, future: Any) -> None:
        self.queue.put(("done", future))

    # -- submission -----------------------------------------------------------------------------
    def start(self) -> None:
        self.client.subscribe_topic(self.context["topic"], self._on_event)
        # One task holds what every group needs (descriptor, settings): sent once, not with every group, and,
        # unlike a scatter, it needs no worker to exist yet (SLURM worker jobs start when work is pending).
        self._context_future = self.client.submit(dict, self.context, key=f"clowdr-context-{self.run.run_id}",
                                                  pure=False)
        threading.Thread(target=self._record_groups, name="clowdr-recorder", daemon=True).start()

    def _record_groups(self) -> None:
        """Record the groups one by one (their files on disk first); each is handed to the loop when ready."""
        try:
            for group in self.groups:
                self.queue.put(("ready", group))
        except Exception as exc:  # e.g. the disk filled up: the loop stops the launch and reports it
            self.queue.put(("error", exc))

    def _submit(self, groups: list[list[TaskState]]) -> None:
        now = time.time()
        keys = []
        for group in groups:
            self._submitted += 1
            for task in group:
                task.submit_time = now
                self.running.discard(task.index)
            keys.append(f"clowdr-{self.run.run_id}-{self._submitted}-task-{group[0].index}-attempt-{group[0].attempt}")
        futures = self.client.map(run_group, [[t.spec for t in g] for g in groups], context=self._context_future,
                                  key=keys, pure=False)
        for future, group in zip(futures, groups):
            self._futures[future.key] = (future, group)
            future.add_done_callback(self._on_done)

    def cancel(self) -> None:
        """Withdraw every group not finished yet (the launch is being stopped)."""
        self.client.cancel([future for future, _ in self._futures.values()])
        self._futures.clear()

    # -- the loop ---------------------------------------------------------------------------------
    def run_until_done(self) -> None:
        next_draw = 0.0
        while self.remaining:
            if self.stop.is_set():
                raise LaunchStopped(f"stopped on request; {self.remaining} task(s) left without a summary")
            try:
                kind, item = self.queue.get(timeout=self.refresh)
            except queue.Empty:
                kind = "tick"
            if kind == "event":
                self._handle_event(item)
            elif kind == "done":
                self._handle_done(item)
            elif kind == "ready":
                self.tasks.update((t.index, t) for t in item)
                self._ready.append(item)
            elif kind == "error":
                raise ClowdrError(f"cannot record the run in {self.run.meta}: {item}") from item
            if self._ready and (self._submitted == 0 or self.queue.empty()):
                self._submit(self._ready)      # the first group at once, then whatever has accumulated
                self._ready = []
            if time.monotonic() >= next_draw:
                self.progress.update(self.succeeded, self.failed, len(self.running))
                next_draw = time.monotonic() + self.refresh
        self.progress.update(self.succeeded, self.failed, len(self.running))
        self.client.unsubscribe_topic(self.context["topic"])
        self.progress.close()

    def _finish(self, task: TaskState, record: dict[str, Any]) -> None:
        write_record(self.run, task, record)
        self.running.discard(task.index)
        self.remaining -= 1
        if task.summary and task.summary["status"] == "succeeded":
            self.succeeded += 1
        else:
            self.failed += 1

    def _current(self, message: dict[str, Any]) -> TaskState | None:
        task = self.tasks.get(message["task"])
        if task is None or task.attempt != message["attempt"] or task.summary is not None:
            return None
        return task

    def _handle_event(self, message: dict[str, Any]) -> None:
        task = self._current(message)
        if task is None:
            return
        if message["kind"] == "start":
            self.running.add(task.index)
            task.started = True
            task.slurm_job_id = message.get("slurm_job_id")
            log.info("task %d attempt %d started on %s", task.index, task.attempt, message["worker"])
        elif message["kind"] == "usage":
            self.run.append_usage(task.index, message["rows"])
        elif message["kind"] == "end":
            self._finish(task, message["record"])

    def _handle_done(self, future: Any) -> None:
        _, group = self._futures.pop(future.key)
        unrecorded = [t for t in group if t.summary is None and self.tasks[t.index] is t]
        if not unrecorded:
            return
        if future.status == "finished":
            for record in future.result():
                task = self._current(record)
                if task is not None:
                    self._finish(task, record)
            return
        failure, message = _classify(future)
        retry = []
        for task in unrecorded:
            if failure == "worker-lost" and not task.started and task.requeued < MAX_REQUEUES:
                task.requeued += 1       # its worker left before starting it (e.g. retiring): not an attempt
                retry.append(task)
                continue
            why = lost_job_reason(task.slurm_job_id) if failure == "worker-lost" else None
            task_failure, task_message = (why[0], f"{message}; {why[1]}") if why else (failure, message)
            if failure == "worker-lost" and len(task.history) < self.retries:
                log.warning("task %d attempt %d: %s; submitting it again", task.index, task.attempt, task_message)
                ended = {"attempt": task.attempt, "failure": task_failure, "error": task_message,
                         "slurm_job_id": task.slurm_job_id}
                task.history.append(ended)
                # the lost attempt's own summary goes into its place in the attempt history
                self.run.write_summary(task.index, dict(ORIGINAL_KEYS, task=task.index, status="failed",
                                                        submit_time=iso(task.submit_time), **ended))
                task.spec = dict(task.spec, attempt=self.run.next_attempt(task.index))
                task.slurm_job_id, task.started = None, False
                retry.append(task)
            else:
                self._finish(task, {"task": task.index, "attempt": task.attempt, "status": "failed",
                                   "failure": task_failure, "error": task_message, "exitcode": None,
                                   "slurm_job_id": task.slurm_job_id, "end_time": iso(time.time()),
                                   "usage": []})
        if retry:
            self._submit([retry])

def write_record(run: RunDir, task: TaskState, record: dict[str, Any]) -> None:
    """Write the usage series and the summary of a finished attempt (atomically, usage first)."""
    n = task.index
    rows = record.pop("usage", [])
    run.write_usage(n, rows)
    summary = dict(ORIGINAL_KEYS)
    summary.update(record)
    summary.update(
        submit_time=iso(task.submit_time) if task.submit_time else summary.get("start_time"),
        stdout=str(run.file(n, "stdout.txt")), stderr=str(run.file(n, "stderr.txt")),
        usage=str(run.file(n, "usage.csv")),
    )
    if task.history:
        summary["previous_attempts_ended"] = list(task.history)
    for name in ("stdout.txt", "stderr.txt"):
        path = run.file(n, name)
        if not path.exists():
            path.touch()
    run.write_summary(n, summary)
    task.summary = summary
    log.info("task %d attempt %d %s (exit code %s, %.3f s)", n, task.attempt, summary["status"],
             summary.get("exitcode"), summary.get("realtime") or 0.0)


def _classify(future: Any) -> tuple[str, str]:
    """One failure class for a group future that did not finish."""
    if future.status == "cancelled":
        return "cancelled", "the task was cancelled"
    exception = future.exception()
    name = type(exception).__name__
    if name == "KilledWorker":
        return "worker-lost", f"worker lost while the task ran ({exception})"
    return "clowdr-error", f"{name}: {exception}"
