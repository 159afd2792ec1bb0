"""Preloaded by every cloud worker (``dask-worker --preload-nanny/--preload clowdr.cloudworker``): it refuses to
serve a client whose software differs from its own, then sets up as any clowdr worker.

A worker image built for other versions of Python, dask, distributed or clowdr fails in ways that look like
tool errors (a task that cannot be unpickled, an event the client cannot read). The client sends its versions
in ``CLOWDR_CLIENT_VERSIONS``; a worker that differs stops at once, its log naming each difference.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

#: the exit status of a worker (or its nanny) that refused a client of other versions
MISMATCH_EXIT = 3


class VersionMismatch(RuntimeError):
    """The worker image does not match the client."""


def mismatches(client: dict[str, str], own: dict[str, str]) -> list[str]:
    """What differs: ``name: client X, worker Y`` for each package the client named."""
    return [f"{name}: client {value}, worker {own.get(name, 'missing')}" for name, value in sorted(client.items())
            if own.get(name) != value]


def check_versions() -> None:
    from clowdr.backends.cloud import VERSIONS_VARIABLE, client_versions

    wanted = os.environ.get(VERSIONS_VARIABLE)
    if not wanted:
        return
    differ = mismatches(json.loads(wanted), client_versions())
    if differ:
        raise VersionMismatch("clowdr: this worker image does not match the client (rebuild it from "
                              "docker/Dockerfile.worker): " + "; ".join(differ))


def dask_setup(server: Any) -> None:
    """Preloaded in the nanny (``--preload-nanny``: a mismatch ends the whole ``dask-worker`` at once instead of
    the nanny restarting its worker forever) and in the worker (``--preload``: also without a nanny)."""
    try:
        check_versions()
    except VersionMismatch as exc:       # distributed only logs a preload's failure and starts all the same
        print(exc, file=sys.stderr, flush=True)
        os._exit(MISMATCH_EXIT)
    if type(server).__name__ != "Nanny":
        from clowdr.worker import dask_setup as clowdr_setup

        clowdr_setup(server)
