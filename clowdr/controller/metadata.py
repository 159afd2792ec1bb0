"""The original tool's ``clowdr.controller.metadata``: plan a run and write its task files.

Same names, signatures and return shapes as Clowdr 0.1.2, over the planning of ``clowdr local``
(``clowdr.plan``) and the record it writes (``clowdr.provenance``): ``consolidateTask`` is ``clowdr local
--setup``, and its task files are the very files that ``clowdr local`` writes, ``clowdr task`` and
``--rerun`` read. Paths are returned as strings, as the original did.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from clowdr.errors import InputError
from clowdr.plan import _bids_tasks, _sweep, load_json, load_tool
from clowdr.provenance import TASK_FILE, RunDir, write_json

#: keywords of the original's ``**kwargs`` that change the plan; any other is accepted and ignored, as there
_PLANNING = ("bids", "sweep", "workdir", "groupby", "dev")


def consolidateTask(tool: str, invocation: str, clowdrloc: str, dataloc: str,
                    **kwargs: Any) -> tuple[list[str], list[str]]:
    """Plan and record a new run in ``clowdrloc`` without launching it (``clowdr local --setup``).

    ``invocation`` is a file or a directory of them; ``kwargs`` may hold ``bids`` and ``sweep`` (a list of input
    ids) as in the original, and ``workdir``, ``groupby``, ``dev`` as ``clowdr local`` reads them. ``dataloc`` is
    where the data is: ``"localhost"`` (local files) or an ``s3://`` location. Returns the task files
    (``task-N.json``, in task order) and the invocation files they name.
    """
    from clowdr.engine import run_local
    from clowdr.request import LocalRequest

    if dataloc not in (None, "", "localhost") and not str(dataloc).startswith("s3://"):
        raise InputError("dataloc", f"'{dataloc}': expected 'localhost' (local data) or an s3:// location")
    options = {name: kwargs[name] for name in _PLANNING if kwargs.get(name) is not None}
    s3 = str(dataloc) if str(dataloc or "").startswith("s3://") else None
    request = LocalRequest.of(dict(options, descriptor=str(tool), invocation=str(invocation), provdir=str(clowdrloc),
                                   s3=s3, setup=True, command=["clowdr.controller.metadata.consolidateTask",
                                                               str(tool), str(invocation), str(clowdrloc),
                                                               str(dataloc)]))
    run = run_local(request).run
    tasks = sorted((path for path in run.meta.iterdir() if TASK_FILE.match(path.name)),
                   key=lambda path: int(TASK_FILE.match(path.name).group(1)))    # type: ignore[union-attr]
    invocations = [str(load_json(path, "task file")["invocation"]) for path in tasks]
    return [str(path) for path in tasks], invocations


def sweepTasks(taskdicts: list[dict[str, Any]], invocations: list[str],
               sweep_param: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Each task once per value of ``sweep_param`` in its invocation (a list of values).

    As ``--sweep`` expands one parameter (its values checked against the task's descriptor), each derived
    invocation written beside the one it came from (``<name>_sweep-K.json``); returns the derived task
    dictionaries and invocation files. Not validated whole: another parameter may still hold a list to sweep,
    and the task is checked when it runs.
    """
    swept_tasks: list[dict[str, Any]] = []
    swept_invocations: list[str] = []
    for taskdict, invocation_file in zip(taskdicts, invocations):
        path = Path(invocation_file)
        tool = load_tool(Path(taskdict["tool"]))
        base = load_json(path, "invocation")
        for derived, name in _sweep(tool, base, path.stem, [sweep_param], str(path)):
            target = path.parent / name
            write_json(target, derived)
            swept_tasks.append(dict(taskdict, invocation=str(target)))
            swept_invocations.append(str(target))
    return swept_tasks, swept_invocations


def bidsTasks(clowdrloc: str, taskdict: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """A BIDS app's task split as ``--bids`` splits it: one per participant, participant and session, or
    session (a group-level analysis, or none listed, stays one task).

    ``clowdrloc`` is the run's ``clowdr/`` directory, where the derived invocations are written
    (``invocation_sub-P[_ses-S].json``); ``taskdict`` holds ``invocation`` and ``dataloc`` (a one-element list).
    Returns the derived task dictionaries (data location ``<dataloc>/sub-P[/ses-S]``) and invocation files.
    """
    path = Path(taskdict["invocation"])
    invocation = load_json(path, "invocation")
    if not isinstance(invocation, dict):
        raise InputError(str(path), "an invocation must be a JSON object")
    dataloc = (taskdict.get("dataloc") or ["localhost"])[0]
    tasks: list[dict[str, Any]] = []
    files: list[str] = []
    for derived, name, where in _bids_tasks(invocation, path, dataloc):
        target = path if derived is invocation else Path(clowdrloc) / name
        if derived is not invocation:
            write_json(target, derived)
        tasks.append(dict(taskdict, invocation=str(target), dataloc=where))
        files.append(str(target))
    return tasks, files


def prepareForRemote(tasks: list[str], tmploc: str, clowdrloc: str) -> int:
    """Task files written under ``tmploc`` rewritten to name their files under ``clowdrloc`` (where the run
    goes, e.g. an s3:// location), before the directory is uploaded there. Returns 0, as the original did."""
    from clowdr.handrun import read_task_file

    for task in tasks:
        path = Path(task)
        index, definition = read_task_file(path)
        for key in ("invocation", "taskloc", "tool"):
            if definition.get(key):
                definition[key] = _moved(str(definition[key]), tmploc, clowdrloc)
        RunDir.of_meta(path.parent).write_task(index, definition)
    return 0


def _moved(path: str, tmploc: str, clowdrloc: str) -> str:
    return f"{clowdrloc.rstrip('/')}/{os.path.relpath(path, tmploc)}"

