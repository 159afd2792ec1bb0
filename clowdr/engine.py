"""One path for every launch: plan and validate, record the run, execute on a cluster, monitor to the end.

Nothing is written before every input has been validated, and nothing is launched before the run's
metadata is on disk, so a bad input leaves the provenance directory exactly as it was and a crash
leaves a directory that ``share`` and ``--rerun`` can read.
"""
from __future__ import annotations

import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from clowdr import config
from clowdr.clusters import ClusterSpec, cluster_kind, import_jobqueue, make_cluster, parse_clusterargs, slurm_cluster, slurm_request
from clowdr.errors import InputError, NotAvailableError
from clowdr.monitor import Monitor, TaskState
from clowdr.plan import Options, TaskPlan, Tool, expand, group, load_json, load_tool
from clowdr.progress import Progress
from clowdr.provenance import RunDir, existing_provdir, select_for_rerun, write_json
from clowdr.worker import iso, stop_running_tools

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
            states.append(_state(run, task.index, 1, task.invocation, workdir))
        if number < launched:
            yield states


def _rerun_steps(run: RunDir, req: LocalRequest, batches: list[list[TaskPlan]]) -> Iterator[list[TaskState]]:
    for batch in batches:
        yield [_state(run, t.index, run.next_attempt(t.index), t.invocation, _workdir(req, run, t.index))
               for t in batch]


def _workdir(req: LocalRequest, run: RunDir, index: int) -> str:
    return str(Path(req.workdir).resolve()) if req.workdir else str(run.default_workdir(index))


def _state(run: RunDir, index: int, attempt: int, invocation: dict[str, Any], workdir: str) -> TaskState:
    spec = {"task": index, "attempt": attempt, "invocation": invocation, "workdir": workdir,
            "stdout": str(run.file(index, "stdout.txt")), "stderr": str(run.file(index, "stderr.txt"))}
    return TaskState(index, spec)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for package in ("clowdr", "boutiques", "dask", "distributed"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _record_launch(run: RunDir, req: LocalRequest, tool: Tool, mode: str, groups: list[list[int]],
                   total: int) -> None:
    """Append this launch to run.json (created for a new run, or for an original-tool run that has none)."""
    options = {k: v for k, v in vars(req).items() if k != "command"}
    launch = {"mode": mode, "start": iso(time.time()), "end": None, "command": req.command, "options": options,
              "cluster": cluster_kind(req.cluster), "versions": _versions(),
              "tasks": [t for g in groups for t in g], "groups": len(groups), "setup_only": req.setup}
    data = run.read_run() or {"run_id": run.run_id, "tool": tool.name, "descriptor": tool.path.name,
                              "start": launch["start"], "end": None, "launches": []}
    data.update({k: launch[k] for k in ("command", "options", "cluster", "versions")}, tasks=total)
    data["launches"].append(launch)
    run.write_run(data)


def container_settings(volumes: list[str], user: bool, simg: str | None) -> dict[str, Any]:
    """Container options for the workers, host paths made absolute here (a worker's cwd is not the user's)."""
    absolute = []
    for volume in volumes:
        source, target = volume.split(":", 1)
        absolute.append(f"{Path(source).expanduser().resolve()}:{target}")
    return {"volumes": absolute, "user": user, "simg": str(Path(simg).expanduser().resolve()) if simg else None,
            "docker": config.get("container.docker"), "pull": config.get("container.pull")}


def sampling_settings() -> dict[str, Any]:
    """What the worker needs to know about measuring a tool."""
    return {key: config.get(f"monitor.{key}") for key in ("first-interval", "max-interval", "gnu-time")}


def _finish_launch(run: RunDir, outcome: Outcome, status: str) -> None:
    data = run.read_run()
    now = iso(time.time())
    data["end"] = now
    data["launches"][-1].update(end=now, status=status, succeeded=outcome.succeeded, failed=outcome.failed)
    run.write_run(data)


def execute(launch: Launch, cluster: Any) -> Outcome:
    """Run every group as one Dask future on ``cluster`` and monitor it to the end; close the cluster."""
    from distributed import Client

    outcome = Outcome(launch.run, launched=True)
    client = Client(cluster, set_as_default=False)
    log.info("Dask dashboard: %s", client.dashboard_link)
    context = {
        "key": f"{launch.run.run_id}/{time.time()}",
        "descriptor": launch.tool.descriptor,
        "container": container_settings(launch.req.volumes, launch.req.user, launch.req.simg),
        "topic": f"clowdr-{launch.run.run_id}",
        "sampling": sampling_settings(),
        "retire-margin": config.get("slurm.retire-margin"),
    }
    monitor = Monitor(launch.run, client, context, launch.steps, launch.total, Progress(launch.total),
                      config.get("retries.worker-lost"), config.get("monitor.progress-refresh"))
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
        _finish_launch(launch.run, outcome, status)
    return outcome


def run_local(req: LocalRequest) -> Outcome:
    """``clowdr local``: plan, record, and (unless --setup) execute."""
    planned = validate(req)
    run = planned.rerun or RunDir.create(req.provdir)
    spec = cluster_spec(planned, run.meta / "slurm" if req.cluster == "slurm" else None)
    if req.setup:
        launch = record(planned, run)
        for _ in launch.steps:
            pass
        return Outcome(launch.run, job_script=job_script(spec) if spec.kind == "slurm" else None)
    if spec.kind == "slurm":
        import_jobqueue()      # in the main thread, before the cluster starts in another one
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The cluster starts (workers importing Dask, or worker jobs queued) while the run is recorded.
        starting = pool.submit(make_cluster, spec)
        try:
            launch = record(planned, run)
        except BaseException:
            starting.result().close()
            raise
        return execute(launch, starting.result())


def job_script(spec: ClusterSpec) -> str:
    """The script each SLURM worker job would run (``--setup --cluster slurm``); nothing is submitted."""
    cluster = slurm_cluster(spec)
    try:
        return str(cluster.job_script())
    finally:
        cluster.close()


def run_task_files(tasklist: list[str], provdir: str | None = None, workdir: str | None = None,
                   volumes: list[str] | None = None) -> Outcome:
    """``clowdr task``: run task files of any run (ours or the original tool's) here, in this process.

    Records go to the task's own run as a new attempt, or, with ``provdir``, to a new run there.
    """
    from clowdr.command import CommandBuilder, ContainerOptions
    from clowdr.monitor import write_record
    from clowdr.provenance import TASK_FILE
    from clowdr.worker import run_task

    check_options(LocalRequest("", "", "", volumes=list(volumes or [])))
    jobs = []
    for name in tasklist:
        path = Path(name)
        match = TASK_FILE.match(path.name)
        if not match:
            raise InputError(name, "not a task file (expected a file named task-N.json)")
        definition = load_json(path, "task file")
        if not isinstance(definition, dict):
            raise InputError(name, "task file is not a JSON object")
        source = RunDir.of_meta(path.parent.resolve())
        tool = load_tool(source.local_copy(str(definition.get("tool", "")), "tool", path))
        invocation_path = source.local_copy(str(definition.get("invocation", "")), "invocation", path)
        invocation = tool.check_invocation(load_json(invocation_path, "invocation"), str(invocation_path))
        jobs.append((int(match.group(1)), definition, source, tool, invocation_path, invocation))
    target = RunDir.create(provdir) if provdir else None
    outcome = Outcome(target or jobs[0][2], launched=True)
    sampling = sampling_settings()
    for index, definition, source, tool, invocation_path, invocation in jobs:
        run = target or source
        if target is not None:
            descriptor_copy = run.copy_descriptor(tool.path, tool.descriptor)
            write_json(run.meta / invocation_path.name, invocation)
            definition = dict(definition, tool=str(descriptor_copy), invocation=str(run.meta / invocation_path.name))
        task_dir = str(Path(workdir).resolve()) if workdir else str(run.default_workdir(index))
        run.write_task(index, dict(definition, taskloc=task_dir))
        state = _state(run, index, run.next_attempt(index), invocation, task_dir)
        builder = CommandBuilder(tool.descriptor, ContainerOptions(**container_settings(list(volumes or []), False, None)))

        def emit(message: dict[str, Any], run: RunDir = run, index: int = index) -> None:
            if message["kind"] == "usage":
                run.append_usage(index, message["rows"])

        state.submit_time = time.time()
        write_record(run, state, run_task(state.spec, builder, emit, sampling))
        if state.summary and state.summary["status"] == "succeeded":
            outcome.succeeded += 1
        else:
            outcome.failed += 1
    return outcome
