"""What runs on a worker: spawn the tool in its own process, sample it, collect exact figures at exit.

The same function runs on every back-end. It never touches process-global state (cwd, os.environ):
each tool gets its own working directory and environment. Progress leaves through ``emit``
(Dask events on a cluster), and the full record is also the function's return value.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Callable

from clowdr.command import CommandBuilder, ContainerOptions, Prepared, find_outputs
from clowdr.sampling import MIB, DockerContainer, ProcessTree, Sample, Sampler
from clowdr.timestamps import iso

Emit = Callable[[dict[str, Any]], None]
_builders: dict[str, CommandBuilder] = {}
# Tools running in this process: process-group id -> (docker binary, container id file) for container tools.
# Tools run in their own sessions (so one can be stopped whole), hence nothing kills them with the worker:
# stop_running_tools does, on interrupt (called by the client) and when this process exits.
_running: dict[int, tuple[str, str] | None] = {}


def stop_running_tools() -> int:
    """Stop every tool this process is running (whole process groups, and their containers); return how many."""
    stopped = 0
    for pgid, container in list(_running.items()):
        if container:
            docker, cidfile = container
            try:
                with open(cidfile) as handle:
                    subprocess.run([docker, "kill", handle.read().strip()], capture_output=True, timeout=30)
            except (OSError, subprocess.SubprocessError):
                pass
        try:
            os.killpg(pgid, signal.SIGTERM)
            stopped += 1
        except ProcessLookupError:
            pass
    return stopped


atexit.register(stop_running_tools)


def dask_setup(worker: Any) -> None:
    """Dask preload hook, run as each worker starts (importing this module warms the first task, too).

    The worker leaves the terminal's process group: a Ctrl-C reaches only the client, which stops the
    running tools through ``stop_running_tools`` and shuts the workers down in order.
    """
    try:
        os.setpgid(0, 0)
    except OSError:   # already a group or session leader
        pass


def builder_for(context: dict[str, Any]) -> CommandBuilder:
    """One CommandBuilder per run and worker process (the descriptor is parsed once, not per task)."""
    key = context["key"]
    if key not in _builders:
        _builders[key] = CommandBuilder(context["descriptor"], ContainerOptions(**context["container"]))
    return _builders[key]


def dask_emitter(topic: str) -> Emit:
    """Send messages to the client as Dask events (thread-safe; ordered before the task's own completion)."""
    from distributed import get_worker

    worker = get_worker()
    return lambda message: worker.log_event(topic, message)


def worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def job_seconds_left() -> float | None:
    """Seconds before this SLURM worker job reaches its walltime (None outside one; set by its job script)."""
    started, walltime = os.environ.get("CLOWDR_JOB_STARTED"), os.environ.get("CLOWDR_WALLTIME_SECONDS")
    if not started or not walltime:
        return None
    return float(started) + float(walltime) - time.time()


def run_group(specs: list[dict[str, Any]], context: dict[str, Any]) -> list[dict[str, Any]]:
    """The Dask task: run a group of tasks one after the other on this worker."""
    emit = dask_emitter(context["topic"])
    left = job_seconds_left()
    if left is not None and left < context["retire-margin"]:
        # Too close to this SLURM job's walltime to start anything: the scheduler runs the group elsewhere
        # (a fresh worker job) and this worker leaves, instead of letting the walltime kill a task.
        from distributed import Reschedule, get_worker

        worker = get_worker()
        worker.loop.add_callback(worker.close, reason="clowdr: too close to the job's walltime")
        raise Reschedule()
    builder = builder_for(context)
    records = []
    for spec in specs:
        record = run_task(spec, builder, emit, context["sampling"])
        emit({"kind": "end", "task": record["task"], "attempt": record["attempt"], "record": record})
        records.append(record)
    return records


def run_task(spec: dict[str, Any], builder: CommandBuilder, emit: Emit, sampling: dict[str, float]) -> dict[str, Any]:
    """Run one task to completion and return its record (figures, command, outputs, usage samples)."""
    task, attempt, workdir = spec["task"], spec["attempt"], spec["workdir"]
    record: dict[str, Any] = {
        "task": task, "attempt": attempt, "hostname": socket.gethostname(), "worker": worker_name(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "workdir": workdir,
    }
    os.makedirs(workdir, exist_ok=True)
    wall_start = time.time()
    record.update(start_time=iso(wall_start), launchtime=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall_start)))
    emit({"kind": "start", "task": task, "attempt": attempt, "start_time": record["start_time"],
          "hostname": record["hostname"], "worker": record["worker"], "slurm_job_id": record["slurm_job_id"]})
    try:
        prepared = builder.prepare(spec["invocation"], workdir, _private_dir())
    except Exception as exc:  # the tool never started: record why, keep the run going
        wall_end = time.time()
        record.update(status="failed", failure="setup-error", error=f"{type(exc).__name__}: {exc}", exitcode=None,
                      end_time=iso(wall_end), duration=0.0, realtime=0.0, usage=[], outputs=[], missing_outputs=[])
        _touch(spec["stdout"], spec["stderr"])
        return record
    record.update(command=prepared.command, launch_command=prepared.launch,
                  container_image=prepared.container_image, container_engine=prepared.container_engine)
    samples, figures = _spawn_and_measure(prepared, spec, workdir, emit, sampling)
    record.update(figures)
    outputs, missing = find_outputs(prepared, workdir)
    code = record["exitcode"]
    if record.get("signal"):
        failure = "signal"
    elif code != 0:
        failure = "tool-error"
    elif missing:
        failure = "missing-output"
    else:
        failure = None
    record.update(status="failed" if failure else "succeeded", failure=failure, outputs=outputs,
                  missing_outputs=missing, exit_description=builder.describe_exit(code), usage=[list(s) for s in samples])
    return record


def _spawn_and_measure(prepared: Prepared, spec: dict[str, Any], workdir: str, emit: Emit,
                       sampling: dict[str, float]) -> tuple[list[Sample], dict[str, Any]]:
    """Spawn, sample until exit, and take exact CPU time and block I/O from ``os.wait4``.

    Linux copies the forking process's RSS high-water mark into the child at exec, so ``ru_maxrss`` of
    a child of this (large) Python process says nothing about the tool. A host tool is therefore started
    under GNU time, a tiny C program whose own child -- the tool -- has a clean high-water mark, and the
    peak RSS is what GNU time reports (without it, the sampled peak).
    """
    env = dict(os.environ, **prepared.env) if prepared.env else None
    task, attempt = spec["task"], spec["attempt"]
    gnu_time = None if prepared.cidfile else _gnu_time(sampling.get("gnu-time", "auto"))
    rss_file = os.path.join(_private_dir(), f"clowdr-{os.getpid()}-{task}-{attempt}-{time.monotonic_ns()}.rss")
    argv: str | list[str] = prepared.launch
    if gnu_time:
        argv = [gnu_time, "-f", "%M", "-o", rss_file, "/bin/sh", "-c", prepared.launch]
    with open(spec["stdout"], "wb") as out, open(spec["stderr"], "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, shell=not gnu_time, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, start_new_session=True)
        _running[proc.pid] = (prepared.container_engine or "docker", prepared.cidfile) if prepared.cidfile else None
        target = DockerContainer(prepared.cidfile) if prepared.cidfile else ProcessTree(proc.pid, bool(gnu_time))
        sampler = Sampler(target, started,
                          lambda rows: emit({"kind": "usage", "task": task, "attempt": attempt, "rows": [list(r) for r in rows]}),
                          sampling["first-interval"], sampling["max-interval"])
        sampler.start()
        try:
            _, status, rusage = os.wait4(proc.pid, 0)
        finally:
            _running.pop(proc.pid, None)
            sampler.stop()
        ended = time.perf_counter()
        proc.returncode = code = os.waitstatus_to_exitcode(status)
    wall_end = time.time()
    realtime = ended - started
    samples = sampler.samples
    signal_name = signal.Signals(-code).name if code < 0 else None
    peak_rss = None
    if gnu_time:
        peak_rss, signal_name, code = _read_gnu_time(rss_file, code)
    figures: dict[str, Any] = {
        "exitcode": code, "signal": signal_name,
        "end_time": iso(wall_end), "duration": round(realtime, 6), "realtime": round(realtime, 6),
        "peak_vmem": max((int(s.vmem * MIB) for s in samples), default=None),
        "samples": len(samples),
    }
    sampled_peak = max((int(s.ram * MIB) for s in samples), default=None)
    if prepared.cidfile:
        figures.update(_container_figures(sampler, sampled_peak, realtime))
        _cleanup(prepared.cidfile, prepared.script)
        return samples, figures
    cpu = rusage.ru_utime + rusage.ru_stime
    figures.update(
        user_time=round(rusage.ru_utime, 6), system_time=round(rusage.ru_stime, 6), cpu_time=round(cpu, 6),
        cpu_percent=round(cpu / realtime * 100, 1) if realtime > 0 else None,
        peak_rss=max(peak_rss or 0, sampled_peak or 0) or None,
        read_bytes=max(rusage.ru_inblock * 512, max((s.read_bytes for s in samples), default=0)),
        write_bytes=max(rusage.ru_oublock * 512, max((s.write_bytes for s in samples), default=0)),
        measured="process-tree",
    )
    _cleanup(prepared.script)
    return samples, figures


def _gnu_time(setting: str | bool | None) -> str | None:
    """GNU time (Debian package ``time``): ``auto`` finds it, a path names it, false/none disables it."""
    if setting in (False, None) or str(setting).lower() in ("false", "none", "no", "off"):
        return None
    if setting not in (True, "auto"):
        return str(setting)
    path = shutil.which("time", path="/usr/bin:/bin:/usr/local/bin")
    return path if path and os.path.realpath(path).endswith("/time") else None


def _read_gnu_time(path: str, code: int) -> tuple[int | None, str | None, int]:
    """Peak RSS (bytes) and the real way the tool ended: GNU time exits 128+N when its child got signal N."""
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
        os.remove(path)
    except OSError:
        return None, None, code
    peak = int(lines[-1]) * 1024 if lines and lines[-1].strip().isdigit() else None
    for line in lines:
        if line.startswith("Command terminated by signal "):
            number = int(line.rsplit(" ", 1)[1])
            return peak, signal.Signals(number).name, -number
    return peak, None, code


def _container_figures(sampler: Sampler, sampled_peak: int | None, realtime: float) -> dict[str, Any]:
    """A container is measured through its cgroup; the docker client's own usage is not the tool's."""
    last = sampler.last
    target = sampler.target
    cpu = round(last.cpu_seconds, 6) if last else None
    return {
        "cpu_time": cpu, "user_time": None, "system_time": None,
        "cpu_percent": round(cpu / realtime * 100, 1) if cpu is not None and realtime > 0 else None,
        "peak_rss": sampled_peak, "read_bytes": last.read_bytes if last else None,
        "write_bytes": last.write_bytes if last else None,
        "container_id": getattr(target, "container_id", None), "measured": "container-cgroup",
    }


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


def _touch(*paths: str) -> None:
    for path in paths:
        open(path, "ab").close()
