"""A Dask worker preload for tests: the worker (and every tool it starts) loses sight of one directory.

The worker's thread unshares its mount namespace and mounts an empty tmpfs over ``$CLOWDR_TEST_HIDDEN``;
threads it creates later (Dask's task threads) and their child processes inherit that view, while the
client, in the original namespace, still sees the directory. Needs root (CAP_SYS_ADMIN).
"""
from __future__ import annotations

import ctypes
import os
from typing import Any

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def dask_setup(worker: Any) -> None:
    hidden = os.environ["CLOWDR_TEST_HIDDEN"].encode()
    libc = ctypes.CDLL(None, use_errno=True)
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    _check(libc.mount(b"tmpfs", hidden, b"tmpfs", 0, b"size=64k,mode=0555"), "mount tmpfs")
