"""No tool outlives the process that started it: a small guard process per worker kills the tools it was told of
the moment that worker dies, however it dies.

Tools run in sessions of their own (so that one can be stopped whole), which also means nothing kills them
with their worker: a worker killed by SIGKILL, by the OOM killer, or ended by Dask's ``os._exit`` when its
client vanished runs no clean-up code. So each worker process starts one guard (``python -m clowdr.guard``,
in a session of its own, deaf to the terminal's signals) and tells it, through a pipe, of every tool it
starts and every tool that has ended. The kernel closes that pipe when the worker dies, whatever the cause;
the guard then kills every process group it still knows (SIGKILL), everything in their cgroups (a daemon that
left its group included), kills their containers, removes their scratch files, and exits. A guard that cannot be started leaves the worker as it was before guards existed
(logged once).

Messages are JSON lines, each written whole: ``{"watch": PGID, "container": [ENGINE, CIDFILE] or null,
"files": [...], "cgroup": PATH or null}`` and ``{"release": PGID}``.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading

from clowdr.limits import remove_cgroup

log = logging.getLogger("clowdr")


class Guard:
    """This process's guard: ``watch`` a tool as it starts, ``release`` it once it has ended."""

    _instance: "Guard | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.owner = os.getpid()          # a forked child is another worker: it needs a guard of its own
        self._process = subprocess.Popen([sys.executable, "-m", "clowdr.guard"], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True, close_fds=True)
        assert self._process.stdin is not None
        self._pipe = self._process.stdin.fileno()
        self._write_lock = threading.Lock()

    @classmethod
    def get(cls) -> "Guard | None":
        """The guard of this process, started on first use (None if it cannot be started)."""
        with cls._lock:
            if cls._instance is None or cls._instance.owner != os.getpid():
                try:
                    cls._instance = cls()
                except OSError as exc:
                    log.warning("no guard for this worker's tools (%s): a worker killed hard may leave them "
                                "running", exc)
                    return None
            return cls._instance

    def _send(self, message: dict[str, object]) -> None:
        with self._write_lock:
            try:
                os.write(self._pipe, (json.dumps(message) + "\n").encode())
            except OSError:   # the guard is gone (killed by hand): the tools are as before guards existed
                pass

    def watch(self, pgid: int, container: tuple[str, str] | None = None, files: tuple[str, ...] = (),
              cgroup: str | None = None) -> None:
        """Kill process group ``pgid`` (and the container whose id docker writes to the cidfile, and whatever is
        in the tool's cgroup) if this process dies before ``release``; remove ``files`` then too."""
        self._send({"watch": pgid, "container": container, "files": list(files), "cgroup": cgroup})

    def release(self, pgid: int) -> None:
        self._send({"release": pgid})


def _kill(pgid: int, container: tuple[str, str] | None, files: list[str], cgroup: str | None) -> None:
    """The files first: once the processes are seen gone, nothing of theirs is left either."""
    container_id = None
    if container:
        try:
            with open(container[1]) as handle:
                container_id = handle.read().strip() or None
        except OSError:
            pass
    for path in files:
        try:
            os.remove(path)
        except OSError:
            pass
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
    if cgroup:
        remove_cgroup(cgroup)
    if container and container_id:
        try:
            subprocess.run([container[0], "kill", container_id], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.SubprocessError):
            pass


def main() -> None:
    """Read the worker's messages until the pipe closes, then kill what is still watched."""
    for name in ("SIGINT", "SIGHUP", "SIGQUIT"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    watched: dict[int, tuple[tuple[str, str] | None, list[str], str | None]] = {}
    for line in sys.stdin.buffer:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if "watch" in message:
            container = message.get("container")
            watched[int(message["watch"])] = (tuple(container) if container else None, message.get("files") or [],
                                              message.get("cgroup"))
        else:
            watched.pop(int(message.get("release", -1)), None)
    for pgid, (container, files, cgroup) in watched.items():
        _kill(pgid, container, files, cgroup)


if __name__ == "__main__":
    main()
