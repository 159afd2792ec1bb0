"""The client-side monitor: streams what workers report into the provenance directory as it happens.

Workers send ``clowdr.protocol`` events (task started, usage rows, log chunks, task ended); future callbacks
say when a group's future is over. Both land in one queue that a single loop drains, so the Dask event loop
is never blocked by file I/O, and the client is the only writer of the provenance directory (through
``clowdr.provenance``). A group whose worker vanished is explained by the back-end and resubmitted (new
attempt number, earlier attempt archived) up to the configured limit.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

from clowdr import channel
from clowdr.backends import Backend
from clowdr.errors import LaunchStopped
from clowdr.parcels import Parcels, take
from clowdr.progress import Progress
from clowdr.protocol import Ended, Failure, RunContext, Started, TaskSpec, event_from_wire
from clowdr.provenance import RunDir
from clowdr.sampling import MIB
from clowdr.timestamps import iso

log = logging.getLogger("clowdr")
MAX_REQUEUES = 20   # a task never started may go back to the queue this often (workers retiring, lost)
#: what a summary's ``previous_attempts_ended`` says of each earlier attempt of the launch
HISTORY_KEYS = ("attempt", "failure", "error", "exitcode", "signal", "backend", "job_id", "start_time", "hostname",
                "worker", "memory_limit")


@dataclass
class TaskState:
    """A task as the monitor sees it."""

    spec: TaskSpec
    submit_time: float = 0.0
    started: Started | None = None      # where and when the current attempt's tool started
    requeued: int = 0                   # times it went back to the queue without ever starting
    finished: bool = False              # its last attempt is recorded (the monitor then forgets it)
    history: list[dict[str, Any]] = field(default_factory=list)   # how earlier attempts of this launch ended

    @property
    def index(self) -> int:
        return self.spec.task

    @property
    def attempt(self) -> int:
        return self.spec.attempt

    def ended(self, failure: Failure, error: str, backend: str) -> dict[str, Any]:
        """How the current attempt ended when no end record came from its worker."""
        where = self.started
        return {"attempt": self.attempt, "failure": str(failure), "error": error, "backend": backend,
                "job_id": where.job_id if where else None, "start_time": where.start_time if where else None,
                "hostname": where.hostname if where else None, "worker": where.worker if where else None}


@dataclass(frozen=True)
class RetryPolicy:
    """Which failed attempts run again, how often, and with how much memory."""

    retries: int                      # further attempts a task may have
    classes: frozenset[str]           # the failure classes that run again
    memory_growth: float = 2.0        # an out-of-memory attempt's successor gets this much more memory...
    max_memory: int = 0               # ...never more than this

    @classmethod
    def configured(cls, retries: int | None = None) -> "RetryPolicy":
        """From ``retries.*`` in the config; ``retries`` (--retries) overrides ``retries.max``."""
        from clowdr import config
        from clowdr.backends.jobqueue import bytes_of

        return cls(int(config.get("retries.max") if retries is None else retries),
                   frozenset(str(c) for c in config.get("retries.classes") or []),
                   float(config.get("retries.memory-growth")),
                   bytes_of(config.get("retries.max-memory"), "clowdr.retries.max-memory"))

    def next_spec(self, task: "TaskState", failure: str) -> TaskSpec | None:
        """The spec of the task's next attempt (number still to be given), or None: the failure is final."""
        if failure not in self.classes or len(task.history) >= self.retries:
            return None
        if failure != Failure.OUT_OF_MEMORY:
            return task.spec
        memory = task.spec.memory
        if memory is None or memory >= self.max_memory:
            return None                   # nothing to grow: it would fail the same way
        return replace(task.spec, memory=min(int(memory * self.memory_growth), self.max_memory))


class Monitor:
    """Submits task groups, records their results, resubmits lost ones; ``run()`` returns when all are final."""

    def __init__(self, run: RunDir, client: Any, context: RunContext, backend: Backend,
                 groups: Iterator[list[TaskState]], total: int, progress: Progress, policy: RetryPolicy,
                 refresh: float, parcels: Parcels, record_ahead: int, stop: threading.Event | None = None) -> None:
        self.run = run
        self.client = client
        self.context = context
        self.backend = backend
        self.groups = groups
        self.progress = progress
        self.policy = policy
        self.refresh = refresh
        self.parcels = parcels
        self.tasks: dict[int, TaskState] = {}
        self.stop = stop or threading.Event()
        self.queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._context_future: Any = None
        self._futures: dict[str, Any] = {}
        self._ready: deque[list[TaskState]] = deque()     # recorded groups not yet handed to Dask
        # The recorder stays at most record_ahead groups ahead of what Dask has been given: recording is faster
        # than running, and every recorded group waiting in memory would make the client grow with the run.
        self._room_ahead = threading.Semaphore(record_ahead)
        self._submitted = 0
        self.running: set[int] = set()
        self.remaining = total
        self.succeeded = self.failed = 0
        self.failures: dict[str, int] = {}
        self._refused: str | None = None     # the scheduler refuses worker jobs: tasks fail instead of waiting

    # -- Dask side: only enqueue, never block the event loop ------------------------------------
    def _on_event(self, message: dict[str, Any]) -> None:
        self.queue.put(("event", message))

    def _on_done(self, future: Any) -> None:
        self.queue.put(("done", future))

    # -- submission -----------------------------------------------------------------------------
    def start(self) -> None:
        channel.listen(self.client, self.context.topic, self._on_event)
        # One task holds what every group needs (descriptor, settings): sent once, not with every group, and,
        # unlike a scatter, it needs no worker to exist yet (batch worker jobs start when work is pending).
        self._context_future = self.client.submit(replace, self.context, key=f"clowdr-context-{self.run.run_id}",
                                                  pure=False)
        threading.Thread(target=self._record_groups, name="clowdr-recorder", daemon=True).start()

    def _record_groups(self) -> None:
        """Record the groups one by one (their files on disk first); each is handed to the loop when ready."""
        try:
            for group in self.groups:
                self.queue.put(("ready", group))
                self._room_ahead.acquire()
        except Exception as exc:  # e.g. the disk filled up (RecordError): the loop stops the launch and reports it
            self.queue.put(("error", exc))

    def _hand_ready(self) -> None:
        """Hand recorded groups to Dask in parcels (``clowdr.parcels``), keeping ``parcels.in_flight`` futures."""
        room = self.parcels.in_flight - len(self._futures)
        parcels, handed = [], 0
        while self._ready and len(parcels) < room:
            waiting = sum(len(group) for group in self._ready)
            before = len(self._ready)
            parcels.append(take(self._ready, self.parcels.size(waiting)))
            handed += before - len(self._ready)
        if parcels:
            self._submit(parcels)
            self._room_ahead.release(handed)

    def _submit(self, parcels: list[list[TaskState]]) -> None:
        """One future per parcel (tasks run in turn on one worker); one map call per placement the back-end gives
        (e.g. the memory a parcel's tasks ask for), since a call's submit arguments hold for all its futures."""
        now = time.time()
        placed: dict[str, tuple[dict[str, Any], list[list[TaskState]], list[str]]] = {}
        for parcel in parcels:
            self._submitted += 1
            for task in parcel:
                task.submit_time = now
                self.running.discard(task.index)
            first = parcel[0]
            placement = self.backend.placement([t.spec for t in parcel])
            _, same, keys = placed.setdefault(repr(sorted(placement.items())), (placement, [], []))
            same.append(parcel)
            keys.append(f"clowdr-{self.run.run_id}-{self._submitted}-task-{first.index}-attempt-{first.attempt}")
        for placement, same, keys in placed.values():
            self._map(same, keys, placement)

    def _map(self, parcels: list[list[TaskState]], keys: list[str], placement: dict[str, Any]) -> None:
        from clowdr.worker import run_group     # the worker's module (and Boutiques' executor) only when tasks run

        futures = self.client.map(run_group, [[t.spec.to_wire() for t in p] for p in parcels],
                                  context=self._context_future, key=keys, pure=False, **placement)
        for future, parcel in zip(futures, parcels):
            if len(parcel) > 1:
                log.info("tasks %s travel together (one Dask future)", ",".join(str(t.index) for t in parcel))
            self._futures[future.key] = (future, parcel)
            future.add_done_callback(self._on_done)

    def cancel(self) -> None:
        """Withdraw every group not finished yet (the launch is being stopped), and stop listening: events still
        on their way must not reach a client that is closing."""
        with contextlib.suppress(Exception):
            channel.stop_listening(self.client, self.context.topic)
        self.client.cancel([future for future, _ in self._futures.values()])
        self._futures.clear()

    def archive_interrupted(self, reason: str) -> None:
        """Each attempt the stop cut short keeps its summary, in the task's attempt history: the task itself is
        left without one, for ``--rerun incomplete``. Events that arrived after the loop stopped count first: a
        tool that started meanwhile is archived too, one that succeeded is recorded as such (one that failed was
        most likely stopped: it is archived as cut short, not recorded as the task's failure)."""
        while True:
            try:
                kind, item = self.queue.get_nowait()
            except queue.Empty:
                break
            event = event_from_wire(item) if kind == "event" else None
            if isinstance(event, Started) or (isinstance(event, Ended) and event.record.get("status") == "succeeded"):
                self._handle_event(item)
        for task in self.tasks.values():
            if task.started:
                self.run.write_lost_attempt(task.index, task.ended(Failure.CANCELLED, reason, self.backend.name),
                                            task.submit_time)
                self.run.next_attempt(task.index)

    # -- the loop ---------------------------------------------------------------------------------
    def run_until_done(self) -> None:
        next_draw = 0.0
        while self.remaining:
            if self.stop.is_set():
                raise LaunchStopped(f"{self.remaining} task(s) left without a summary", self.run.run_id,
                                    getattr(self.stop, "signal_number", None))
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
                if self._refused:
                    self._fail_unstarted(self._refused)
            elif kind == "error":
                raise item
            if self._ready and (self._submitted == 0 or self.queue.empty()):
                self._hand_ready()      # the first group at once, then whatever accumulated meanwhile
            if time.monotonic() >= next_draw:
                self.progress.update(self.succeeded, self.failed, len(self.running))
                next_draw = time.monotonic() + self.refresh
                refused = None if self.running else self.backend.submit_error()
                if refused:
                    self._fail_unstarted(refused)
                self._fail_unplaceable()
        self.progress.update(self.succeeded, self.failed, len(self.running))
        channel.stop_listening(self.client, self.context.topic)
        self.progress.close()

    def _fail_unstarted(self, refused: str) -> None:
        """The scheduler persistently refuses worker jobs and nothing runs: every task waiting for a worker is
        recorded as a submit-error (their futures withdrawn), instead of waiting forever."""
        self._refused = refused
        if self._ready:
            self._room_ahead.release(len(self._ready))
            self._ready.clear()
        self._fail_waiting([t for t in self.tasks.values() if not t.started],
                           f"the scheduler refused the worker jobs: {refused}")

    def _fail_unplaceable(self) -> None:
        """A task waiting for a worker job with more memory (a retry after out-of-memory) that the scheduler
        refused is a submit-error, instead of waiting forever; tasks that fit the jobs it takes go on."""
        by_reason: dict[str, list[TaskState]] = {}
        for task in self.tasks.values():
            why = None if task.started or not task.spec.memory else self.backend.refused_memory(task.spec.memory)
            if why:
                by_reason.setdefault(f"the scheduler refused a worker job with the {task.spec.memory // MIB} MiB "
                                     f"this attempt needs: {why}", []).append(task)
        for message, tasks in by_reason.items():
            self._fail_waiting(tasks, message)

    def _fail_waiting(self, tasks: list[TaskState], message: str) -> None:
        """Record each of ``tasks`` (none started) as a submit-error, withdrawing the futures that carry only them."""
        indices = {task.index for task in tasks}
        self.client.cancel([future for future, group in self._futures.values()
                            if all(t.index in indices for t in group)])
        for task in tasks:
            self._finish(task, {"task": task.index, "attempt": task.attempt, "status": "failed",
                                "failure": str(Failure.SUBMIT_ERROR), "error": message, "exitcode": None,
                                "backend": self.backend.name, "end_time": iso(time.time()), "usage": []})

    def _again(self, task: TaskState, ended: dict[str, Any], record: dict[str, Any] | None = None) -> bool:
        """Run the task again if the policy says so: the attempt's own summary (its whole record, or how it
        ended) goes into the attempt history first. False: this attempt is the task's last."""
        spec = self.policy.next_spec(task, str(ended.get("failure")))
        if spec is None:
            return False
        log.warning("task %d attempt %d: %s; running it again", task.index, task.attempt,
                    ended.get("error") or ended.get("failure"))
        if record is not None:
            self.run.write_attempt(task.index, record, task.submit_time, task.history)
        else:
            self.run.write_lost_attempt(task.index, ended, task.submit_time)
        task.history.append({k: ended.get(k) for k in HISTORY_KEYS})
        task.spec = replace(spec, attempt=self.run.next_attempt(task.index))
        task.started = None
        self.running.discard(task.index)
        return True

    def _finish(self, task: TaskState, record: dict[str, Any]) -> None:
        if record.get("status") == "failed" and self._again(task, record, record):
            self._submit([[task]])
            return
        summary = self.run.write_attempt(task.index, record, task.submit_time, task.history)
        self.parcels.ended(record.get("realtime"))
        task.finished = True
        del self.tasks[task.index]          # nothing of a finished task stays in memory: 10,000 cost no more than 2,000
        log.info("task %d attempt %d %s (exit code %s, %.3f s)", task.index, task.attempt, summary["status"],
                 summary.get("exitcode"), summary.get("realtime") or 0.0)
        self.running.discard(task.index)
        self.remaining -= 1
        if summary["status"] == "succeeded":
            self.succeeded += 1
        else:
            self.failed += 1
            failure = str(summary.get("failure") or "unknown")
            self.failures[failure] = self.failures.get(failure, 0) + 1

    def _current(self, task_index: int, attempt: int) -> TaskState | None:
        task = self.tasks.get(task_index)
        if task is None or task.attempt != attempt:
            return None
        return task

    def _handle_event(self, message: dict[str, Any]) -> None:
        event = event_from_wire(message)
        task = self._current(event.task, event.attempt)
        if task is None:
            return
        if isinstance(event, Started):
            self.running.add(task.index)
            task.started = event
            log.info("task %d attempt %d started on %s", task.index, task.attempt, event.worker)
        elif isinstance(event, Ended):
            self._finish(task, event.record)
        else:
            self.run.record_progress(event)

    def _handle_done(self, future: Any) -> None:
        _, group = self._futures.pop(future.key)
        unrecorded = [t for t in group if not t.finished and self.tasks.get(t.index) is t]
        if not unrecorded:
            return
        if future.status == "finished":
            for record in future.result():
                task = self._current(record["task"], record["attempt"])
                if task is not None:
                    self._finish(task, record)
            return
        failure, message = _classify(future)
        retry = []
        for task in unrecorded:
            if failure == Failure.WORKER_LOST and not task.started and task.requeued < MAX_REQUEUES:
                task.requeued += 1       # its worker left before starting it (e.g. retiring): not an attempt
                retry.append(task)
                continue
            job_id = task.started.job_id if task.started else None
            why = self.backend.explain_lost(job_id) if failure == Failure.WORKER_LOST else None
            task_failure, task_message = (why[0], f"{message}; {why[1]}") if why else (failure, message)
            ended = task.ended(task_failure, task_message, self.backend.name)
            if self._again(task, ended):
                retry.append(task)
            else:
                self._finish(task, dict(ended, task=task.index, status="failed", exitcode=None,
                                        end_time=iso(time.time()), usage=[]))
        if retry:
            self._submit([retry])


def _classify(future: Any) -> tuple[Failure, str]:
    """One failure class for a group future that did not finish."""
    if future.status == "cancelled":
        return Failure.CANCELLED, "the task was cancelled"
    exception = future.exception()
    name = type(exception).__name__
    if name == "KilledWorker":
        return Failure.WORKER_LOST, f"worker lost while the task ran ({exception})"
    return Failure.SETUP_ERROR, f"{name}: {exception}"
