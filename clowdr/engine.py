"""One path for every launch: plan and validate, record the run, execute on a cluster, monitor to the end.

Nothing is written before every input has been validated, and nothing is launched before the run's
metadata is on disk, so a bad input leaves the provenance directory exactly as it was and a crash
leaves a directory that ``share`` and ``--rerun`` can read.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from clowdr import config
from clowdr.clusters import (
    ClusterSpec,
    cluster_kind,
    import_jobqueue,
    make_cluster,
    parse_clusterargs,
    slurm_cluster,
    slurm_request,
)
from clowdr.errors import InputError, NotAvailableError
from clowdr.monitor import Monitor, TaskState
from clowdr.plan import Options, TaskPlan, Tool, expand, group, load_json, load_tool
from clowdr.progress import Progress
from clowdr.provenance import RunDir, existing_provdir, select_for_rerun, write_json
from clowdr.worker import stop_running_tools

log = logging.getLogger("clowdr")


@dataclass
class LocalRequest:
    """Everything ``clowdr local`` accepts (the same names as the original tool's options)."""

    descriptor: str
    invocation: str
    provdir: str
    verbose: bool = False
    dev: bool = False
    workdir: str | None = None
    volumes: list[str] = field(default_factory=list)
    groupby: int | None = None
    sweep: list[str] = field(default_factory=list)
    setup: bool = False
    cluster: str | None = None
    clusterargs: str | None = None
    jobname: str | None = None
    simg: str | None = None
    user: bool = False
    rerun: str | None = None
    run_id: str | None = None
    s3: str | None = None
    bids: bool = False
    command: list[str] = field(default_factory=lambda: list(sys.argv))


@dataclass
class Outcome:
    run: RunDir
    succeeded: int = 0
    failed: int = 0
    launched: bool = False
    job_script: str | None = None

    @property
    def exit_status(self) -> int:
        return 1 if self.failed else 0


@dataclass
class Planned:
    """A request whose every input has been validated; nothing written yet."""

    req: LocalRequest
    tool: Tool
    batches: list[list[TaskPlan]]
    total: int                         # tasks in the whole run
    rerun: RunDir | None = None


@dataclass
class Launch:
    """A launch whose run is on disk; ``steps`` records its task groups one by one, yielding each."""

    run: RunDir
    tool: Tool
    steps: Iterator[list[TaskState]]
    total: int                          # tasks this launch runs
    mode: str
    req: LocalRequest


def check_options(req: LocalRequest) -> None:
    """Option faults that need no file: one line each, before anything is read or written."""
    for volume in req.volumes:
        source, _, target = volume.partition(":")
        if not source or not target:
            raise InputError("--volumes", f"'{volume}' is not of the form /host/path:/container/path")
    if req.groupby is not None and req.groupby < 1:
        raise InputError("--groupby", f"must be a positive number of tasks, got {req.groupby}")
    if req.rerun and not req.run_id:
        raise InputError("--rerun", "needs --run_id, the run directory to rerun (YYYY-mm-dd_HH-MM-SS-XXXXXXXX)")
    if req.run_id and not req.rerun:
        raise InputError("--run_id", "only goes with --rerun all|failed|incomplete")
    if req.clusterargs:
        parse_clusterargs(req.clusterargs)
    if req.s3:
        raise NotAvailableError("--s3: staging data from S3 is not available yet in this version of clowdr")


def validate(req: LocalRequest) -> Planned:
    """Check every option and input; read, never write. Raises InputError on the first fault."""
    check_options(req)
    existing_provdir(req.provdir)
    if req.rerun:
        return _validate_rerun(req)
    tool = load_tool(req.descriptor)
    tasks = expand(tool, req.invocation, Options(bids=req.bids, sweep=req.sweep, s3=req.s3))
    return _checked(Planned(req, tool, group(tasks, req.groupby), total=len(tasks)))


def _validate_rerun(req: LocalRequest) -> Planned:
    """The chosen tasks of an earlier run (ours or the original tool's), with its descriptor and invocations."""
    run = RunDir.open(req.provdir, req.run_id or "")
    records = run.tasks()
    if not records:
        raise InputError(str(run.meta), "the run has no task files (task-N.json) to rerun")
    first = records[0]
    tool = load_tool(run.local_copy(str(first.definition.get("tool", "")), "tool", run.task_file(first.index)))
    tasks = []
    for record in select_for_rerun(records, req.rerun or "all"):
        path = run.local_copy(str(record.definition.get("invocation", "")), "invocation", run.task_file(record.index))
        invocation = tool.check_invocation(load_json(path, "invocation"), str(path))
        tasks.append(TaskPlan(record.index, invocation, path.name, list(record.definition.get("dataloc") or [])))
    return _checked(Planned(req, tool, group(tasks, req.groupby), total=len(records), rerun=run))


def _checked(planned: Planned) -> Planned:
    """What the cluster will be asked for is checked now too (a bad --clusterargs time or size)."""
    if planned.req.cluster == "slurm":
        slurm_request(cluster_spec(planned))
    return planned


def cluster_spec(planned: Planned, log_directory: Path | None = None) -> ClusterSpec:
    req = planned.req
    launched = planned.batches[:1] if req.dev else planned.batches
    return ClusterSpec(kind=cluster_kind(req.cluster), clusterargs=req.clusterargs, jobname=req.jobname,
                       resources=dict(planned.tool.descriptor.get("suggested-resources") or {}),
                       log_directory=str(log_directory) if log_directory else None, groups=len(launched))


def record(planned: Planned, run: RunDir | None = None) -> Launch:
    """Write what every task needs (run directory, descriptor copy, run.json); the tasks' own files follow.

    ``Launch.steps`` records the tasks group by group (task-N.json and the invocation copy, or for a rerun
    the move of the current attempt into the history) and yields each group once it is on disk: a task is
    never submitted before its record exists, and the first one need not wait for the last one's.
    """
    req, tool = planned.req, planned.tool
    launched = planned.batches[:1] if req.dev else planned.batches   # --dev: every task recorded, one group run
    if planned.rerun is not None:
        run, mode = planned.rerun, f"rerun-{req.rerun}"
        steps = _rerun_steps(run, req, launched)
    else:
        run, mode = run or RunDir.create(req.provdir), "new"
        steps = _new_steps(run, req, tool, planned.batches, len(launched))
    _record_launch(run, req, tool, mode, [[t.index for t in batch] for batch in launched], planned.total)
    return Launch(run, tool, steps, sum(len(b) for b in launched), mode, req)


def _new_steps(run: RunDir, req: LocalRequest, tool: Tool, batches: list[list[TaskPlan]],
               launched: int) -> Iterator[list[TaskState]]:
    descriptor_copy = run.copy_descriptor(tool.path, tool.descriptor)
    taken = {descriptor_copy.name}
    for number, batch in enumerate(batches):
        states = []
        for task in batch:
            invocation_copy = run.meta / run.unique_name(task.invocation_name, taken)
            write_json(invocation_copy, task.invocation)
            workdir = _workdir(req, run, task.index)
            run.write_task(task.index, {"tool": str(descriptor_copy), "invocation": str(invocation_copy),
                                        "dataloc": task.dataloc, "taskloc": workdir})
            states.append(task_state(run, task.index, 1, task.invocation, workdir))
        if number < launched:
            yield states


def _rerun_steps(run: RunDir, req: LocalRequest, batches: list[list[TaskPlan]]) -> Iterator[list[TaskState]]:
    for batch in batches:
        yield [task_state(run, t.index, run.next_attempt(t.index), t.invocation, _workdir(req, run, t.index))
               for t in batch]


def _workdir(req: LocalRequest, run: RunDir, index: int) -> str:
    return str(Path(req.workdir).resolve()) if req.workdir else str(run.default_workdir(index))


def task_state(run: RunDir, index: int, attempt: int, invocation: dict[str, Any], workdir: str) -> TaskState:
    spec = {"task": index, "attempt": attempt, "invocation": invocation, "workdir": workdir,
            "stdout": str(run.file(index, "stdout.txt")), "stderr": str(run.file(index, "stderr.txt"))}
    return TaskState(index, spec)


def _record_launch(run: RunDir, req: LocalRequest, tool: Tool, mode: str, groups: list[list[int]],
                   total: int) -> None:
    options = {k: v for k, v in vars(req).items() if k != "command"}
    run.begin_launch({"mode": mode, "command": req.command, "options": options, "cluster": cluster_kind(req.cluster),
                      "tasks": [t for g in groups for t in g], "groups": len(groups), "setup_only": req.setup},
                     tool.name, tool.path.name, total)


def execute(launch: Launch, cluster: Any, on_client: Callable[[Any], None] | None = None,
            stop: threading.Event | None = None) -> Outcome:
    """Run every group as one Dask future on ``cluster`` and monitor it to the end; close the cluster."""
    from distributed import Client

    outcome = Outcome(launch.run, launched=True)
    client = Client(cluster, set_as_default=False)
    log.info("Dask dashboard: %s", client.dashboard_link)
    if on_client is not None:
        on_client(client)
    context = {
        "key": f"{launch.run.run_id}/{time.time()}",
        "descriptor": launch.tool.descriptor,
        "container": config.container_settings(launch.req.volumes, launch.req.user, launch.req.simg),
        "topic": f"clowdr-{launch.run.run_id}",
        "sampling": config.sampling_settings(),
        "retire-margin": config.get("slurm.retire-margin"),
    }
    monitor = Monitor(launch.run, client, context, launch.steps, launch.total, Progress(launch.total),
                      config.get("retries.worker-lost"), config.get("monitor.progress-refresh"), stop)
    status = "interrupted"
    try:
        monitor.start()
        monitor.run_until_done()
        status = "finished"
    finally:
        outcome.succeeded, outcome.failed = monitor.succeeded, monitor.failed
        if status != "finished":
            # Tasks still running are stopped, not orphaned; they stay without a summary (--rerun incomplete).
            monitor.cancel()
            client.run(stop_running_tools)
        client.close()
        cluster.close()
        launch.run.end_launch(status, outcome.succeeded, outcome.failed)
    return outcome


@dataclass
class Started:
    """A validated request with its run directory: what a launch needs before its cluster exists."""

    planned: Planned
    run: RunDir
    spec: ClusterSpec


def start(req: LocalRequest) -> Started:
    """Validate (InputError before any write), create or open the run directory, prepare the cluster spec."""
    planned = validate(req)
    run = planned.rerun or RunDir.create(req.provdir)
    spec = cluster_spec(planned, run.meta / "slurm" if req.cluster == "slurm" else None)
    if spec.kind == "slurm":
        import_jobqueue()      # in the main thread, before the cluster starts in another one
    return Started(planned, run, spec)


def run_started(started: Started, on_client: Callable[[Any], None] | None = None,
                stop: threading.Event | None = None) -> Outcome:
    """Start the cluster while the run is recorded, then execute; ``stop`` set ends the launch early."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The cluster starts (workers importing Dask, or worker jobs queued) while the run is recorded.
        starting = pool.submit(make_cluster, started.spec)
        try:
            launch = record(started.planned, started.run)
        except BaseException:
            starting.result().close()
            raise
        return execute(launch, starting.result(), on_client, stop)


def run_local(req: LocalRequest) -> Outcome:
    """``clowdr local``: plan, record, and (unless --setup) execute."""
    started = start(req)
    if req.setup:
        launch = record(started.planned, started.run)
        for _ in launch.steps:
            pass
        return Outcome(launch.run, job_script=job_script(started.spec) if started.spec.kind == "slurm" else None)
    return run_started(started)


def job_script(spec: ClusterSpec) -> str:
    """The script each SLURM worker job would run (``--setup --cluster slurm``); nothing is submitted."""
    cluster = slurm_cluster(spec)
    try:
        return str(cluster.job_script())
    finally:
        cluster.close()
