"""One path for every launch: plan and validate, record the run, execute on a back-end, monitor to the end.

Nothing is written before every input has been validated (the back-end's request included), and nothing is
launched before the run's metadata is on disk, so a bad input leaves the provenance directory exactly as it
was and a crash leaves a directory that ``share`` and ``--rerun`` can read.
"""
from __future__ import annotations

import itertools
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from clowdr import config, spread, staging
from clowdr.backends import Backend, ClusterRequest, backend_for
from clowdr.errors import InputError, LaunchStopped, RecordError
from clowdr.monitor import Monitor, RetryPolicy, TaskState
from clowdr.parcels import Parcels
from clowdr.plan import Options, TaskList, TaskPlan, Tool, expand, group, load_json, load_tool
from clowdr.progress import Progress
from clowdr.provenance import RunDir, select_for_rerun, unique_name, writable_provdir
from clowdr.protocol import RunContext
from clowdr.request import LocalRequest

log = logging.getLogger("clowdr")


@dataclass
class Outcome:
    run: RunDir
    succeeded: int = 0
    failed: int = 0
    launched: bool = False
    job_script: str | None = None
    failures: dict[str, int] | None = None       # failed tasks by failure class
    cancelled: bool = False                      # stopped by its owner (RunHandle.cancel) before the end

    @property
    def exit_status(self) -> int:
        return 130 if self.cancelled else 1 if self.failed else 0


@dataclass
class Planned:
    """A request whose every input has been validated; nothing written yet."""

    req: LocalRequest
    tool: Tool
    tasks: TaskList
    total: int                         # tasks in the whole run
    backend: Backend
    rerun: RunDir | None = None

    def batches(self) -> Iterator[list[TaskPlan]]:
        """Every group of the run, read one at a time."""
        return group(self.tasks, self.req.groupby)

    @property
    def launched(self) -> int:
        return _launched(self.req, len(self.tasks))

    def launched_tasks(self) -> list[int]:
        return self.tasks.indices[:self.launched * (self.req.groupby or 1)]


@dataclass
class Launch:
    """A launch whose run is on disk; ``steps`` records its task groups one by one, yielding each."""

    run: RunDir
    tool: Tool
    steps: Iterator[list[TaskState]]
    total: int                          # tasks this launch runs
    req: LocalRequest
    backend: Backend


def validate(req: LocalRequest) -> Planned:
    """Check every option and input; read, never write. Raises InputError on the first fault."""
    req.check()
    writable_provdir(req.provdir)
    if req.rerun:
        tool, tasks, total, rerun = _rerun_tasks(req)
    else:
        tool = load_tool(req.descriptor)
        tasks = TaskList(_named(expand(tool, req.invocation, Options(bids=req.bids, sweep=req.sweep, s3=req.s3)),
                                {tool.path.name}))
        total, rerun = len(tasks), None
    if req.s3 and not req.setup:
        req.check_data()               # the bucket and prefix exist and can be listed
    backend = backend_for(req.cluster, ClusterRequest(
        clusterargs=req.clusterargs, jobname=req.jobname, groups=_launched(req, len(tasks)), submits=not req.setup,
        resources=dict(tool.descriptor.get("suggested-resources") or {}), cloud=req.cloud_context()))
    backend.check()                # what the scheduler would refuse (a bad --clusterargs time or size)
    return Planned(req, tool, tasks, total, backend, rerun)


def _launched(req: LocalRequest, tasks: int) -> int:
    """The groups this launch runs (--dev: the first one; every task is recorded all the same)."""
    groups = -(-tasks // (req.groupby or 1))
    return min(groups, 1) if req.dev else groups


def _rerun_tasks(req: LocalRequest) -> tuple[Tool, TaskList, int, RunDir]:
    """The chosen tasks of an earlier run (ours or the original tool's), with its descriptor and invocations.

    Tasks of the run's plan whose files were never written (the disk filled up while recording) have no
    summary either: ``incomplete`` and ``all`` run them, recording them first.
    """
    run = RunDir.open(req.provdir, req.run_id or "")
    records = run.tasks()
    unrecorded = run.unrecorded_tasks({r.index for r in records})
    if not records and not unrecorded:
        raise InputError(str(run.meta), "the run has no task files (task-N.json) to rerun")
    if records:
        first = records[0]
        descriptor = run.local_copy(str(first.definition.get("tool", "")), "tool", run.task_file(first.index))
    else:
        descriptor = run.local_copy(str(run.read_run().get("descriptor", "")), "descriptor", run.meta / "run.json")
    chosen = select_for_rerun(records, req.rerun or "all")
    if not chosen and not (unrecorded and req.rerun in ("all", "incomplete")):
        return Tool.recorded(descriptor), TaskList([]), len(records) + len(unrecorded), run   # nothing to run
    tool = load_tool(descriptor)
    tasks = []
    for record in chosen:
        path = run.local_copy(str(record.definition.get("invocation", "")), "invocation", run.task_file(record.index))
        invocation = tool.check_invocation(load_json(path, "invocation"), str(path))
        tasks.append(TaskPlan(record.index, invocation, path.name, list(record.definition.get("dataloc") or [])))
    if req.rerun in ("all", "incomplete"):
        tasks.extend(unrecorded)
    return tool, TaskList(sorted(tasks, key=lambda t: t.index)), len(records) + len(unrecorded), run


def record(planned: Planned, run: RunDir) -> Launch:
    """Write what every task needs (run directory, descriptor copy, run.json, the plan); the tasks' own files
    follow.

    ``Launch.steps`` records the tasks group by group (task-N.json and the invocation copy, or for a rerun
    the move of the current attempt into the history) and yields each group once it is on disk: a task is
    never submitted before its record exists, and the first one need not wait for the last one's. The plan
    (every task's invocation, in one file) is on disk before any task runs, so a task whose own files could
    not be written is still known to ``--rerun incomplete``.
    """
    req, tool = planned.req, planned.tool
    options = req.recorded_options()
    mode = f"rerun-{req.rerun}" if planned.rerun is not None else "new"
    launched = planned.launched_tasks()
    run.begin_launch({"mode": mode, "command": req.command, "options": options, "cluster": planned.backend.name,
                      "shared_filesystem": planned.backend.shared_filesystem,
                      "requested": planned.backend.requested(), "tasks": launched, "groups": planned.launched,
                      "setup_only": req.setup}, tool.name, tool.path.name, planned.total)
    if planned.rerun is None:
        run.copy_descriptor(tool.path, tool.descriptor)
        run.write_plan(planned.tasks.lines())
    steps = _steps(run, planned, planned.rerun is None)
    return Launch(run, tool, steps, len(launched), req, planned.backend)


def _named(tasks: Iterable[TaskPlan], taken: set[str]) -> Iterator[TaskPlan]:
    """Each task with the file name its invocation copy gets (unique, clashing with nothing clowdr writes)."""
    for task in tasks:
        task.invocation_name = unique_name(task.invocation_name, taken)
        yield task


def _steps(run: RunDir, planned: Planned, new: bool) -> Iterator[list[TaskState]]:
    """Record the groups one by one, yielding those this launch runs: a new run's tasks (every one recorded,
    --dev or not), or a rerun's (recorded if they never were, their current attempt archived if they were)."""
    shared, memory = planned.backend.shared_filesystem, planned.backend.task_memory()    # once, not per task
    remote_run = planned.req.run_prefix(run.run_id)
    batches = planned.batches()
    for number, batch in enumerate(batches if new else itertools.islice(batches, planned.launched)):
        states = []
        for task in batch:
            workdir = _workdir(planned, run, task.index)
            if new or not run.task_file(task.index).exists():
                run.record_task(task, planned.tool.path.name, workdir)
                attempt = 1
            else:
                attempt = run.next_attempt(task.index)
            spec = run.task_spec(task.index, attempt, task.invocation, workdir, shared, memory)
            staged = staging.task_staging(planned.req.s3, task, run, shared, remote_run)
            states.append(TaskState(replace(spec, staging=staged) if staged else spec))
        if number < planned.launched:
            yield states


def _workdir(planned: Planned, run: RunDir, index: int) -> str | None:
    """--workdir, else the task's directory in the run, or scratch space on the worker (no shared filesystem, or
    data staged from S3: the dataset is not copied into the provenance directory)."""
    if planned.req.workdir:
        return str(Path(planned.req.workdir).resolve())
    return run.default_workdir(index) if planned.backend.shared_filesystem and not planned.req.s3 else None


def execute(launch: Launch, cluster: Any, on_client: Callable[[Any], None] | None = None,
            stop: threading.Event | None = None) -> Outcome:
    """Run every group as one Dask future on ``cluster`` and monitor it to the end; close the cluster.

    ``stop`` set (a signal, ``RunHandle.cancel``) ends the launch early with LaunchStopped: unfinished groups
    are withdrawn, running tools stopped, each attempt cut short archived with its summary (the task left for
    ``--rerun incomplete``), and the launch recorded as interrupted.
    """
    from distributed import Client

    outcome = Outcome(launch.run, launched=True)
    client = Client(cluster, set_as_default=False)
    log.info("Dask dashboard: %s", client.dashboard_link)
    if on_client is not None:
        on_client(client)
    context = RunContext.of(launch.run.run_id, launch.backend.name,
                            launch.backend.worker_descriptor(launch.tool.descriptor), launch.req.volumes,
                            launch.req.user, launch.req.simg, launch.backend.retire_margin)
    parcels = Parcels(launch.backend.slots(), float(config.get("monitor.parcel-seconds")))
    monitor = Monitor(launch.run, client, context, launch.backend, launch.steps, launch.total,
                      Progress(launch.total), RetryPolicy.configured(launch.req.retries),
                      config.get("monitor.progress-refresh"), parcels, int(config.get("monitor.record-ahead")), stop)
    status = "interrupted"
    try:
        monitor.start()
        monitor.run_until_done()
        status = "finished"
    finally:
        outcome.succeeded, outcome.failed, outcome.failures = monitor.succeeded, monitor.failed, monitor.failures
        if status != "finished":
            _stop_tools(client, context.key)    # first: no tool starts once the monitor stops listening
            monitor.cancel()
        client.close()
        cluster.close()
        _close_record(launch.run, monitor, status, stop)
    return outcome


def _close_record(run: RunDir, monitor: Monitor, status: str, stop: threading.Event | None) -> None:
    """The launch's end in its record; a disk that refuses it now has already said so (the error that ended
    the launch), so it is only logged here."""
    try:
        if status != "finished":
            monitor.archive_interrupted(_why_stopped(stop))
        run.end_launch(status, monitor.succeeded, monitor.failed)
    except RecordError as exc:
        log.info("the launch's end is not recorded (%s)", exc)


def _stop_tools(client: Any, launch: str) -> None:
    """Stop what the launch runs on every worker, and what its parcels would start next; a worker that cannot be
    reached has died, and its spawner stopped its tools."""
    from clowdr.worker import stop_running_tools

    try:
        client.run(stop_running_tools, launch, on_error="ignore")
    except Exception as exc:
        log.warning("could not reach every worker to stop its tools (%s)", exc)


def _why_stopped(stop: threading.Event | None) -> str:
    number = getattr(stop, "signal_number", None)
    return f"the launch was stopped ({signal.Signals(number).name})" if number else "the launch was stopped"


def start_cluster(backend: Backend, run: RunDir) -> Any:
    """The back-end's cluster; its worker jobs' logs kept with the run where the client can see them."""
    import dask.config

    dask.config.set({"distributed.scheduler.allowed-failures": config.get("scheduler.allowed-failures"),
                     # a task group's length is unknown until one ends: counted as long, every waiting group
                     # gets its worker job at once (up to max-jobs) instead of one job running them in turn
                     "distributed.scheduler.default-task-durations": {"clowdr": "1h"},
                     # Dask's logs for who debugs Dask keep 1,000 entries each: every connection its last messages,
                     # the scheduler's to a worker whole task specs. Filling up, they made a 10,000-task run's client
                     # 14 MiB bigger than a 2,000-task run's (3.5 MiB with 20 entries, enough to debug with)
                     "distributed.admin.low-level-log-length": 20})
    if backend.name == "local" and not backend.setting("processes"):
        # workers that are threads of this process would sample every thread of it 100 times a second (the
        # monitor's included), and keep what they saw: CPU and memory the client needs, for a profile of clowdr
        dask.config.set({"distributed.worker.profile.enabled": False})
    keep_logs = backend.keeps_job_logs and backend.shared_filesystem
    return backend.start(run.meta / backend.name if keep_logs else None)


@dataclass
class Started:
    """A validated request with its run directory: what a launch needs before its cluster exists."""

    planned: Planned
    run: RunDir


def start(req: LocalRequest, stop: threading.Event | None = None) -> Started:
    """Validate (InputError before any write), then create or open the run directory (unless asked to stop)."""
    planned = validate(req)
    if stop is not None and stop.is_set():
        raise LaunchStopped("stopped before anything was written", "", getattr(stop, "signal_number", None))
    if planned.launched and not req.setup:
        planned.backend.prepare()  # in the main thread, before the cluster starts in another one
    run = planned.rerun or RunDir.create(req.provdir)
    planned.backend.request.run_id = run.run_id        # before the cluster starts (a cloud tags with it)
    return Started(planned, run)


def _record_only(started: Started, setup: bool) -> Outcome:
    """--setup, or a launch with nothing to run (``--rerun failed`` when none failed): the launch is recorded,
    no cluster is started."""
    planned, run = started.planned, started.run
    launch = record(planned, run)
    if setup and planned.rerun is None and spread.worth_spreading(len(planned.tasks)):
        spread.record_tasks(run.meta, planned.tool.path.name,
                            ((line, _workdir(planned, run, index))
                             for index, line in zip(planned.tasks.indices, planned.tasks.lines())))
    else:
        for _ in launch.steps:
            pass
    if setup:
        return Outcome(launch.run, job_script=started.planned.backend.job_script())
    log.warning("no task to run")
    launch.run.end_launch("finished", 0, 0)
    return Outcome(launch.run)


def run_started(started: Started, on_client: Callable[[Any], None] | None = None,
                stop: threading.Event | None = None) -> Outcome:
    """Start the cluster while the run is recorded, then execute; ``stop`` set ends the launch early."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The cluster starts (workers importing Dask, or worker jobs queued) while the run is recorded.
        starting = pool.submit(start_cluster, started.planned.backend, started.run)
        try:
            launch = record(started.planned, started.run)
        except BaseException:
            starting.result().close()
            raise
        try:
            cluster = starting.result()
        except BaseException as exc:   # no cluster (a cloud's start-up limit, a stop): the launch's end recorded
            _close_unstarted(launch.run, "interrupted" if isinstance(exc, LaunchStopped) else "failed")
            raise
        return execute(launch, cluster, on_client, stop)


def _close_unstarted(run: RunDir, status: str) -> None:
    try:
        run.end_launch(status, 0, 0)
    except RecordError as exc:
        log.info("the launch's end is not recorded (%s)", exc)


def run_local(req: LocalRequest, stop: threading.Event | None = None) -> Outcome:
    """``clowdr local``: plan, record, and (unless --setup) execute; ``stop`` set ends it early."""
    started = start(req, stop)
    try:
        if req.setup or not started.planned.launched:
            return _record_only(started, req.setup)
        return run_started(started, stop=stop)
    except RecordError as exc:
        exc.run_id = started.run.run_id
        raise
