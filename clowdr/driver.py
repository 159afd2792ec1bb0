"""The original tool's Python API, same names, as thin calls into the modules that do the work."""
from __future__ import annotations

import argparse
import inspect
from typing import Any

#: keywords the original CLI passed along with the options (its whole argparse namespace), ignored here
_ORIGINAL_EXTRAS = ("func", "mode")
#: the original's order of ``local``'s parameters after ``backoff_time``, for callers that pass them by position
ORIGINAL_ORDER = ("sweep", "verbose", "workdir", "simg", "rerun", "run_id", "volumes", "s3", "cluster", "jobname",
                  "clusterargs", "dev", "groupby", "user", "setup", "bids")


def local(descriptor: str, invocation: str, provdir: str, backoff_time: int = 36000, *positional: Any,
          **options: Any) -> str:
    """Run (or with ``setup=True``, only record) tasks; return the run's ``clowdr/`` directory as the original did.

    ``options`` are the long names of ``clowdr local``'s options (``clowdr.request.LocalRequest``: ``sweep``,
    ``verbose``, ``workdir``, ``simg``, ``rerun``, ``run_id``, ``volumes``, ``s3``, ``cluster``, ``jobname``,
    ``clusterargs``, ``dev``, ``groupby``, ``user``, ``setup``, ``bids``). ``backoff_time`` is accepted for
    compatibility: the monitor is event-driven and never polls. Task failures are recorded, not raised; bad
    input raises ``clowdr.errors.InputError``.
    """
    from clowdr.engine import run_local
    from clowdr.request import LocalRequest

    options = {k: v for k, v in options.items() if k not in _ORIGINAL_EXTRAS}
    options.update(zip(ORIGINAL_ORDER, positional))
    request = LocalRequest.of(dict(options, descriptor=descriptor, invocation=invocation, provdir=provdir))
    return str(run_local(request).run.meta)


def _original_signature() -> inspect.Signature:
    """``local``'s signature as the original tool declared it, its defaults those of ``LocalRequest`` (a list
    option's default is None, as in the original)."""
    from dataclasses import MISSING, fields

    from clowdr.request import LocalRequest

    declared = {f.name: None if f.default is MISSING else f.default for f in fields(LocalRequest)}
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    head = [inspect.Parameter(name, kind) for name in ("descriptor", "invocation", "provdir")]
    head.append(inspect.Parameter("backoff_time", kind, default=36000))
    options = [inspect.Parameter(name, kind, default=declared[name]) for name in ORIGINAL_ORDER]
    rest = inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)
    return inspect.Signature([*head, *options, rest], return_annotation=str)


local.__signature__ = _original_signature()  # type: ignore[attr-defined]


def cloud(descriptor: str, invocation: str, provdir: str, s3: str, cloud: str, credentials: str,
          **kwargs: Any) -> str:
    """Run (or with ``setup=True``, only plan) tasks on AWS; return the run's ``clowdr/`` directory (the local
    mirror of an ``s3://`` PROVDIR). ``kwargs``: ``region``, ``verbose``, ``dev``, ``sweep``, ``bids``, ``setup``."""
    from clowdr.cloudrun import cloud_request, run_cloud

    options = {k: v for k, v in kwargs.items() if k not in _ORIGINAL_EXTRAS}
    request = cloud_request(dict(options, descriptor=descriptor, invocation=invocation, provdir=provdir, s3=s3,
                                 cloud=cloud, credentials=credentials))
    return str(run_cloud(request, None).run.meta)


def share(provdir: str, **kwargs: Any) -> int:
    """Serve the dashboard of PROVDIR until interrupted, or with ``export="FILE.html"`` write it as one file.

    Keyword options: ``host`` (default 127.0.0.1), ``port`` (0: a free one), ``debug``, ``show`` (open a browser),
    ``announce`` (called with the URL once listening). A bad PROVDIR raises ``clowdr.errors.InputError``.
    """
    from clowdr.share.serve import share as serve_or_export

    return serve_or_export(provdir, host=kwargs.get("host") or "127.0.0.1", port=int(kwargs.get("port") or 0),
                           debug=bool(kwargs.get("debug")), show=bool(kwargs.get("show")),
                           export=kwargs.get("export"), announce=kwargs.get("announce"))


def runtask(tasklist: list[str], **kwargs: Any) -> int:
    """Run task files on this machine with full provenance; return 0 if every task succeeded, else 1."""
    from clowdr.handrun import run_task_files

    return run_task_files(tasklist, provdir=kwargs.get("provdir"), workdir=kwargs.get("workdir"),
                          volumes=list(kwargs.get("volumes") or [])).exit_status


def makeparser() -> argparse.ArgumentParser:
    from clowdr.cli import makeparser as build

    return build()


def main(args: list[str] | None = None) -> int:
    from clowdr.cli import main as run

    return run(args)
