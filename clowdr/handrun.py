"""``clowdr task``: run task files of any run (ours or the original tool's) by hand, here, in this process.

The way to debug one task, or to run one inside an ``srun``: the same worker code as every back-end, its
events written into the provenance directory by the same provenance calls the monitor makes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clowdr.backends import current_job
from clowdr.command import CommandBuilder, ContainerOptions
from clowdr.errors import InputError
from clowdr.plan import Tool, load_json, load_tool
from clowdr.protocol import RunContext, event_from_wire
from clowdr.provenance import TASK_FILE, RunDir, write_json
from clowdr.request import check_volumes
from clowdr.worker import run_task


@dataclass
class HandRun:
    """What ``clowdr task`` did: the run written to and how its tasks ended."""

    run: RunDir
    succeeded: int = 0
    failed: int = 0

    @property
    def exit_status(self) -> int:
        return 1 if self.failed else 0


@dataclass
class _Job:
    index: int
    definition: dict[str, Any]
    source: RunDir
    tool: Tool
    invocation_path: Path
    invocation: dict[str, Any]


def _read(tasklist: list[str]) -> list[_Job]:
    """Every task file, checked before anything runs; task files of one run share a descriptor, loaded once."""
    jobs = []
    tools: dict[Path, Tool] = {}
    for name in tasklist:
        path = Path(name)
        match = TASK_FILE.match(path.name)
        if not match:
            raise InputError(name, "not a task file (expected a file named task-N.json)")
        definition = load_json(path, "task file")
        if not isinstance(definition, dict):
            raise InputError(name, "task file is not a JSON object")
        source = RunDir.of_meta(path.parent.resolve())
        descriptor = source.local_copy(str(definition.get("tool", "")), "tool", path)
        tool = tools.get(descriptor) or tools.setdefault(descriptor, load_tool(descriptor))
        invocation_path = source.local_copy(str(definition.get("invocation", "")), "invocation", path)
        invocation = tool.check_invocation(load_json(invocation_path, "invocation"), str(invocation_path))
        jobs.append(_Job(int(match.group(1)), definition, source, tool, invocation_path, invocation))
    return jobs


def run_task_files(tasklist: list[str], provdir: str | None = None, workdir: str | None = None,
                   volumes: list[str] | None = None) -> HandRun:
    """Records go to the task's own run as a new attempt, or, with ``provdir``, to a new run there."""
    volumes = list(volumes or [])
    check_volumes(volumes)
    jobs = _read(tasklist)
    target = RunDir.create(provdir) if provdir else None
    outcome = HandRun(target or jobs[0].source)
    contexts: dict[int, tuple[RunContext, CommandBuilder]] = {}
    backend, job_id = current_job()             # e.g. inside an srun: the job is recorded
    for job in jobs:
        run = target or job.source
        definition = job.definition
        if target is not None:
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
        submitted = time.time()
        record = run_task(spec, builder, lambda wire, run=run: run.record_progress(event_from_wire(wire)), context,
                          job_id)
        summary = run.write_attempt(job.index, record, submitted)
        if summary["status"] == "succeeded":
            outcome.succeeded += 1
        else:
            outcome.failed += 1
    return outcome
