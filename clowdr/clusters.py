"""The cluster factory: every back-end is a Dask cluster; only this module knows which.

SLURM workers are dask-jobqueue pilot jobs. What they request comes, in order of precedence, from
``--clusterargs``, the user's own dask config, the descriptor's ``suggested-resources``, and the packaged
defaults (``configs/clowdr.yaml``, section ``clowdr.slurm``).
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clowdr import config
from clowdr.errors import InputError, NotAvailableError

KINDS = ("local", "slurm")
# --clusterargs keys that map to a cluster setting; any other key becomes an ``#SBATCH --key=value`` line.
SETTING_OF_KEY = {"time": "walltime", "walltime": "walltime", "mem": "memory", "memory": "memory",
                  "cpus": "cpus", "cores": "cpus", "cpus-per-task": "cpus", "account": "account",
                  "partition": "queue", "queue": "queue"}


@dataclass
class ClusterSpec:
    """What a launch needs from its cluster."""

    kind: str = "local"
    clusterargs: str | None = None
    jobname: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)   # the descriptor's suggested-resources
    log_directory: str | None = None
    groups: int = 1                                            # caps the number of worker jobs


def cluster_kind(cluster: str | None) -> str:
    return cluster or "local"


def parse_clusterargs(text: str | None) -> dict[str, str]:
    """``k:v,k:v`` split on the first ':' of each pair; a malformed pair is an InputError."""
    pairs: dict[str, str] = {}
    for pair in (text or "").split(","):
        key, sep, value = pair.partition(":")
        if not sep or not key.strip() or not value.strip():
            raise InputError("--clusterargs", f"'{pair}' is not a key:value pair (e.g. time:4:00,mem:2048)")
        pairs[key.strip().lower()] = value.strip()
    return pairs


def walltime_of(value: str, hours_minutes: bool) -> str:
    """SLURM time text as HH:MM:SS (or D-HH:MM:SS); with ``hours_minutes``, ``4:00`` is four hours (original CLI)."""
    if hours_minutes and re.fullmatch(r"\d+:\d{1,2}", value):
        return f"{value}:00"
    if re.fullmatch(r"\d+", value):                       # SLURM: plain minutes
        minutes = int(value)
        return f"{minutes // 60:02d}:{minutes % 60:02d}:00"
    if re.fullmatch(r"(\d+-)?\d+(:\d{1,2}){0,2}", value):
        return value
    raise InputError("--clusterargs", f"time '{value}' is not a SLURM time (e.g. 4:00 for four hours, 1-00:00:00)")


def seconds_of(walltime: str) -> int:
    """Seconds in a SLURM time: M, M:S, H:M:S, D-H, D-H:M or D-H:M:S."""
    days, _, clock = walltime.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:
        hours, minutes, seconds = parts + [0] * (3 - len(parts))
    else:
        hours, minutes, seconds = {1: [0, parts[0], 0], 2: [0, *parts], 3: parts}[len(parts)]
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def memory_of(value: str) -> str:
    """SLURM memory text (plain numbers are MiB, as for --mem) as a Dask byte string."""
    if re.fullmatch(r"\d+", value):
        return f"{value}MiB"
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT])i?B?", value, re.IGNORECASE)
    if not match:
        raise InputError("--clusterargs", f"mem '{value}' is not a memory size (e.g. 2048 or 4G)")
    return f"{match.group(1)}{match.group(2).upper()}iB"


def slurm_request(spec: ClusterSpec) -> dict[str, Any]:
    """The resources and directives each SLURM worker job asks for."""
    settings = dict(config.get("slurm"))
    packaged = _packaged_defaults()["slurm"]
    suggested = {"cpus": spec.resources.get("cpu-cores"),
                 "memory": f"{spec.resources['ram']}GiB" if spec.resources.get("ram") else None,
                 "walltime": _clock(int(spec.resources["walltime-estimate"]))
                 if spec.resources.get("walltime-estimate") else None}
    for key, value in suggested.items():
        if value is not None and settings[key] == packaged[key]:      # the user asked for nothing else
            settings[key] = value
    directives = list(settings["job-extra-directives"] or [])
    for key, value in parse_clusterargs(spec.clusterargs).items() if spec.clusterargs else []:
        setting = SETTING_OF_KEY.get(key)
        if setting == "walltime":
            settings["walltime"] = walltime_of(value, hours_minutes=True)
        elif setting == "memory":
            settings["memory"] = memory_of(value)
        elif setting == "cpus":
            if not value.isdigit() or int(value) < 1:
                raise InputError("--clusterargs", f"{key} '{value}' is not a positive number of CPUs")
            settings["cpus"] = int(value)
        elif setting:
            settings[setting] = value
        else:
            directives.append(f"--{key}={value}")
    settings["walltime"] = walltime_of(str(settings["walltime"]), hours_minutes=False)
    settings["job-extra-directives"] = directives
    return settings


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _packaged_defaults() -> dict[str, Any]:
    return yaml.safe_load(config.DEFAULTS.read_text())["clowdr"]


def make_cluster(spec: ClusterSpec) -> Any:
    """Start the cluster the user asked for (a LocalCluster unless told otherwise)."""
    import dask.config

    dask.config.set({"distributed.scheduler.allowed-failures": config.get("scheduler.allowed-failures")})
    if spec.kind == "local":
        return _local_cluster()
    if spec.kind == "slurm":
        cluster = slurm_cluster(spec)
        cluster.adapt(minimum_jobs=0, maximum_jobs=max(1, min(config.get("slurm.max-jobs"), spec.groups)))
        return cluster
    raise NotAvailableError(f"--cluster {spec.kind} is not available in this version of clowdr")


def _quiet_dask() -> None:
    """Dask's INFO chatter would drown clowdr's own messages (imported first: it resets its loggers)."""
    import distributed  # noqa: F401

    for name in ("distributed", "dask_jobqueue"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _local_cluster() -> Any:
    from distributed import LocalCluster

    _quiet_dask()
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


def import_jobqueue() -> Any:
    """dask_jobqueue, imported from the main thread: at import it replaces the SIGINT handler (with
    ``sys.exit``), which only the main thread may do; clowdr's own Ctrl-C handling is put back."""
    import signal

    if "dask_jobqueue" in sys.modules:
        return sys.modules["dask_jobqueue"]
    previous = signal.getsignal(signal.SIGINT)
    import dask_jobqueue

    signal.signal(signal.SIGINT, previous)
    return dask_jobqueue


def slurm_cluster(spec: ClusterSpec) -> Any:
    """A dask-jobqueue SLURMCluster whose workers each run one task at a time and retire before walltime."""
    SLURMCluster = import_jobqueue().SLURMCluster

    _quiet_dask()
    request = slurm_request(spec)
    if spec.log_directory:
        Path(spec.log_directory).mkdir(parents=True, exist_ok=True)
    interface = request["interface"]
    return SLURMCluster(
        job_name=spec.jobname or request["job-name"],
        cores=1, processes=1,                       # one Dask thread: one task at a time per worker job
        job_cpu=int(request["cpus"]),               # what the tool may use (--cpus-per-task)
        memory=request["memory"], job_mem=_slurm_memory(request["memory"]),
        walltime=request["walltime"], queue=request["queue"], account=request["account"],
        job_extra_directives=request["job-extra-directives"],
        interface=interface,
        python=request["python"] or sys.executable,
        scheduler_options={"dashboard_address": config.get("local.dashboard-address") or ":0",
                           **({"interface": interface} if interface else {})},
        worker_extra_args=["--no-dashboard", "--preload", "clowdr.worker"],
        # what the worker needs to know to stop taking tasks before the walltime (see worker.run_group)
        job_script_prologue=["export CLOWDR_JOB_STARTED=$(date +%s)",
                             f"export CLOWDR_WALLTIME_SECONDS={seconds_of(request['walltime'])}"],
        log_directory=spec.log_directory,
        silence_logs="error",
    )


def _slurm_memory(memory: str) -> str:
    from dask.utils import parse_bytes

    return f"{-(-parse_bytes(memory) // 2**20)}M"


FINAL_STATES = {"CANCELLED", "COMPLETED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                "BOOT_FAIL", "DEADLINE"}


def lost_job_reason(job_id: str | None, wait: float = 10.0) -> tuple[str, str] | None:
    """Why a SLURM worker job vanished, from SLURM itself: ('walltime'|'worker-lost', explanation).

    A job just killed is briefly COMPLETING: its final state is waited for (up to ``wait`` seconds).
    """
    if not job_id:
        return None
    deadline = time.monotonic() + wait
    fields: dict[str, str] = {}
    while True:
        try:
            shown = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                                   timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        fields = dict(item.split("=", 1) for item in shown.split() if "=" in item)
        if fields.get("JobState") in FINAL_STATES or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    state = fields.get("JobState")
    if state == "TIMEOUT":
        return "walltime", f"SLURM job {job_id} reached its time limit ({fields.get('TimeLimit')})"
    if state:
        return "worker-lost", f"SLURM job {job_id} ended as {state} (reason: {fields.get('Reason', 'None')})"
    return None
