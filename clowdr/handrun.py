"""``clowdr task``: run task files of any run (ours or the original tool's) by hand, here, in this process.

The way to debug one task, or to run one inside an ``srun``: the same worker code as every back-end, its
events written into the provenance directory by the same provenance calls the monitor makes.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from clowdr.backends import current_job
from clowdr.command import CommandBuilder, ContainerOptions
from clowdr.errors import InputError
from clowdr.plan import Tool, load_json, load_tool
from clowdr.protocol import RunContext, event_from_wire
from clowdr.provenance import TASK_FILE, RunDir, write_json
from clowdr.report import SHOWN
from clowdr.request import check_volumes
from clowdr.worker import run_task


@dataclass
class HandRun:
    """What ``clowdr task`` did: the run written to and how its tasks ended."""

    run: RunDir
    succeeded: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)             # failed tasks by failure class
    failed_tasks: list[dict[str, Any]] = field(default_factory=list)   # summaries of the first few failed tasks
    failed_files: list[Path] = field(default_factory=list)             # their task files, to run them again

    @property
    def exit_status(self) -> int:
        return 1 if self.failed else 0


@dataclass
class _Job:
    index: int
    path: Path
    definition: dict[str, Any]
    source: RunDir
    tool: Tool
    invocation_path: Path
    invocation: dict[str, Any]


def read_task_file(path: Path) -> tuple[int, dict[str, Any]]:
    """The task number and definition of a task file (``task-N.json``), or InputError naming it."""
    match = TASK_FILE.match(path.name)
    if not match:
        raise InputError(str(path), "not a task file (expected a file named task-N.json)")
    definition = load_json(path, "task file")
    if not isinstance(definition, dict):
        raise InputError(str(path), "task file is not a JSON object")
    return int(match.group(1)), definition


def _read(tasklist: list[str]) -> list[_Job]:
    """Every task file, checked before anything runs; task files of one run share a descriptor, loaded once."""
    jobs = []
    tools: dict[Path, Tool] = {}
    for name in tasklist:
        path = Path(name)
        index, definition = read_task_file(path)
        source = RunDir.of_meta(path.parent.resolve())
        descriptor = source.local_copy(str(definition.get("tool", "")), "tool", path)
        tool = tools.get(descriptor) or tools.setdefault(descriptor, load_tool(descriptor))
        invocation_path = source.local_copy(str(definition.get("invocation", "")), "invocation", path)
        invocation = tool.check_invocation(load_json(invocation_path, "invocation"), str(invocation_path))
        jobs.append(_Job(index, path, definition, source, tool, invocation_path, invocation))
    return jobs


def run_task_files(tasklist: list[str], provdir: str | None = None, workdir: str | None = None,
                   volumes: list[str] | None = None, command: list[str] | None = None,
                   announce: Callable[[str], None] | None = None) -> HandRun:
    """Records go to the task's own run as a new attempt, or, with ``provdir``, to a new run there.

    Each run written to records this as one of its launches (``run.json``, mode ``task``, with ``command``);
    ``announce`` is told of each task as it starts and ends.
    """
    volumes = list(volumes or [])
    check_volumes(volumes)
    jobs = _read(tasklist)
    target = RunDir.create(provdir) if provdir else None
    outcome = HandRun(target or jobs[0].source)
    contexts: dict[int, tuple[RunContext, CommandBuilder]] = {}
    backend, job_id = current_job()             # e.g. inside an srun: the job is recorded
    launches = _begin_launches(jobs, target, backend, command, dict(provdir=provdir, workdir=workdir,
                                                                     volumes=volumes))
    status = "interrupted"
    try:
        for job in jobs:
            run = target or job.source
            summary = _run_one(job, run, target is not None, workdir, volumes, backend, job_id, contexts, announce)
            counts = launches[run.meta]
            if summary["status"] == "succeeded":
                outcome.succeeded += 1
                counts[0] += 1
            else:
                outcome.failed += 1
                counts[1] += 1
                failure = str(summary.get("failure") or "unknown")
                outcome.failures[failure] = outcome.failures.get(failure, 0) + 1
                if len(outcome.failed_tasks) < SHOWN:
                    outcome.failed_tasks.append(summary)
                outcome.failed_files.append(run.task_file(job.index))
        status = "finished"
    finally:
        for meta, (succeeded, failed, run) in launches.items():
            run.end_launch(status, succeeded, failed)
    return outcome


def _begin_launches(jobs: list[_Job], target: RunDir | None, backend: str, command: list[str] | None,
                    options: dict[str, Any]) -> dict[Path, list[Any]]:
    """One launch in the record of every run written to: [succeeded, failed, run] by run, counted as tasks end."""
    by_run: dict[Path, tuple[RunDir, list[_Job]]] = {}
    for job in jobs:
        run = target or job.source
        by_run.setdefault(run.meta, (run, []))[1].append(job)
    launches: dict[Path, list[Any]] = {}
    for meta, (run, own) in by_run.items():
        tool = own[0].tool
        total = len(own) if target is not None else sum(1 for name in os.listdir(run.meta) if TASK_FILE.match(name))
        run.begin_launch({"mode": "task", "command": command or ["clowdr", "task", *(str(j.path) for j in own)],
                          "options": options, "cluster": backend, "shared_filesystem": True,
                          "tasks": [j.index for j in own], "groups": len(own), "setup_only": False},
                         tool.name, tool.path.name, total)
        launches[meta] = [0, 0, run]
    return launches


def _run_one(job: _Job, run: RunDir, moved: bool, workdir: str | None, volumes: list[str], backend: str,
             job_id: str | None, contexts: dict[int, tuple[RunContext, CommandBuilder]],
             announce: Callable[[str], None] | None) -> dict[str, Any]:
    """Record and run one task file's task here; its summary."""
    definition = job.definition
    if moved:
        descriptor_copy = run.copy_descriptor(job.tool.path, job.tool.descriptor)
        write_json(run.meta / job.invocation_path.name, job.invocation)
        definition = dict(definition, tool=str(descriptor_copy), invocation=str(run.meta / job.invocation_path.name))
    task_dir = str(Path(workdir).resolve()) if workdir else str(run.default_workdir(job.index))
    run.write_task(job.index, dict(definition, taskloc=task_dir))
    if id(job.tool) not in contexts:
        context = RunContext.of(run.run_id, backend, job.tool.descriptor, volumes, False, None)
        contexts[id(job.tool)] = (context, CommandBuilder(job.tool.descriptor, ContainerOptions(**context.container)))
    context, builder = contexts[id(job.tool)]
    spec = run.task_spec(job.index, run.next_attempt(job.index), job.invocation, task_dir, shared=True)
    if announce is not None:
        announce(f"task {job.index} of run {run.run_id} (attempt {spec.attempt}), in {task_dir}: running")
    submitted = time.time()
    record = run_task(spec, builder, lambda wire: run.record_progress(event_from_wire(wire)), context, job_id)
    summary = run.write_attempt(job.index, record, submitted)
    if announce is not None:
        ended = summary["status"] if summary["status"] == "succeeded" else f"failed ({summary.get('failure')})"
        announce(f"task {job.index} of run {run.run_id}: {ended}, exit code {summary.get('exitcode')}, "
                 f"{float(summary.get('realtime') or 0.0):.2f} s; command: {summary.get('command')}")
    return summary
