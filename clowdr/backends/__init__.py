"""Where tasks run. A new back-end is a class in this package, listed here, with its section of defaults in
``configs/clowdr.yaml``; a new dask-jobqueue scheduler is one small declaration in ``jobqueue.py``.

Importing this package is cheap (no Dask, no dask-jobqueue): the CLI reads the names for ``--cluster``.
"""
from __future__ import annotations

from clowdr.backends.base import Backend, ClusterRequest
from clowdr.backends.cloud import CloudBackend
from clowdr.backends.jobqueue import LSF, PBS, SGE, SLURM, HTCondor
from clowdr.backends.local import LocalBackend
from clowdr.errors import InputError

BACKENDS: dict[str, type[Backend]] = {b.name: b for b in (LocalBackend, SLURM, SGE, PBS, LSF, HTCondor, CloudBackend)}
#: the schedulers ``--cluster`` accepts (the local back-end is what runs without it; the cloud, through ``cloud``)
SCHEDULERS = tuple(name for name in BACKENDS if name not in (LocalBackend.name, CloudBackend.name))


def backend_class(name: str | None) -> type[Backend]:
    """The back-end called ``name`` (None: the local one)."""
    try:
        return BACKENDS[name or LocalBackend.name]
    except KeyError:
        raise InputError("--cluster", f"unknown back-end '{name}' (choose from {', '.join(SCHEDULERS)})") from None


def current_job() -> tuple[str, str | None]:
    """The back-end whose batch job this process runs in, and the job's id (``local``, None outside one)."""
    for backend in BACKENDS.values():
        job_id = backend.worker_job_id()
        if job_id:
            return backend.name, job_id
    return LocalBackend.name, None


def backend_for(name: str | None, request: ClusterRequest | None = None) -> Backend:
    return backend_class(name)(request)


__all__ = ["BACKENDS", "SCHEDULERS", "Backend", "ClusterRequest", "backend_class", "backend_for", "current_job"]
