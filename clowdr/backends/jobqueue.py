"""Batch schedulers through dask-jobqueue: each worker is a pilot job running one task at a time.

A scheduler is one small declaration below (its dask-jobqueue class, the job-id variable its jobs see, the
form of its directive lines, how the five standard resources become that class's arguments, and how it
explains a vanished job) plus its section of ``configs/clowdr.yaml``. Everything else dask-jobqueue offers
(interface, python, local-directory, shebang, ...) is read by dask-jobqueue itself from the user's
``jobqueue.<scheduler>`` config, as it always is.

What a worker job asks for comes, in order of precedence, from ``--clusterargs``; the user's own dask config
(``clowdr.<scheduler>.<key>``, or dask-jobqueue's ``jobqueue.<scheduler>.<key>`` for walltime, memory, queue and
account/project); the descriptor's ``suggested-resources``; and clowdr's packaged defaults.
"""
from __future__ import annotations

import logging
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from clowdr.backends.base import STARTED_VARIABLE, WALLTIME_VARIABLE, Backend, ClusterRequest
from clowdr.errors import InputError
from clowdr.protocol import Failure, TaskSpec

MIB = 1 << 20
#: --clusterargs keys every scheduler understands, and the resource each one sets
STANDARD_KEYS = {"time": "walltime", "walltime": "walltime", "mem": "memory", "memory": "memory",
                 "cpus": "cpus", "cores": "cpus", "cpus-per-task": "cpus", "account": "account",
                 "project": "account", "queue": "queue", "partition": "queue"}
RESOURCES = ("walltime", "memory", "cpus", "queue", "account")
#: what dask-jobqueue itself writes where the scheduler's address will be
SCHEDULER_PLACEHOLDER = "tcp://<insert-scheduler-address-here>:8786"


@dataclass
class JobRequest:
    """What each worker job asks its scheduler for, resolved and checked."""

    job_name: str
    walltime: int                   # seconds
    memory: int                     # bytes, for the tool (the worker runs one task at a time)
    cpus: int                       # for the tool
    queue: str | None = None
    account: str | None = None
    directives: list[str] = field(default_factory=list)   # the scheduler's own lines, without their prefix


def parse_clusterargs(text: str | None) -> dict[str, str]:
    """``k:v,k:v`` split on the first ':' of each pair; a malformed pair is an InputError."""
    pairs: dict[str, str] = {}
    if text is None:
        return pairs
    for pair in text.split(","):
        key, sep, value = pair.partition(":")
        if not sep or not key.strip() or not value.strip():
            raise InputError("--clusterargs", f"'{pair}' is not a key:value pair (e.g. time:4:00,mem:2048)")
        pairs[key.strip().lower()] = value.strip()
    return pairs


def seconds_of(value: Any, where: str = "--clusterargs") -> int:
    """A walltime in seconds: ``H:M`` (``4:00`` is four hours, as in the original tool and LSF), ``H:M:S``,
    ``D-H[:M[:S]]``, or a plain number of minutes (as SLURM and LSF read one)."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?", text)
    if not match:
        raise InputError(where, f"time '{text}' is not a walltime (e.g. 4:00 for four hours, 1-00:00:00, 90)")
    days, first, second, third = match.groups()
    if days is None and second is None:
        return int(first) * 60
    hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def bytes_of(value: Any, where: str = "--clusterargs") -> int:
    """A memory size in bytes: a plain number is MiB (as for SLURM's --mem and LSF), units K/M/G/T are binary."""
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return int(text) * MIB
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT])i?B?", text, re.IGNORECASE)
    if not match:
        raise InputError(where, f"mem '{text}' is not a memory size (e.g. 2048 or 4G)")
    return int(float(match.group(1)) * 1024 ** ("KMGT".index(match.group(2).upper()) + 1))


def positive_cpus(value: Any, where: str = "--clusterargs") -> int:
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise InputError(where, f"cpus '{text}' is not a positive number of CPUs")
    return int(text)


def clock(seconds: int, days: bool = False) -> str:
    """``HH:MM:SS`` (hours may pass 24), or with ``days`` ``D-HH:MM:SS`` from one day on."""
    if days and seconds >= 86400:
        return f"{seconds // 86400}-{clock(seconds % 86400)}"
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def text_of(value: Any, where: str = "--clusterargs") -> str:
    return str(value)


PARSERS = {"walltime": seconds_of, "memory": bytes_of, "cpus": positive_cpus, "queue": text_of, "account": text_of}


class JobqueueBackend(Backend):
    """A dask-jobqueue scheduler; subclasses are the declarations."""

    keeps_job_logs = True
    #: the dask_jobqueue cluster class
    cluster_class: ClassVar[str]
    #: the environment variable holding the job id inside a job
    job_id_variable: ClassVar[str]
    #: a directive line (without its prefix) for any other --clusterargs key
    directive: ClassVar[str] = "--{key}={value}"
    #: dask-jobqueue's own config key for what clowdr calls the account (None: it has none)
    account_key: ClassVar[str | None] = "account"
    #: the command saying what became of a job, ``{job_id}`` filled in
    lost_command: ClassVar[tuple[str, ...]] = ()
    #: how long to wait for the scheduler to settle a vanished job's final state
    lost_wait: ClassVar[float] = 10.0

    def __init__(self, request: ClusterRequest | None = None) -> None:
        super().__init__(request)
        self._refusals = Refusals(self.name, int(self.setting("submit-tries")), float(self.setting("submit-delay")))

    # -- the declaration's hooks ------------------------------------------------------------------------
    def cluster_kwargs(self, job: JobRequest) -> dict[str, Any]:
        """The dask-jobqueue class's arguments for ``job`` (walltime, memory, CPUs, queue, account, directives)."""
        raise NotImplementedError

    def read_lost(self, output: str, job_id: str) -> tuple[Failure, str] | None:
        """A vanished job's class and reason from ``lost_command``'s output; None until the state is final."""
        return None

    # -- resolution of what each job asks for -------------------------------------------------------------
    @property
    def retire_margin(self) -> float | None:
        return float(self.setting("retire-margin"))

    def job_request(self) -> JobRequest:
        """Every resource from the first source that sets it; raises InputError on a value it cannot read."""
        chosen: dict[str, Any] = {}
        directives = self._configured_directives()
        for key, value in parse_clusterargs(self.request.clusterargs).items():
            resource = STANDARD_KEYS.get(key)
            if resource:
                chosen[resource] = PARSERS[resource](value)
            else:
                directives.append(self.directive.format(key=key, value=value))
        suggested = self._suggested()
        for resource in RESOURCES:
            if resource in chosen:
                continue
            sources = (*self._user_value(resource), (suggested.get(resource), "suggested-resources"),
                       (self.setting(resource), f"clowdr.{self.name}.{resource}"))
            value, where = next(((v, w) for v, w in sources if v is not None), (None, ""))
            if value is not None:
                chosen[resource] = PARSERS[resource](value, where)
        return JobRequest(job_name=self.request.jobname or str(self.setting("job-name")),
                          walltime=chosen["walltime"], memory=chosen["memory"], cpus=chosen["cpus"],
                          queue=chosen.get("queue"), account=chosen.get("account"), directives=directives)

    def requested(self) -> dict[str, int | None]:
        job = self.job_request()
        return {"cpus": job.cpus, "memory": job.memory, "walltime": job.walltime}

    def task_memory(self) -> int | None:
        """The worker job's memory: a task killed for it runs again in a job asking for more."""
        return self.job_request().memory

    def placement(self, specs: list[TaskSpec]) -> dict[str, Any]:
        from clowdr.backends.placement import restriction

        return restriction(specs)

    def _user_value(self, resource: str) -> list[tuple[Any, str]]:
        """(value, key) of the user's own settings for ``resource``: clowdr's key first, then dask-jobqueue's."""
        from clowdr.config import user_setting

        jobqueue_key = self.account_key if resource == "account" else resource
        keys = [f"clowdr.{self.name}.{resource}"] + ([f"jobqueue.{self.name}.{jobqueue_key}"] if jobqueue_key else [])
        return [(user_setting(key), key) for key in keys]

    def _suggested(self) -> dict[str, Any]:
        """The descriptor's suggested-resources, in clowdr's units."""
        resources = self.request.resources
        found: dict[str, Any] = {}
        if resources.get("cpu-cores"):
            found["cpus"] = int(resources["cpu-cores"])
        if resources.get("ram"):
            found["memory"] = f"{resources['ram']}G"
        if resources.get("walltime-estimate"):      # seconds, written out (a plain number would be minutes)
            found["walltime"] = clock(int(resources["walltime-estimate"]))
        return found

    def _configured_directives(self) -> list[str]:
        from clowdr.config import user_setting

        theirs = user_setting(f"jobqueue.{self.name}.job-extra-directives") or []
        if isinstance(theirs, dict):                    # HTCondor's are a mapping
            theirs = [f"{k} = {v}" for k, v in theirs.items()]
        return [*theirs, *(self.setting("job-extra-directives") or [])]

    def check(self) -> None:
        super().check()
        self.cluster_kwargs(self.job_request())

    def prepare(self) -> None:
        import_jobqueue()

    # -- the cluster --------------------------------------------------------------------------------------
    def _job_kwargs(self, log_directory: Path | None) -> dict[str, Any]:
        """The arguments of every worker job (dask-jobqueue's Job class), the user's own jobqueue settings kept."""
        import dask.config

        job = self.job_request()
        section = f"jobqueue.{self.name}"
        prologue = [f"export {STARTED_VARIABLE}=$(date +%s)", f"export {WALLTIME_VARIABLE}={job.walltime}"]
        return dict(
            job_name=job.job_name, cores=1, processes=1,     # one Dask thread: one task at a time per worker job
            # what the worker needs to know to stop taking tasks before the walltime (see worker.run_group)
            job_script_prologue=[*(dask.config.get(f"{section}.job-script-prologue", default=None) or []),
                                 *prologue],
            log_directory=str(log_directory) if log_directory else None,
            **self._memory_kwargs(job.memory),
        )

    def _memory_kwargs(self, memory: int) -> dict[str, Any]:
        """The worker-job arguments that depend on its memory (a job placed for a task asking for more differs from
        the others in these only): the scheduler's request, and the worker advertising it (``placement``)."""
        import dask.config

        from clowdr.backends.local import worker_preloads
        from clowdr.backends.placement import worker_args

        preloads = [arg for preload in worker_preloads() for arg in ("--preload", preload)]
        return dict(
            worker_extra_args=[*(dask.config.get(f"jobqueue.{self.name}.worker-extra-args", default=None) or []),
                               "--no-dashboard", *worker_args(memory), *preloads],
            **self.cluster_kwargs(replace(self.job_request(), memory=memory)),
        )

    def start(self, log_directory: Path | None = None) -> Any:
        import dask.config

        from clowdr import config
        from clowdr.backends.local import quiet_dask
        from clowdr.backends.placement import MemoryAdaptive

        quiet_dask()
        _hide_refusal_tracebacks()
        if log_directory is not None:
            log_directory.mkdir(parents=True, exist_ok=True)
        scheduler_options = {"dashboard_address": self.setting("dashboard-address"),
                             **(dask.config.get(f"jobqueue.{self.name}.scheduler-options", default=None) or {})}
        cluster_class = getattr(import_jobqueue(), self.cluster_class)
        cluster = cluster_class(job_cls=self._refusals.watching(cluster_class.job_cls),
                                scheduler_options=scheduler_options, silence_logs="error",
                                **self._job_kwargs(log_directory))
        cluster.adapt(Adaptive=MemoryAdaptive, job_options=self._memory_kwargs, minimum_jobs=0,
                      maximum_jobs=self.slots())
        return cluster

    def slots(self) -> int:
        """One worker job per waiting group, up to ``max-jobs`` (each runs one task at a time)."""
        return max(1, min(int(self.setting("max-jobs")), self.request.groups))

    def job_script(self) -> str:
        """The script of a worker job, as dask-jobqueue shows it, without starting a scheduler (its address is
        known only at launch)."""
        cluster_class = getattr(import_jobqueue(), self.cluster_class)
        job = cluster_class.job_cls(SCHEDULER_PLACEHOLDER, name="dummy-name", **self._job_kwargs(None))
        return str(job.job_script())

    def submit_error(self) -> str | None:
        return self._refusals.refused_all()

    def refused_memory(self, memory: int) -> str | None:
        return self._refusals.refused_for(memory)

    # -- vanished jobs and the worker's own job ------------------------------------------------------------
    def explain_lost(self, job_id: str | None) -> tuple[Failure, str] | None:
        """Ask the scheduler until it reports the job's final state (a job just killed takes a moment)."""
        if not job_id or not self.lost_command:
            return None
        deadline = time.monotonic() + self.lost_wait
        while True:
            try:
                output = subprocess.run([part.format(job_id=job_id) for part in self.lost_command],
                                        capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                return None
            found = self.read_lost(output, job_id)
            if found is not None or time.monotonic() > deadline:
                return found
            time.sleep(0.5)

    @classmethod
    def worker_job_id(cls) -> str | None:
        import os

        return os.environ.get(cls.job_id_variable)


class JobRefused(RuntimeError):
    """The scheduler refused a worker job (counted, reported once by clowdr, not as a traceback)."""


class Refusals:
    """Worker-job submissions the scheduler refused, and whether it ever took one. dask-jobqueue only logs a
    refusal and does not submit that job again, so a launch whose every job was refused would wait forever; a
    refusal may also pass (a scheduler busy or restarting), so each job is submitted ``tries`` times, ``delay``
    seconds apart, before it counts as refused."""

    def __init__(self, scheduler: str, tries: int = 1, delay: float = 0.0) -> None:
        self.scheduler = scheduler
        self.tries, self.delay = max(1, tries), delay
        self.accepted = 0
        self.last = ""
        self.largest_accepted = 0                   # bytes of the largest worker job the scheduler took
        self.refused_sizes: dict[int, str] = {}     # bytes of a worker job it refused -> why

    def watching(self, job_class: type) -> type:
        """``job_class`` whose submissions are tried again and counted here."""
        import asyncio

        from distributed.core import Status

        refusals = self

        class Watched(job_class):  # type: ignore[misc, valid-type]
            async def start(self) -> None:
                for tried in range(1, refusals.tries + 1):
                    try:
                        await super().start()
                        break
                    except Exception as exc:
                        refusals.refused(exc, tried)
                        if tried < refusals.tries:
                            await asyncio.sleep(refusals.delay)
                            continue
                        self.status = Status.failed      # what it is: the cluster then closes without complaint
                        refusals.refused_sizes.setdefault(self.worker_memory or 0, refusals.last)
                        raise JobRefused(refusals.last) from exc
                refusals.accepted += 1
                refusals.largest_accepted = max(refusals.largest_accepted, self.worker_memory or 0)

        Watched.__name__ = job_class.__name__
        return Watched

    def refused(self, exc: Exception, tried: int) -> None:
        text = str(exc)
        reason = text.split("stderr:", 1)[1] if "stderr:" in text else text     # what the submit command said
        self.last = " ".join(reason.split()) or " ".join(text.split())
        again = f"; trying again in {self.delay:g} s" if tried < self.tries else ""
        logging.getLogger("clowdr").warning("%s refused a worker job (try %d of %d): %s%s", self.scheduler, tried,
                                            self.tries, self.last, again)

    def refused_all(self) -> str | None:
        """The scheduler's last refusal, if it has taken no worker job at all."""
        return self.last if self.last and not self.accepted else None

    def refused_for(self, memory: int) -> str | None:
        """The refusal of a worker job no bigger than ``memory`` bytes, if no job that big was ever taken: a task
        needing ``memory`` would ask for a job at least as big (a retry after out-of-memory, with more memory)."""
        if memory <= self.largest_accepted:
            return None
        return next((why for size, why in sorted(self.refused_sizes.items()) if size <= memory), None)


class _HideRefusals(logging.Filter):
    """asyncio and tornado would print each refusal again as a traceback: clowdr has reported it already."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], JobRefused))


def _hide_refusal_tracebacks() -> None:
    for name in ("asyncio", "tornado.application"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideRefusals) for f in logger.filters):
            logger.addFilter(_HideRefusals())


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


def _fields(text: str, separator: str = "=") -> dict[str, str]:
    """``key=value`` items of one line (scontrol -o, qstat -f) or ``key value`` lines (qacct)."""
    found = {}
    for item in (text.split() if separator == "=" else text.splitlines()):
        key, sep, value = item.partition(separator) if separator == "=" else item.strip().partition(" ")
        if sep:
            found[key.strip()] = value.strip()
    return found


# -- the declarations ---------------------------------------------------------------------------------------
class SLURM(JobqueueBackend):
    submit_command = "sbatch"
    name = "slurm"
    cluster_class = "SLURMCluster"
    job_id_variable = "SLURM_JOB_ID"
    directive = "--{key}={value}"
    lost_command = ("scontrol", "show", "job", "-o", "{job_id}")
    FINAL = {"CANCELLED", "COMPLETED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
             "BOOT_FAIL", "DEADLINE"}

    def cluster_kwargs(self, job: JobRequest) -> dict[str, Any]:
        return {"walltime": clock(job.walltime, days=True), "memory": str(job.memory),
                "job_mem": f"{math.ceil(job.memory / MIB)}M", "job_cpu": job.cpus, "queue": job.queue,
                "account": job.account, "job_extra_directives": job.directives}

    def read_lost(self, output: str, job_id: str) -> tuple[Failure, str] | None:
        fields = _fields(output)
        state = fields.get("JobState")
        if state not in self.FINAL:
            return None
        if state in ("TIMEOUT", "DEADLINE"):
            return Failure.WALLTIME, f"SLURM job {job_id} reached its time limit ({fields.get('TimeLimit')})"
        if state == "OUT_OF_MEMORY":
            return Failure.OUT_OF_MEMORY, f"SLURM job {job_id} ran out of memory ({fields.get('MinMemoryNode')})"
        return Failure.WORKER_LOST, f"SLURM job {job_id} ended as {state} (reason: {fields.get('Reason', 'None')})"


class SGE(JobqueueBackend):
    submit_command = "qsub"
    name = "sge"
    cluster_class = "SGECluster"
    job_id_variable = "JOB_ID"
    directive = "-{key} {value}"
    account_key = None          # dask-jobqueue's "project" is -P, which needs projects configured; accounts are -A
    lost_command = ("qacct", "-j", "{job_id}")
    #: qacct's "failed" code when the qmaster enforced h_rt, h_cpu or h_vmem
    LIMIT_ENFORCED = "37"

    def cluster_kwargs(self, job: JobRequest) -> dict[str, Any]:
        directives = list(job.directives)
        if job.cpus > 1:
            environment = self.setting("parallel-environment")
            if not environment:
                raise InputError("--clusterargs", f"cpus {job.cpus} needs a Grid Engine parallel environment: "
                                                  "set clowdr.sge.parallel-environment (e.g. smp)")
            directives.append(f"-pe {environment} {job.cpus}")
        if job.account:
            directives.append(f"-A {job.account}")
        return {"walltime": clock(job.walltime), "memory": str(job.memory), "queue": job.queue,
                "resource_spec": f"{self.setting('memory-resource')}={math.ceil(job.memory / MIB)}M",
                "job_extra_directives": directives}

    def read_lost(self, output: str, job_id: str) -> tuple[Failure, str] | None:
        """From ``qacct -j``: ``failed 37`` with the whole h_rt used is the time limit; ``failed 100`` a qdel."""
        fields = _fields(output, separator=" ")
        if "failed" not in fields:
            return None                                     # not in the accounting file yet
        failed, status = fields["failed"], fields.get("exit_status", "")
        ran = int(re.sub(r"\D", "", fields.get("ru_wallclock", "")) or 0)
        limit = re.search(r"h_rt=(\d+)", fields.get("category", ""))
        if failed.startswith(self.LIMIT_ENFORCED) and limit and ran >= int(limit.group(1)):
            return Failure.WALLTIME, (f"Grid Engine job {job_id} reached its time limit (h_rt {limit.group(1)} s; "
                                      f"failed: {failed})")
        return Failure.WORKER_LOST, f"Grid Engine job {job_id} ended (failed: {failed}, exit_status: {status})"


class PBS(JobqueueBackend):
    submit_command = "qsub"
    name = "pbs"
    cluster_class = "PBSCluster"
    job_id_variable = "PBS_JOBID"
    directive = "-l {key}={value}"
    lost_command = ("qstat", "-x", "-f", "{job_id}")

    def cluster_kwargs(self, job: JobRequest) -> dict[str, Any]:
        return {"walltime": clock(job.walltime), "memory": str(job.memory), "queue": job.queue,
                "account": job.account,
                "resource_spec": f"select=1:ncpus={job.cpus}:mem={math.ceil(job.memory / MIB)}mb",
                "job_extra_directives": job.directives}

    def read_lost(self, output: str, job_id: str) -> tuple[Failure, str] | None:
        fields = {k: v for k, v in (line.strip().partition(" = ")[::2] for line in output.splitlines()) if v}
        if fields.get("job_state") not in ("F", "C"):
            return None
        used = fields.get("resources_used.walltime")
        limit = fields.get("Resource_List.walltime")
        if used and limit and seconds_of(used) >= seconds_of(limit):
            return Failure.WALLTIME, f"PBS job {job_id} reached its time limit ({limit})"
        return Failure.WORKER_LOST, (f"PBS job {job_id} ended (Exit_status {fields.get('Exit_status')}"
                                     f"{', ' + fields['comment'] if fields.get('comment') else ''})")


class LSF(JobqueueBackend):
    submit_command = "bsub"
    name = "lsf"
    cluster_class = "LSFCluster"
    job_id_variable = "LSB_JOBID"
    directive = "-{key} {value}"
    account_key = "project"
    lost_command = ("bjobs", "-l", "{job_id}")

    def cluster_kwargs(self, job: JobRequest) -> dict[str, Any]:
        minutes = math.ceil(job.walltime / 60)
        return {"walltime": f"{minutes // 60:02d}:{minutes % 60:02d}", "memory": str(job.memory),
                "mem": job.memory, "ncpus": job.cpus, "queue": job.queue, "project": job.account,
                "job_extra_directives": job.directives}

    def read_lost(self, output: str, job_id: str) -> tuple[Failure, str] | None:
        text = " ".join(output.split())
        if "Status <EXIT>" not in text and "Status <DONE>" not in text:
            return None
        if "TERM_RUNLIMIT" in text:
            return Failure.WALLTIME, f"LSF job {job_id} reached its run limit (TERM_RUNLIMIT)"
        if "TERM_MEMLIMIT" in text:
            return Failure.OUT_OF_MEMORY, f"LSF job {job_id} reached its memory limit (TERM_MEMLIMIT)"
        reason = re.search(r"(TERM_[A-Z_]+)", text)
        return Failure.WORKER_LOST, f"LSF job {job_id} ended ({reason.group(1) if reason else 'no TERM_ reason'})"


class HTCondor(JobqueueBackend):
    submit_command = "condor_submit"
    name = "htcondor"
    cluster_class = "HTCondorCluster"
    job_id_variable = "CLOWDR_HTCONDOR_JOB_ID"      # HTCondor sets none: read from the job ad (worker_job_id)
    directive = "{key} = {value}"
    lost_command = ("condor_history", "-limit", "1", "-af", "JobStatus", "HoldReason", "RemoveReason", "{job_id}")

    def cluster_kwargs(self, job: JobRequest) -> dict[str, Any]:
        from clowdr.config import user_setting

        if job.queue:
            raise InputError("--clusterargs", "HTCondor has no queues: choose machines with "
                                              "requirements:<expression> instead of queue/partition")
        directives = dict(line.split(" = ", 1) for line in job.directives)
        directives.update({"batch_name": job.job_name, "RequestCpus": str(job.cpus),
                           "allowed_job_duration": str(job.walltime)})
        if job.account:
            directives["accounting_group"] = job.account
        return {"memory": str(job.memory), "disk": user_setting("jobqueue.htcondor.disk") or self.setting("disk"),
                "job_extra_directives": directives}

    def read_lost(self, output: str, job_id: str) -> tuple[Failure, str] | None:
        if not output.strip():
            return None
        status, _, reasons = output.strip().partition(" ")
        if "duration" in reasons.lower():
            return Failure.WALLTIME, f"HTCondor job {job_id} exceeded its allowed duration ({reasons})"
        if "memory" in reasons.lower():
            return Failure.OUT_OF_MEMORY, f"HTCondor job {job_id} exceeded its memory ({reasons})"
        return Failure.WORKER_LOST, f"HTCondor job {job_id} ended (JobStatus {status}: {reasons})"

    @classmethod
    def worker_job_id(cls) -> str | None:
        """``ClusterId.ProcId`` from the job ad HTCondor gives every job (``$_CONDOR_JOB_AD``)."""
        import os

        try:
            with open(os.environ["_CONDOR_JOB_AD"]) as handle:
                ad = dict(line.partition(" = ")[::2] for line in handle.read().splitlines())
        except (KeyError, OSError):
            return None
        cluster, proc = ad.get("ClusterId", "").strip(), ad.get("ProcId", "").strip()
        return f"{cluster}.{proc}" if cluster else None
