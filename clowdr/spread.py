"""A large run's planning and recording spread over the machine's cores: reading and validating its invocations,
then writing each task's own files (invocation copy, task-N.json), in worker processes, chunk by chunk, results
taken in order.

Why: each invocation costs Python work (reading, validating with jsonschema, encoding, two atomic writes) as
large as what its files cost on a fast disk, and one process did it at 2-3x the pace of a plain loop writing the
same files. The workers start through ``forkserver`` (a fresh interpreter, never a fork of a process that may
hold threads, such as a notebook's kernel), ignore Ctrl-C (the launch's own process answers it and withdraws
what is still queued), and end with the step. Faults are those of one process: the first invalid invocation in
order, or the first file that cannot be written (the plan, on disk before, lets ``--rerun incomplete`` finish).
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from clowdr.errors import InputError, RecordError
from clowdr.plan import TaskPlan, Tool, fault_location, group, load_json, load_tool

CHUNK = 500                         # invocations per message to a worker
_tool: Tool | None = None           # in a worker: the launch's tool, loaded once


def worth_spreading(count: int) -> bool:
    """Whether ``count`` tasks are enough to pay for starting worker processes (``setup.spread-from``)."""
    from clowdr import config

    return (os.cpu_count() or 1) > 1 and count >= max(2, int(config.get("setup.spread-from")))


def validated(tool: Tool, files: list[Path], dataloc: list[str]) -> Iterator[TaskPlan]:
    """The tasks of a directory of invocation files, in order, each validated as ``Tool.check_invocation`` does;
    InputError for the first fault."""
    chunks = group(((index, str(path), fault_location(str(path), path.name, alone=False))
                    for index, path in enumerate(files)), CHUNK)
    for result in _in_order(_validate_chunk, chunks, str(tool.path), dataloc):
        if isinstance(result, str):
            raise InputError("", result)
        yield from map(TaskPlan.of_line, result)


def record_tasks(meta: Path, descriptor: str, entries: Iterable[tuple[str, str | None]]) -> None:
    """Write each task's own files (``RunDir.record_task``) for ``entries``: (its plan line, its working
    directory); RecordError for the first file that cannot be written."""
    for fault in _in_order(_record_chunk, group(entries, CHUNK), str(meta), descriptor):
        if fault is not None:
            path, number, message = fault
            raise RecordError(path, OSError(number, message))


def _in_order(work: Callable[..., Any], chunks: Iterable[list[Any]], *common: Any) -> Iterator[Any]:
    """``work(chunk, *common)`` for every chunk in worker processes, a few chunks ahead, results in order."""
    workers = min(os.cpu_count() or 1, 8)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                               initializer=_start_worker)
    pending: deque[Future] = deque()
    try:
        for chunk in chunks:
            pending.append(pool.submit(work, chunk, *common))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _start_worker() -> None:
    """Ctrl-C is the launch's own process's to answer; what a launch does without, a worker does without."""
    from clowdr.lean import skip_unused_imports

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    skip_unused_imports(launch=True)


# -- in the workers -----------------------------------------------------------------------------------------
def _validate_chunk(chunk: list[tuple[int, str, str]], descriptor: str, dataloc: list[str]) -> list[str] | str:
    """The plan lines of the chunk's tasks, or the first fault's message."""
    global _tool
    if _tool is None or str(_tool.path) != descriptor:
        _tool = load_tool(descriptor)
    lines = []
    for index, path, where in chunk:
        try:
            invocation = _tool.check_invocation(load_json(Path(path), "invocation"), where)
        except InputError as exc:
            return str(exc)
        lines.append(TaskPlan(index, invocation, os.path.basename(path), dataloc).line())
    return lines


def _record_chunk(chunk: list[tuple[str, str | None]], meta: str, descriptor: str) -> tuple[str, int, str] | None:
    """Write the chunk's task files; the first failure as (path, errno, message)."""
    from clowdr.provenance import RunDir

    run = RunDir.of_meta(Path(meta))
    for line, workdir in chunk:
        try:
            run.record_task(TaskPlan.of_line(line), descriptor, workdir)
        except RecordError as exc:
            return str(exc.path), exc.error.errno or 0, exc.error.strerror or str(exc.error)
    return None
