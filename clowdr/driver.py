"""The original tool's Python API, same names and signatures, as thin calls into the engine."""
from __future__ import annotations

import argparse
from typing import Any

from clowdr.errors import NotAvailableError


def local(descriptor: str, invocation: str, provdir: str, backoff_time: int = 36000, sweep: list[str] | None = None,
          verbose: bool = False, workdir: str | None = None, simg: str | None = None, rerun: str | None = None,
          run_id: str | None = None, volumes: list[str] | None = None, s3: str | None = None,
          cluster: str | None = None, jobname: str | None = None, clusterargs: str | None = None,
          dev: bool = False, groupby: int | None = 1, user: bool = False, setup: bool = False, bids: bool = False,
          **kwargs: Any) -> str:
    """Run (or with ``setup``, only record) tasks; return the run's ``clowdr/`` directory as the original did.

    ``backoff_time`` is accepted for compatibility: the monitor is event-driven and never polls.
    Task failures are recorded, not raised; bad input raises ``clowdr.errors.InputError``.
    """
    from clowdr.engine import LocalRequest, run_local

    request = LocalRequest(descriptor=descriptor, invocation=invocation, provdir=provdir, verbose=verbose, dev=dev,
                           workdir=workdir, volumes=list(volumes or []), groupby=groupby, sweep=list(sweep or []),
                           setup=setup, cluster=cluster, clusterargs=clusterargs, jobname=jobname, simg=simg,
                           user=user, rerun=rerun, run_id=run_id, s3=s3, bids=bids)
    return str(run_local(request).run.meta)


def cloud(descriptor: str, invocation: str, provdir: str, s3: str, cloud: str, credentials: str,
          **kwargs: Any) -> str:
    """Cloud deployment (a later release)."""
    raise NotAvailableError("clowdr cloud is not available yet in this version of clowdr")


def share(provdir: str, **kwargs: Any) -> int:
    """Serve the dashboard of PROVDIR until interrupted, or with ``export="FILE.html"`` write it as one file.

    Keyword options: ``host`` (default 127.0.0.1), ``port`` (0: a free one), ``debug``, ``show`` (open a browser),
    ``announce`` (called with the URL once listening). A bad PROVDIR raises ``clowdr.errors.InputError``.
    """
    from clowdr.errors import InputError

    try:
        import panel  # noqa: F401  (the dashboard's one optional dependency)

        from clowdr.share.serve import export, serve
    except ImportError as exc:
        raise NotAvailableError(f"clowdr share needs the dashboard packages (pip install panel): {exc}") from None
    target = kwargs.get("export")
    if target:
        from pathlib import Path

        if not Path(target).parent.is_dir():
            raise InputError(str(target), "the directory to export into does not exist")
        export(provdir, target)
        return 0
    serve(provdir, host=kwargs.get("host") or "127.0.0.1", port=int(kwargs.get("port") or 0),
          debug=bool(kwargs.get("debug")), show=bool(kwargs.get("show")), announce=kwargs.get("announce"))
    return 0


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
