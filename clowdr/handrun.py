"""``clowdr task``: run task files of any run (ours or the original tool's) by hand, here, in this process.

The way to debug one task, or to run one inside an ``srun``: the same worker code as every back-end,
with its usage rows and summary written straight into the provenance directory.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from clowdr.command import CommandBuilder, ContainerOptions
from clowdr.config import container_settings, sampling_settings
from clowdr.engine import LocalRequest, Outcome, check_options, task_state
from clowdr.errors import InputError
from clowdr.monitor import write_record
from clowdr.plan import Tool, load_json, load_tool
from clowdr.provenance import TASK_FILE, RunDir, write_json
from clowdr.worker import run_task


def run_task_files(tasklist: list[str], provdir: str | None = None, workdir: str | None = None,
                   volumes: list[str] | None = None) -> Outcome:
    """Records go to the task's own run as a new attempt, or, with ``provdir``, to a new run there."""
    check_options(LocalRequest("", "", "", volumes=list(volumes or [])))
    jobs = []
    tools: dict[Path, Tool] = {}          # task files of one run share a descriptor: load and validate it once
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
        jobs.append((int(match.group(1)), definition, source, tool, invocation_path, invocation))
    target = RunDir.create(provdir) if provdir else None
    outcome = Outcome(target or jobs[0][2], launched=True)
    sampling = sampling_settings()
    container = ContainerOptions(**container_settings(list(volumes or []), False, None))
    builders: dict[int, CommandBuilder] = {}
    for index, definition, source, tool, invocation_path, invocation in jobs:
        run = target or source
        if target is not None:
            descriptor_copy = run.copy_descriptor(tool.path, tool.descriptor)
            write_json(run.meta / invocation_path.name, invocation)
            definition = dict(definition, tool=str(descriptor_copy), invocation=str(run.meta / invocation_path.name))
        task_dir = str(Path(workdir).resolve()) if workdir else str(run.default_workdir(index))
        run.write_task(index, dict(definition, taskloc=task_dir))
        state = task_state(run, index, run.next_attempt(index), invocation, task_dir)
        builder = builders.get(id(tool)) or builders.setdefault(id(tool), CommandBuilder(tool.descriptor, container))

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
