"""The cluster factory: every back-end is a Dask cluster; only this module knows which."""
from __future__ import annotations

import logging
import os
from typing import Any

from clowdr import config
from clowdr.errors import NotAvailableError


def cluster_kind(cluster: str | None) -> str:
    return cluster or "local"


def make_cluster(cluster: str | None) -> Any:
    """Start the cluster the user asked for (a LocalCluster unless told otherwise)."""
    import dask.config
    import distributed  # noqa: F401 - imported first: it resets its loggers to INFO on import

    logging.getLogger("distributed").setLevel(logging.ERROR)   # Dask's chatter would drown clowdr's own messages
    kind = cluster_kind(cluster)
    dask.config.set({"distributed.scheduler.allowed-failures": config.get("scheduler.allowed-failures")})
    if kind == "local":
        return _local_cluster()
    raise NotAvailableError(f"--cluster {kind} is not available yet in this version of clowdr")


def _local_cluster() -> Any:
    from distributed import LocalCluster

    settings = config.get("local")
    workers = settings["n-workers"] or os.cpu_count() or 1
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=settings["threads-per-worker"],
        processes=True,
        memory_limit=settings["memory-limit"],
        host=settings["host"],
        dashboard_address=settings["dashboard-address"],
        silence_logs=logging.ERROR,
        preload=["clowdr.worker"],
    )
