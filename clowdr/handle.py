"""The Python API's non-blocking launch: a futures-like handle on a run going on in the background.

``launch(...)`` validates at once (bad input raises here, nothing written), then runs in a thread, so a
notebook cell returns immediately; the handle says where the record is, whether the run is done, and
shows the live dashboard.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from clowdr.engine import Outcome, Started, run_started, start
from clowdr.errors import LaunchStopped
from clowdr.request import LocalRequest


class RunHandle:
    """A launch in the background: ``done()``, ``wait()``/``result()``, ``cancel()``, ``dashboard()``."""

    def __init__(self, request: LocalRequest) -> None:
        started = start(request)
        self.run_dir: Path = started.run.meta
        self.dask_dashboard_link: str | None = None
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clowdr-launch")
        self._future: Future[Outcome] = self._pool.submit(self._run, started)
        self._pool.shutdown(wait=False)

    def _run(self, started: Started) -> Outcome:
        """The launch to its end; stopped by ``cancel``, its outcome says so (counts from the launch's record)."""
        try:
            return run_started(started, self._on_client, self._stop)
        except LaunchStopped:
            if not self._stop.is_set():
                raise
            launches = started.run.read_run().get("launches") or [{}]
            ended = launches[-1]
            return Outcome(started.run, succeeded=int(ended.get("succeeded") or 0),
                           failed=int(ended.get("failed") or 0), launched=True, cancelled=True)

    def _on_client(self, client: Any) -> None:
        self.dask_dashboard_link = client.dashboard_link

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> Outcome:
        """Block until the run ends (or ``timeout`` seconds); its outcome (``cancelled`` after ``cancel()``), or
        the error that ended it (a full disk: ``RecordError``)."""
        return self._future.result(timeout)

    result = wait

    def __await__(self) -> Generator[Any, None, Outcome]:
        """``await handle``: the outcome, without blocking the event loop. In a notebook this is the way to wait:
        a blocking ``wait()`` holds the kernel's loop, so the dashboard's refresh cannot run and the browser's
        opening of the dashboard's channel (queued behind the cell) is not served until the run has ended."""
        return asyncio.wrap_future(self._future).__await__()

    def cancel(self) -> None:
        """Stop the run: running tools are stopped, unfinished tasks stay without a summary (--rerun incomplete);
        ``wait()`` then returns an outcome with ``cancelled`` true (``exit_status`` 130)."""
        self._stop.set()

    def dashboard(self) -> Any:
        """The live dashboard of this run (a Panel object: displays in a notebook cell).

        Its JavaScript (BokehJS, Panel) comes from the installed packages, inlined in the notebook, never from a
        CDN: a notebook on a cluster node or offline shows it all the same."""
        import panel as pn

        from clowdr.share.app import dashboard

        pn.config.inline = True

        return dashboard(self.run_dir, dask_dashboard=self.dask_dashboard_link)

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        return f"<clowdr run {self.run_dir.parent.name} ({state}); record in {self.run_dir}>"


def launch(descriptor: str, invocation: str, provdir: str, **options: Any) -> RunHandle:
    """Start ``clowdr local`` without blocking; ``options`` are those of ``clowdr.driver.local``."""
    command = ["clowdr.launch", str(descriptor), str(invocation), str(provdir)]
    return RunHandle(LocalRequest.of(dict(options, descriptor=str(descriptor), invocation=str(invocation),
                                          provdir=str(provdir), command=command)))
