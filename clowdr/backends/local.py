"""The default back-end: a Dask LocalCluster on this machine, one single-threaded worker per core.

Its workers are threads of the clowdr process unless ``local.processes`` is true: tools are processes of their
own either way (a crashing tool cannot take the client down), and the workers only start, sample and wait for
them, so starting, importing Dask into and shutting down one process per core bought nothing but ~1 s.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from clowdr.backends.base import Backend


def quiet_dask() -> None:
    """Dask's INFO chatter would drown clowdr's own messages (imported first: it resets its loggers)."""
    import distributed  # noqa: F401

    for name in ("distributed", "dask_jobqueue"):
        logging.getLogger(name).setLevel(logging.ERROR)


def worker_preloads() -> list[str]:
    """The user's own worker preloads (``distributed.worker.preload``), then clowdr's."""
    import dask.config

    return [*(dask.config.get("distributed.worker.preload") or []), "clowdr.worker"]


class LocalBackend(Backend):
    """Tools run on this machine. ``local.shared-filesystem: false`` makes it behave as a back-end whose workers
    cannot see the client's files (tasks in worker scratch space, logs streamed back)."""

    name = "local"

    def task_memory(self) -> int | None:
        """``-a mem:N`` (as for a scheduler: a plain number is MiB), else ``local.task-memory``."""
        from clowdr.backends.jobqueue import bytes_of, parse_clusterargs

        given = {key: value for key, value in parse_clusterargs(self.request.clusterargs).items()
                 if key in ("mem", "memory")}
        for value in given.values():
            return bytes_of(value)
        configured = self.setting("task-memory")
        return bytes_of(configured, "clowdr.local.task-memory") if configured is not None else None

    def slots(self) -> int:
        return self._workers() * int(self.setting("threads-per-worker"))

    def _workers(self) -> int:
        return int(self.setting("n-workers") or os.cpu_count() or 1)

    def check(self) -> None:
        super().check()
        self.task_memory()

    def prepare(self) -> None:
        """Only with worker processes: multiprocessing's resource tracker, which the workers' start brings up,
        stays in the terminal's process group and ignores SIGINT and SIGTERM but not SIGHUP: a hang-up would
        kill it, and every worker would then print its tracebacks. Started here, from the main thread, it
        inherits SIGHUP ignored."""
        import signal
        from multiprocessing import resource_tracker

        if not self.setting("processes"):
            return
        try:
            previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        except ValueError:          # not the main thread: nothing to inherit from here
            return
        try:
            resource_tracker.ensure_running()
        finally:
            signal.signal(signal.SIGHUP, previous)

    def start(self, log_directory: Path | None = None) -> Any:
        from distributed import LocalCluster

        quiet_dask()
        dashboard = self.setting("dashboard-address")
        loopback = self.setting("host")
        return LocalCluster(
            n_workers=self._workers(),
            threads_per_worker=self.setting("threads-per-worker"),
            processes=bool(self.setting("processes")),
            protocol="tcp://",        # workers in this process too: every server on loopback, none on a LAN address
            memory_limit=self.setting("memory-limit"),
            host=loopback,
            dashboard_address=dashboard,
            # without a dashboard, the scheduler's small HTTP server (health, metrics) on a free loopback port
            scheduler_kwargs=None if dashboard else {"dashboard_address": f"{loopback}:0"},
            silence_logs=logging.ERROR,
            preload=worker_preloads(),
        )
