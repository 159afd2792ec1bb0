"""What runs on a worker: spawn the tool in its own process, sample it, collect exact figures at exit.

The same function runs on every back-end. It never touches process-global state (cwd, os.environ):
each tool gets its own working directory and environment. Progress leaves as ``clowdr.protocol`` events
through ``emit`` (Dask events on a cluster), and the end record is also the function's return value.
Where the back-end shares no filesystem with the client, the task runs in scratch space of this worker and
its stdout/stderr go to the client in bounded chunks while it runs; nothing is written to client paths.
"""
from __future__ import annotations

import atexit
import fcntl
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from clowdr.lean import skip_unused_imports

skip_unused_imports()     # before Boutiques, hence jsonschema, is imported: this module runs on workers

from clowdr import channel  # noqa: E402
from clowdr.backends import backend_class  # noqa: E402
from clowdr.command import CommandBuilder, ContainerOptions, Prepared, TaskSetupError, find_outputs  # noqa: E402
from clowdr.limits import TaskCgroup, held_to, oom_kills  # noqa: E402
from clowdr.protocol import Ended, Failure, LogChunk, RunContext, Started, TaskSpec, Usage  # noqa: E402
from clowdr.sampling import MIB, DockerContainer, ProcessTree, Sampler  # noqa: E402
from clowdr.spawner import Spawner, SpawnError, Tool, container_id, kill_container  # noqa: E402
from clowdr.staging import Staging, StagingError, keep_outputs, stage_in  # noqa: E402
from clowdr.timestamps import iso  # noqa: E402

log = logging.getLogger("clowdr")

Emit = Callable[[dict[str, Any]], None]
STREAMS = ("stdout", "stderr")
_builders: dict[str, CommandBuilder] = {}
# launch key -> this process's environment when the launch's first task here started: a launch's tools share it
# (copying os.environ cost each task ~40 us)
_environments: dict[str, dict[str, str]] = {}
# Tools running in this process: process-group id -> (launch key, (docker binary, container id file) for a container
# tool). Tools run in their own sessions (so one can be stopped whole), hence nothing kills them with the worker:
# stop_running_tools does, on interrupt (called by the client) and when this process exits. One process may run
# several launches' tools (local thread workers of launches started side by side from a notebook).
_running: dict[int, tuple[str, tuple[str, str] | None]] = {}
# Launches being stopped (RunContext keys): their parcels start no further task here. The lock makes "stopped?"
# and "running" one state: a tool spawned while its launch is being stopped is either seen by the stop or sees it.
_stopped_launches: set[str] = set()
_running_lock = threading.Lock()
_leaving = False      # this worker's job ends (_leave_job): it takes no further task
# `docker run` exits 125 when the engine itself failed (no daemon, no image, bad option), not the tool.
DOCKER_ENGINE_FAILED = 125


def stop_running_tools(launch: str | None = None) -> int:
    """Stop the tools ``launch`` (a RunContext key; None: every launch) runs in this process, whole process groups
    and their containers, and start none of its tasks any more; return how many were stopped."""
    with _running_lock:
        if launch is not None:
            _stopped_launches.add(launch)
        running = [(pgid, container) for pgid, (key, container) in _running.items() if launch in (None, key)]
    stopped = 0
    for pgid, container in running:
        found = container_id(container[1]) if container else None
        if container and found:
            kill_container(container[0], found, timeout=30)
        try:
            os.killpg(pgid, signal.SIGTERM)
            stopped += 1
        except ProcessLookupError:
            pass
    return stopped


atexit.register(stop_running_tools)


def dask_setup(worker: Any) -> None:
    """Dask preload hook, run as each worker starts (importing this module warms the first task, too).

    A worker process of its own (under a nanny) leaves the terminal's process group: a Ctrl-C reaches only the
    client, which stops the running tools through ``stop_running_tools`` and shuts the workers down in order.
    A worker without a nanny is a thread of the client (or the job script's own process): it stays where it is.
    The process's spawner (``clowdr.spawner``) stops the tools if the process dies instead.
    """
    if getattr(worker, "nanny", None):
        try:
            os.setpgid(0, 0)
        except OSError:   # already a group or session leader
            pass
    try:
        Spawner.get()     # started now rather than with the first task
    except SpawnError as exc:   # each task will say so
        log.warning("%s", exc)


def builder_for(context: RunContext) -> CommandBuilder:
    """One CommandBuilder per launch and worker process (the descriptor is parsed once, not per task)."""
    if context.key not in _builders:
        _builders[context.key] = CommandBuilder(context.descriptor, ContainerOptions(**context.container))
    return _builders[context.key]


def worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def run_group(specs: list[dict[str, Any]], context: RunContext) -> list[dict[str, Any]]:
    """The Dask task: run a group of tasks one after the other on this worker."""
    emit = channel.emitter(context.topic)
    backend = backend_class(context.backend)
    left = backend.worker_seconds_left()
    if _leaving or (left is not None and context.retire_margin is not None and left < context.retire_margin):
        # Too close to this worker job's walltime to start anything (or leaving, below): the scheduler runs the
        # group elsewhere (a fresh worker job) and this worker leaves, instead of letting the walltime kill a task.
        from distributed import Reschedule

        if not _leaving:
            _leave_job("too close to the job's walltime")
        raise Reschedule()
    builder = builder_for(context)
    job_id = backend.worker_job_id()
    records: list[dict[str, Any]] = []
    ended: Attempt | None = None         # its tool has ended; its record is made while the next tool runs
    for wire in specs:
        if context.key in _stopped_launches:
            break                  # the launch is being stopped: the rest of the parcel is withdrawn with it
        try:
            attempt = Attempt.begin(TaskSpec.from_wire(wire), builder, emit, context, job_id)
        finally:                   # recorded even if this worker cannot set the next one up at all
            if ended is not None:
                records.append(_recorded(ended, emit, context, job_id))
        attempt.wait()
        ended = attempt
    if ended is not None:
        records.append(_recorded(ended, emit, context, job_id))
    return records


def _recorded(attempt: "Attempt", emit: Emit, context: RunContext, job_id: str | None) -> dict[str, Any]:
    """An ended attempt's record, sent to the client."""
    record, spec = attempt.finish(), attempt.spec
    if job_id and record.get("failure") == Failure.SIGNAL and context.key not in _stopped_launches:
        # A scheduler ending the whole job (scancel, walltime, preemption) signals the tool a moment before
        # this worker: given that moment, the worker goes first and the task is worker-lost (and retried)
        # rather than a tool killed by a signal.
        time.sleep(context.job_signal_wait)
    emit(Ended(spec.task, spec.attempt, record).to_wire())
    if job_id and spec.memory and record.get("failure") == Failure.OUT_OF_MEMORY:
        # its retry asks for a bigger job; this one ends, so that the scheduler's record of it shows the
        # out-of-memory kill (SLURM: OUT_OF_MEMORY) rather than a cancellation at the end of the run
        _leave_job("a task outgrew the job's memory")
    return record


def _leave_job(why: str) -> None:
    """This worker takes no further task and ends its job once the current Dask task is off its hands (closing
    sooner would lose that task's result, and Dask would run the group again)."""
    import asyncio

    from distributed import get_worker

    global _leaving
    _leaving = True
    worker = get_worker()
    key, reason = worker.get_current_task(), f"clowdr: {why}"

    async def leave() -> None:
        while key in worker.state.tasks:
            await asyncio.sleep(0.1)
        if not worker.nanny:
            await worker.close(reason=reason)
            return
        async with worker.rpc(worker.nanny) as nanny:   # a worker's own close leaves its nanny, and the job, running
            await nanny.terminate(reason=reason)

    worker.loop.add_callback(leave)


def run_task(spec: TaskSpec, builder: CommandBuilder, emit: Emit, context: RunContext,
             job_id: str | None = None) -> dict[str, Any]:
    """Run one task to completion and return its record (figures, command, outputs, usage samples)."""
    attempt = Attempt.begin(spec, builder, emit, context, job_id)
    attempt.wait()
    return attempt.finish()


class Attempt:
    """One attempt of a task on this worker, in three steps, so that a parcel's next tool already runs while the
    last one's record is made (that work then costs a short tool's slot no time): ``begin`` sets it up and
    starts its tool, ``wait`` samples the tool until it ends, ``finish`` makes the record."""

    def __init__(self, spec: TaskSpec, builder: CommandBuilder, emit: Emit, context: RunContext,
                 job_id: str | None) -> None:
        self.spec, self.builder, self.emit, self.context = spec, builder, emit, context
        self.place = Place.of(spec, context)
        self.record: dict[str, Any] = {"task": spec.task, "attempt": spec.attempt, "hostname": socket.gethostname(),
                                       "worker": worker_name(), "backend": context.backend, "job_id": job_id,
                                       "workdir": self.place.workdir}
        if not self.place.shared:
            self.record["outputs_host"] = self.record["hostname"]
        self.prepared: Prepared | None = None
        self.running: Running | None = None
        self.setup_error: Exception | None = None

    @classmethod
    def begin(cls, spec: TaskSpec, builder: CommandBuilder, emit: Emit, context: RunContext,
              job_id: str | None) -> "Attempt":
        attempt = cls(spec, builder, emit, context, job_id)
        record, place = attempt.record, attempt.place
        wall_start = time.time()
        record.update(start_time=iso(wall_start),
                      launchtime=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall_start)))
        emit(Started(spec.task, spec.attempt, record["start_time"], record["hostname"], record["worker"],
                     job_id).to_wire())
        try:
            os.makedirs(place.workdir, exist_ok=True)
            _stage_in(spec, place.workdir, record)
            prepared = attempt.prepared = builder.prepare(spec.invocation, place.workdir, _private_dir())
            record.update(command=prepared.command, launch_command=prepared.launch,
                          container_image=prepared.container_image, container_engine=prepared.container_engine)
            attempt.running = Running.start(prepared, place, spec, emit, context)
        except Exception as exc:  # the tool never started: recorded as such, the run goes on
            attempt.setup_error = exc
        return attempt

    def wait(self) -> None:
        if self.running is not None:
            try:
                self.running.wait()
            except Exception as exc:
                self.running, self.setup_error = None, exc

    def finish(self) -> dict[str, Any]:
        spec, place, record, prepared = self.spec, self.place, self.record, self.prepared
        if self.running is None or prepared is None:
            exc = self.setup_error
            failure = (Failure.STAGING_ERROR if isinstance(exc, StagingError)
                       else Failure.CONTAINER_ERROR if isinstance(exc, TaskSetupError) and exc.container
                       else Failure.SETUP_ERROR)
            record.update(status="failed", failure=str(failure), error=f"{type(exc).__name__}: {exc}", exitcode=None,
                          end_time=iso(time.time()), duration=0.0, realtime=0.0, usage=[], outputs=[],
                          missing_outputs=[])
            place.finish_logs(self.emit, spec.task, spec.attempt, self.context)
            return record
        record.update(self.running.figures())
        samples = self.running.sampler.samples if self.running.sampler else []
        outputs, missing = find_outputs(prepared, place.workdir)
        record.update(failure=_failure(record, prepared, missing), outputs=outputs, missing_outputs=missing,
                      exit_description=self.builder.describe_exit(record["exitcode"]),
                      usage=[list(row) for row in samples])
        _keep_outputs(spec, place, outputs, record)
        record["status"] = "failed" if record["failure"] else "succeeded"
        return record


# -- data staging (clowdr.staging): --s3 data in before the tool, declared outputs out after it ---------------
def _stage_in(spec: TaskSpec, workdir: str, record: dict[str, Any]) -> None:
    staging = Staging.from_wire(spec.staging)
    if staging is not None and staging.source:
        record["staged_in"] = dict(stage_in(staging, workdir), source=staging.source, subtree=staging.subtree)


def _keep_outputs(spec: TaskSpec, place: "Place", outputs: list[str], record: dict[str, Any]) -> None:
    """Outputs copied next to the run's records (``outputs_kept``: name -> where); a scratch working directory
    whose outputs are kept is removed. A transfer that fails makes the attempt a staging-error."""
    staging = Staging.from_wire(spec.staging)
    if staging is None or not staging.outputs:
        return
    try:
        record["outputs_kept"] = keep_outputs(staging, outputs, place.workdir)
    except StagingError as exc:
        record.update(failure=record["failure"] or str(Failure.STAGING_ERROR), error=f"StagingError: {exc}")
        return
    if place.own:
        shutil.rmtree(place.workdir, ignore_errors=True)


def _failure(record: dict[str, Any], prepared: Prepared, missing: list[str]) -> str | None:
    """The attempt's failure class, or None when it succeeded."""
    if record.get("oom_killed"):
        return str(Failure.OUT_OF_MEMORY)
    if record.get("signal"):
        return str(Failure.SIGNAL)
    if record["exitcode"] == DOCKER_ENGINE_FAILED and prepared.cidfile and not record.get("container_id"):
        return str(Failure.CONTAINER_ERROR)     # docker failed before any container existed
    if record["exitcode"] != 0:
        return str(Failure.TOOL_ERROR)
    if missing:
        return str(Failure.MISSING_OUTPUT)
    return None


@dataclass
class Place:
    """Where a task runs and where its logs go: the shared paths it was given, or this worker's scratch."""

    workdir: str
    stdout: str
    stderr: str
    shared: bool              # the logs are the client's own files
    own: bool                 # the working directory is this attempt's alone (fresh scratch space)
    of_all: bool = False      # the working directory is every task's (--workdir)

    @classmethod
    def of(cls, spec: TaskSpec, context: RunContext) -> "Place":
        base = os.path.join(context.scratch or tempfile.gettempdir(), f"clowdr-{context.run_id}",
                            f"task-{spec.task}", f"attempt-{spec.attempt}")
        workdir = spec.workdir or os.path.join(base, "work")       # none given: fresh scratch space (e.g. --s3)
        if spec.shared_logs:
            return cls(workdir, spec.shared_logs[0], spec.shared_logs[1], True, spec.workdir is None,
                       spec.workdir_of_all)
        os.makedirs(base, exist_ok=True)
        return cls(workdir, os.path.join(base, "stdout.txt"), os.path.join(base, "stderr.txt"), False,
                   spec.workdir is None, spec.workdir_of_all)

    def hold(self, task: int, wait: float) -> int | None:
        """A lock on this task's working directory (where it is not a fresh scratch directory): an earlier
        attempt whose processes still run holds it, and this one waits up to ``wait`` seconds for them to go,
        instead of running beside them. The returned descriptor goes to the tool's processes.

        The task's own directory is itself the lock (one file fewer per task); a directory every task shares
        (--workdir), or one whose filesystem cannot lock a directory (NFS), holds a lock file per task."""
        if self.own:
            return None
        if not self.of_all:
            try:
                return _locked(os.open(self.workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), task,
                               self.workdir, wait)
            except OSError:         # a filesystem that cannot lock a directory: the lock file below
                pass
        fd = os.open(os.path.join(self.workdir, f".clowdr-task-{task}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o644)
        return _locked(fd, task, self.workdir, wait)

    def shipper(self, emit: Emit, task: int, attempt: int, context: RunContext) -> "LogShipper | None":
        """Without a shared filesystem, a thread sending the logs' new bytes to the client."""
        if self.shared:
            return None
        return LogShipper({"stdout": self.stdout, "stderr": self.stderr}, emit, task, attempt, context.log_chunk,
                          context.log_interval)

    def finish_logs(self, emit: Emit, task: int, attempt: int, context: RunContext) -> None:
        """A task that never started still has (empty) logs; scratch copies are shipped, then removed."""
        for path in (self.stdout, self.stderr):
            open(path, "ab").close()
        shipper = self.shipper(emit, task, attempt, context)
        if shipper is not None:
            shipper.finish()


def _locked(fd: int, task: int, workdir: str, wait: float) -> int:
    """``fd`` once this process holds an exclusive lock on it, waiting up to ``wait`` seconds for an earlier
    attempt's processes to let it go (then TaskSetupError); ``fd`` is closed on any failure."""
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TaskSetupError(f"an earlier attempt of task {task} still runs in {workdir} after "
                                         f"{wait:.0f} s") from None
                time.sleep(0.1)
    except BaseException:
        os.close(fd)
        raise


class LogShipper:
    """Sends what a running tool appends to its log files, in chunks of at most ``chunk`` bytes, every
    ``interval`` seconds and once more at the end; the files are removed once shipped whole."""

    def __init__(self, paths: dict[str, str], emit: Emit, task: int, attempt: int, chunk: int,
                 interval: float) -> None:
        self.paths, self.emit, self.task, self.attempt = paths, emit, task, attempt
        self.chunk, self.interval = max(1, int(chunk)), interval
        self.sent = dict.fromkeys(paths, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clowdr-logs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._ship()

    def _ship(self) -> None:
        for stream, path in self.paths.items():
            with open(path, "rb") as handle:
                handle.seek(self.sent[stream])
                while data := handle.read(self.chunk):
                    self.emit(LogChunk(self.task, self.attempt, stream, self.sent[stream], data).to_wire())
                    self.sent[stream] += len(data)

    def finish(self) -> None:
        """Ship everything left (the tool has exited), then remove the scratch copies."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._ship()
        for path in self.paths.values():
            os.remove(path)


class Running:
    """A tool started through this process's spawner (whose small size makes the tool's peak RSS true): sampled
    until it exits, then measured exactly from its ``wait4``."""

    def __init__(self, tool: Tool, started: float, prepared: Prepared, spec: TaskSpec, emit: Emit,
                 context: RunContext, shipper: "LogShipper | None", cgroup: TaskCgroup | None,
                 container: tuple[str, str] | None, held: int | None, oom_kills_before: int | None) -> None:
        self.tool, self.started, self.prepared, self.spec, self.emit, self.context = (tool, started, prepared, spec,
                                                                                      emit, context)
        self.shipper, self.cgroup, self.container = shipper, cgroup, container
        self.held, self.oom_kills_before = held, oom_kills_before
        self.sampler: Sampler | None = None

    @classmethod
    def start(cls, prepared: Prepared, place: Place, spec: TaskSpec, emit: Emit, context: RunContext) -> "Running":
        """Ask the spawner to start the tool; ``wait`` learns whether it did."""
        task, attempt = spec.task, spec.attempt
        env = _environments.get(context.key)
        if env is None:
            env = _environments[context.key] = dict(os.environ)
        if prepared.env:
            env = {**env, **prepared.env}
        # a container is the engine's to hold (and to limit: container-opts --memory); a host tool, its cgroup's,
        # unless the worker's own cgroup holds it to its memory already (a batch job's: clowdr.limits)
        held = held_to(spec.memory)
        spawner = Spawner.get()
        lock = place.hold(task, context.earlier_attempt_wait)
        cgroup = (None if prepared.cidfile or held else
                  TaskCgroup.create(f"clowdr-{os.getpid()}-{task}-{attempt}-{time.monotonic_ns()}", spec.memory))
        oom_kills_before = None if cgroup else oom_kills()     # a cgroup counts its own OOM kills
        container = (prepared.container_engine or "docker", prepared.cidfile) if prepared.cidfile else None
        try:
            with open(place.stdout, "wb") as out, open(place.stderr, "wb") as err:
                shipper = place.shipper(emit, task, attempt, context)
                started = time.perf_counter()
                argv = cgroup.shell(prepared.launch) if cgroup else ["/bin/sh", "-c", prepared.launch]
                tool = spawner.start(argv, place.workdir, env, out.fileno(), err.fileno(),
                                     keep=() if lock is None else (lock,), cgroup=str(cgroup.path) if cgroup else None,
                                     container=container, files=(prepared.cidfile,) if prepared.cidfile else ())
        except BaseException:          # nothing started
            if cgroup is not None:
                cgroup.remove()
            raise
        finally:
            _close(lock)               # sent with the request: the tool's processes will hold it as long as they last
        return cls(tool, started, prepared, spec, emit, context, shipper, cgroup, container,
                   spec.memory if held else None, oom_kills_before)

    def wait(self) -> None:
        """Until the tool has ended (its logs whole, wherever they go); SpawnError if it never started."""
        task, attempt, context, prepared = self.spec.task, self.spec.attempt, self.context, self.prepared
        try:
            pid = self.tool.pid
        except BaseException:          # nothing started
            if self.cgroup is not None:
                self.cgroup.remove()
            raise
        with _running_lock:
            _running[pid] = (context.key, self.container)
            withdrawn = context.key in _stopped_launches
        if withdrawn:               # its launch was stopped while it started: it goes the way the others went
            os.killpg(pid, signal.SIGTERM)
        target = DockerContainer(prepared.cidfile) if prepared.cidfile else ProcessTree(pid)
        sampler = self.sampler = Sampler(
            target, self.started, lambda rows: self.emit(Usage(task, attempt, [list(r) for r in rows]).to_wire()),
            context.sampling["first-interval"], context.sampling["max-interval"])
        if self.shipper is not None:
            self.shipper.start()
        try:
            sampler.sample_until(self.tool.ended)
            self.status, self.usage = self.tool.result()
        finally:
            _running.pop(pid, None)
        self.realtime = time.perf_counter() - self.started
        self.end_time = iso(time.time())
        if self.shipper is not None:
            self.shipper.finish()

    def figures(self) -> dict[str, Any]:
        """What the tool did: exit, times, peaks, I/O, and whether it was killed for its memory."""
        assert self.sampler is not None, "figures of a tool not waited for"
        code, realtime, samples, usage = (os.waitstatus_to_exitcode(self.status), self.realtime,
                                          self.sampler.samples, self.usage)
        figures: dict[str, Any] = {
            "exitcode": code, "signal": _signal_of(code),
            "end_time": self.end_time, "duration": round(realtime, 6), "realtime": round(realtime, 6),
            "peak_vmem": max((int(s.vmem * MIB) for s in samples), default=None),
            "samples": len(samples), "memory_limit": self.spec.memory,
            **_memory_verdict(self.cgroup, code, self.oom_kills_before, self.held),
        }
        sampled_peak = max((int(s.ram * MIB) for s in samples), default=None)
        if self.prepared.cidfile:
            figures.update(_container_figures(self.sampler, self.prepared.cidfile, sampled_peak, realtime))
            _cleanup(self.prepared.cidfile, self.prepared.script)
            return figures
        cpu = usage.user_time + usage.system_time
        # wait4's peak is its largest single process's; a sample sums the whole tree. A tool whose processes all
        # stayed within the spawner's own size and that no sample saw larger: that size stands as an upper bound.
        measured_peak = max(usage.peak_rss or 0, sampled_peak or 0)
        figures.update(
            peak_rss=max(measured_peak, usage.floor), peak_rss_upper_bound=measured_peak <= usage.floor,
            # a tool's address space holds at least what was resident: a late peak the samples missed counts
            peak_vmem=max(figures["peak_vmem"] or 0, measured_peak) or None,
            user_time=round(usage.user_time, 6), system_time=round(usage.system_time, 6), cpu_time=round(cpu, 6),
            cpu_percent=round(cpu / realtime * 100, 1) if realtime > 0 else None,
            read_bytes=max(usage.read_blocks * 512, max((s.read_bytes for s in samples), default=0)),
            write_bytes=max(usage.write_blocks * 512, max((s.write_bytes for s in samples), default=0)),
            measured="process-tree",
        )
        _cleanup(self.prepared.script)
        return figures


def _signal_of(code: int) -> str | None:
    """The signal that ended the tool: a negative code is the process's own; 128+N is the shell's report of a
    command it ran that signal N ended (Boutiques runs every command line through a shell)."""
    number = -code if code < 0 else code - 128 if 128 < code < 128 + signal.NSIG else 0
    try:
        return signal.Signals(number).name if number else None
    except ValueError:
        return None


def _memory_verdict(cgroup: TaskCgroup | None, code: int, oom_kills_before: int | None,
                    held: int | None = None) -> dict[str, Any]:
    """Whether the tool was killed for its memory, and what the kernel says of it; the cgroup goes, with
    whatever the tool left running in it. ``held``: the limit of the worker's own cgroup, which held the tool."""
    if cgroup is not None:
        killed, peak = cgroup.oom_killed(), cgroup.peak()
        cgroup.remove()
        if killed and cgroup.limit is not None:
            return {"oom_killed": True, "error": f"killed for its memory: limit {cgroup.limit // MIB} MiB reached "
                                                 f"(peak {(peak or 0) // MIB} MiB)"}
        if killed:
            return {"oom_killed": True, "error": f"killed by the kernel's OOM killer: out of memory "
                                                 f"(peak {(peak or 0) // MIB} MiB)"}
        return {}
    after = oom_kills()
    oom_ran = oom_kills_before is not None and after is not None and after > oom_kills_before
    if _signal_of(code) == "SIGKILL" and oom_ran:
        if held is not None:
            return {"oom_killed": True, "error": f"killed for its memory: the job's limit {held // MIB} MiB reached"}
        return {"oom_killed": True, "error": "killed by SIGKILL while the kernel's OOM killer ran: out of memory"}
    return {}


def _container_figures(sampler: Sampler, cidfile: str, sampled_peak: int | None, realtime: float) -> dict[str, Any]:
    """A container is measured through its cgroup; the docker client's own usage is not the tool's. Its id is
    what docker wrote to the cidfile once the container existed (none: the engine failed before that)."""
    last = sampler.last
    cpu = round(last.cpu_seconds, 6) if last else None
    return {
        "cpu_time": cpu, "user_time": None, "system_time": None,
        "cpu_percent": round(cpu / realtime * 100, 1) if cpu is not None and realtime > 0 else None,
        "peak_rss": sampled_peak, "read_bytes": last.read_bytes if last else None,
        "write_bytes": last.write_bytes if last else None,
        "container_id": container_id(cidfile), "measured": "container-cgroup",
    }


@lru_cache(maxsize=1)
def _private_dir() -> str:
    """Where clowdr's own small scratch files go (uniquely named, deleted after use): memory where possible."""
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def _cleanup(*paths: str | None) -> None:
    for path in paths:
        if path:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass


def _close(*descriptors: int | None) -> None:
    for fd in descriptors:
        if fd is not None:
            os.close(fd)
