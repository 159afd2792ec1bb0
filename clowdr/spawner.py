"""A tool's parent: one small process per worker starts every tool, reaps it, and stops each tool still running
the moment its worker dies, however it dies.

Why a process of its own, rather than the worker forking its tools:

* A true peak RSS, without an exec per task to get it. Linux copies the spawning process's RSS high-water mark
  into a tool at exec, so ``ru_maxrss`` of a tool the worker starts (tens of MiB of Python, more in a notebook)
  says nothing about a tool below that size. This process imports nothing beyond Python's core: a tool's
  ``ru_maxrss`` above the spawner's own high-water mark (~11 MiB, reported with it) is the tool's own peak;
  at or below it, the tool's peak is known only to be at most that. (GNU time, which clowdr ran each tool under
  before, knew it from ~1.5 MiB, at the price of an exec and a fork of its own per task: ~1.3 ms of CPU here.)
* No tool outlives its worker. Tools run in sessions of their own (so that one can be stopped whole), so nothing
  kills them with their worker, and a worker killed by SIGKILL, the OOM killer or Dask's ``os._exit`` runs no
  clean-up code. The kernel closes the worker's end of the control socket however it dies: the spawner then
  kills every tool it still runs (its process group, whatever is in its cgroup, its container), removes their
  files, and exits. It lives in a session of its own, deaf to the terminal's signals.

It runs as ``python -I -S spawner.py FD``, this file as a script: it must import only the standard library's
core modules at the top (its size when it forks is the least peak a tool can be recorded with). Each worker
thread gets a line of its own (a socket pair, one end sent over the control socket) and runs one tool at a
time on it: a spawn request (a frame, with the tool's stdout, stderr and any descriptor to keep, e.g. its lock,
attached) is answered with the tool's pid or why it could not start, and a second frame when the tool has
ended: its wait status and resource usage. Before reaping a tool, the spawner kills whatever the tool left in
its process group, while the group id still names it.
"""
from __future__ import annotations

import _thread
import array
import errno
import marshal
import os
import select
import signal
import socket
import struct
import sys
import time

TYPE_CHECKING = False          # typing itself costs the spawner 0.8 MiB, hence every tool's least peak
if TYPE_CHECKING:
    from typing import Any

HEADER = struct.Struct("!I")
MAX_FDS = 8
IGNORED = (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)     # the terminal's: the spawner is deaf to them
#: signals the spawner ignores, and those Python ignores: a tool starts with their defaults
RESET_SIGNALS = (*IGNORED, signal.SIGPIPE, signal.SIGXFSZ)


class SpawnError(Exception):
    """A tool could not be started (no working directory, no such program, no cgroup to join), or the spawner
    itself is gone."""


class Usage:
    """What ``wait4`` says of an ended tool (and of every descendant it waited for)."""

    __slots__ = ("user_time", "system_time", "max_rss", "floor", "read_blocks", "write_blocks")

    def __init__(self, user_time: float, system_time: float, max_rss: int, floor: int, read_blocks: int,
                 write_blocks: int) -> None:
        self.user_time = user_time
        self.system_time = system_time
        self.max_rss = max_rss              # bytes: the tool's peak, or the spawner's high-water mark
        self.floor = floor                  # bytes: the spawner's high-water mark
        self.read_blocks = read_blocks      # of 512 bytes
        self.write_blocks = write_blocks

    @property
    def peak_rss(self) -> int | None:
        """The tool's own peak RSS, where ``ru_maxrss`` shows it (None: at most ``floor``)."""
        return self.max_rss if self.max_rss > self.floor else None


# -- frames: a length, then a marshalled message; descriptors ride with its first bytes ------------------------
def send(sock: socket.socket, message: Any, fds: tuple[int, ...] = ()) -> None:
    data = marshal.dumps(message)
    data = HEADER.pack(len(data)) + data
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sent = sock.sendmsg([data], ancillary)
    if sent < len(data):
        sock.sendall(data[sent:])


class Frames:
    """The frames one stream socket brings, and the descriptors that came with them (close-on-exec)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.fds: list[int] = []

    def _whole(self) -> int | None:
        """The end of the first frame, if it is all in the buffer."""
        if len(self.buffer) < HEADER.size:
            return None
        end = HEADER.size + HEADER.unpack_from(self.buffer)[0]
        return end if len(self.buffer) >= end else None

    def ready(self, seconds: float | None) -> bool:
        """Whether a frame has come, or begun to come, within ``seconds`` (None: however long it takes)."""
        return self._whole() is not None or bool(select.select([self.sock], [], [], seconds)[0])

    def next(self) -> Any:
        """The next whole frame, waiting for it; None once the other end has closed the socket."""
        while (end := self._whole()) is None:
            data, ancillary, _, _ = self.sock.recvmsg(1 << 16, socket.CMSG_SPACE(MAX_FDS * 4),
                                                      socket.MSG_CMSG_CLOEXEC)
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    self.fds.extend(array.array("i", payload[:len(payload) - len(payload) % 4]))
            if not data:
                return None
            self.buffer += data
        message = marshal.loads(bytes(self.buffer[HEADER.size:end]))
        del self.buffer[:end]
        return message

    def take_fds(self) -> list[int]:
        fds, self.fds = self.fds, []
        return fds


# -- the worker's side ------------------------------------------------------------------------------------------
class Spawner:
    """This process's spawner, started on first use: ``start`` runs a tool through it."""

    _instance: "Spawner | None" = None
    _starting = _thread.allocate_lock()

    def __init__(self) -> None:
        import subprocess

        self.owner = os.getpid()          # a forked child is another worker: it needs a spawner of its own
        ours, theirs = socket.socketpair()
        try:
            self._process = subprocess.Popen([sys.executable, "-I", "-S", __file__, str(theirs.fileno())],
                                             pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                             start_new_session=True)
        finally:
            theirs.close()
        self._control = ours
        self._control_lock = _thread.allocate_lock()
        self._lines = _thread._local()

    @classmethod
    def get(cls) -> "Spawner":
        """The spawner of this process (a new one if it has none, or the last one has ended)."""
        with cls._starting:
            spawner = cls._instance
            if spawner is None or spawner.owner != os.getpid() or spawner._process.poll() is not None:
                try:
                    spawner = cls._instance = cls()
                except OSError as exc:
                    raise SpawnError(f"cannot start the process that starts tools ({sys.executable}): {exc}") from exc
            return spawner

    def _line(self) -> Frames:
        """This thread's line to the spawner."""
        line = getattr(self._lines, "frames", None)
        if line is None:
            ours, theirs = socket.socketpair()
            try:
                with self._control_lock:
                    send(self._control, "line", (theirs.fileno(),))
            finally:
                theirs.close()
            line = self._lines.frames = Frames(ours)
        return line

    def start(self, argv: list[str], cwd: str, env: dict[str, str], stdout: int, stderr: int,
              keep: tuple[int, ...] = (), cgroup: str | None = None, container: tuple[str, str] | None = None,
              files: tuple[str, ...] = ()) -> "Tool":
        """Start ``argv`` in a session of its own (stdin /dev/null; ``keep`` inherited; in ``cgroup``, if any).
        ``container`` (engine, cid file) and ``files`` are what to kill and remove if this worker dies first.

        Returns once the request is sent (the descriptors may be closed then): the caller may do other work
        while the tool starts, and learns its pid, or why it could not start, from ``Tool.pid``."""
        line = self._line()
        try:
            send(line.sock, {"argv": argv, "cwd": cwd, "env": env, "cgroup": cgroup, "container": container,
                             "files": list(files)}, (stdout, stderr, *keep))
        except OSError as exc:
            self._lost(exc)
        return Tool(self, line)

    def _lost(self, exc: OSError | None) -> None:
        """The spawner is gone (or the line to it broken): SpawnError; the next tool gets a new one."""
        if exc is not None and exc.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise SpawnError(f"cannot reach the process that starts tools: {exc}") from exc
        self._lines.frames = None
        raise SpawnError(f"the process that starts tools has ended ({self._process.poll()})")


class Tool:
    """A tool the spawner was asked to start: its pid once it has started, and its end as the spawner reports it."""

    def __init__(self, spawner: Spawner, line: Frames) -> None:
        self._spawner = spawner
        self._line = line
        self._pid: int | None = None

    @property
    def pid(self) -> int:
        """The tool's pid, waiting for the spawner's answer the first time; SpawnError if it could not start."""
        if self._pid is None:
            try:
                reply = self._line.next()
            except OSError as exc:
                self._spawner._lost(exc)
            if reply is None:
                self._spawner._lost(None)
            if "error" in reply:
                raise SpawnError(reply["error"])
            self._pid = int(reply["pid"])
        return self._pid

    def ended(self, seconds: float | None) -> bool:
        """Whether the tool has ended, waiting up to ``seconds`` to know."""
        self.pid                                    # its start is answered first, on the same line
        return self._line.ready(seconds)

    def result(self) -> tuple[int, Usage]:
        """The tool's wait status and usage, waiting for its end; SpawnError if the spawner died first (the
        tool's process group is then killed here: nothing of it outlives its attempt)."""
        pid = self.pid
        reply = self._line.next()
        if reply is None:
            kill_group(pid)
            raise SpawnError("the process that started the tool ended before the tool did")
        return reply["status"], Usage(*reply["usage"])


# -- what stops a tool ----------------------------------------------------------------------------------------------
def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def remove_cgroup(path: str) -> None:
    """Kill every process in the cgroup at ``path``, then remove it."""
    for _ in range(20):
        try:
            with open(f"{path}/cgroup.procs") as handle:
                pids = handle.read().split()
        except OSError:
            return
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.005)
    try:
        os.rmdir(path)
    except OSError:
        pass


def container_id(cidfile: str) -> str | None:
    """The id the container engine wrote to its ``--cidfile`` once the container existed (None: not yet, or never)."""
    try:
        with open(cidfile) as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def kill_container(engine: str, found: str, timeout: float) -> None:
    import subprocess

    try:
        subprocess.run([engine, "kill", found], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        pass


def stop_everything(pgid: int, container: list[str] | None, files: list[str], cgroup: str | None) -> None:
    """What a worker that died leaves of a tool: the files first (once the processes are gone, nothing of
    theirs is left either), its process group, its cgroup, its container."""
    found = container_id(container[1]) if container else None
    for path in files:
        try:
            os.remove(path)
        except OSError:
            pass
    kill_group(pgid)
    if cgroup:
        remove_cgroup(cgroup)
    if container and found:
        kill_container(container[0], found, timeout=60)


# -- the spawner's side --------------------------------------------------------------------------------------------
class Running:
    """A tool the spawner runs: the line to tell of its end, and what to stop with it if the worker dies."""

    __slots__ = ("line", "container", "files", "cgroup")

    def __init__(self, line: socket.socket, container: list[str] | None, files: list[str],
                 cgroup: str | None) -> None:
        self.line = line
        self.container = container
        self.files = files
        self.cgroup = cgroup


def _spawn(request: dict[str, Any], fds: list[int]) -> dict[str, Any]:
    """Start one tool (``posix_spawn``: no copy of this process's pages, unlike a fork); its pid, or why it
    could not start. It takes this process's working directory, changed to its own first."""
    if len(fds) < 2:
        return {"error": "a spawn request without the tool's stdout and stderr"}
    stdout, stderr, *keep = fds
    try:
        os.chdir(request["cwd"])
    except OSError as exc:
        return {"error": f"cannot enter the working directory {request['cwd']}: {exc.strerror}"}
    for fd in keep:
        os.set_inheritable(fd, True)
    argv = request["argv"]
    try:
        pid = os.posix_spawn(argv[0], argv, request["env"], setsid=True, setsigdef=RESET_SIGNALS,
                             file_actions=[(os.POSIX_SPAWN_DUP2, stdout, 1), (os.POSIX_SPAWN_DUP2, stderr, 2)])
    except OSError as exc:
        return {"error": f"cannot run {argv[0]}: {exc.strerror or exc}"}
    return {"pid": pid}


def _reap(running: dict[int, Running]) -> None:
    """Every tool that has ended: kill what it left in its group (its id still names it until the reaping),
    reap it, and tell its line."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None:
            return
        kill_group(info.si_pid)
        _, status, usage = os.wait4(info.si_pid, 0)
        tool = running.pop(info.si_pid, None)
        if tool is not None:
            _answer(tool.line, {"status": status, "usage": (usage.ru_utime, usage.ru_stime, usage.ru_maxrss * 1024,
                                                            _high_water_mark(), usage.ru_inblock, usage.ru_oublock)})


def _high_water_mark() -> int:
    """This process's peak RSS (bytes), which a tool it spawns starts from."""
    with open("/proc/self/status", "rb") as handle:
        for line in handle:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _answer(line: socket.socket, message: Any) -> None:
    """A line whose worker thread is gone (it closed it) is noticed when it reads as closed, not here."""
    try:
        send(line, message)
    except OSError:
        pass


def main() -> None:
    """Serve the worker's lines until its control socket closes, then stop every tool still running."""
    for number in IGNORED:
        signal.signal(number, signal.SIG_IGN)
    woken, wake = os.pipe()
    os.set_blocking(wake, False)
    signal.set_wakeup_fd(wake)
    signal.signal(signal.SIGCHLD, lambda *_: None)      # a handler, so that SIGCHLD writes to the wake-up pipe
    control = Frames(socket.socket(fileno=int(sys.argv[1])))
    lines: dict[int, Frames] = {}
    running: dict[int, Running] = {}
    try:
        while True:
            ready = select.select([control.sock, woken, *(line.sock for line in lines.values())], [], [])[0]
            if woken in ready:
                os.read(woken, 4096)
                _reap(running)
            for sock in ready:
                if sock is control.sock:
                    if control.next() is None:
                        return
                    lines.update((fd, Frames(socket.socket(fileno=fd))) for fd in control.take_fds())
                elif sock is not woken:
                    _serve(lines, sock.fileno(), running)
    finally:
        for pid, tool in running.items():
            stop_everything(pid, tool.container, tool.files, tool.cgroup)


def _serve(lines: dict[int, Frames], fd: int, running: dict[int, Running]) -> None:
    """One request on a line; a line that closes takes its tool with it (its worker thread is gone)."""
    line = lines[fd]
    request = line.next()
    fds = line.take_fds()
    if request is None:
        for pid, tool in list(running.items()):
            if tool.line is line.sock:
                stop_everything(pid, tool.container, tool.files, tool.cgroup)
                del running[pid]
        del lines[fd]
        line.sock.close()
        return
    try:
        reply = _spawn(request, fds)
    finally:
        for descriptor in fds:
            os.close(descriptor)
    if "pid" in reply:
        running[reply["pid"]] = Running(line.sock, request["container"], request["files"], request["cgroup"])
    _answer(line.sock, reply)


if __name__ == "__main__":
    main()
