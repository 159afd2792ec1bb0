"""Where a task may run by its memory: the retry of a task killed for its memory must run in a bigger worker job.

Every worker of a batch back-end advertises its job's memory as the Dask resource ``MEMORY`` (bytes,
``worker_args``), and a parcel of tasks asks for the largest memory among them (``restriction``). Dask's adaptive
scaling counts tasks, not what they ask for: a task no worker can hold would wait forever beside idle smaller
workers. ``MemoryAdaptive`` therefore also starts, for each such task, a worker job with the memory it asks for,
and never lets the ordinary scaling down withdraw that job before its worker has arrived. Such jobs count beyond
the maximum: the ordinary scaling down then retires idle workers to make up for them.

It also forgets at once a job whose worker has left (retired before its walltime, or ended after an out-of-memory
kill, or its job deleted): Dask would count it for ``distributed.deploy.lost-worker-timeout`` (15 s) more, and
start no other job in its place meanwhile.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from distributed.core import Status
from distributed.deploy.adaptive import Adaptive
from distributed.diagnostics.plugin import SchedulerPlugin

from clowdr.protocol import TaskSpec

MEMORY = "MEMORY"


def restriction(specs: Iterable[TaskSpec]) -> dict[str, Any]:
    """Dask submit arguments holding the parcel ``specs`` to workers with the memory its tasks ask for."""
    memory = max((spec.memory for spec in specs if spec.memory), default=None)
    return {"resources": {MEMORY: memory}} if memory else {}


def worker_args(memory: int) -> list[str]:
    """The worker's arguments advertising ``memory`` bytes."""
    return ["--resources", f"{MEMORY}={memory}"]


class _Arrivals(SchedulerPlugin):
    """Names the workers that connect, into ``seen`` (the scheduler runs in the client's process)."""

    def __init__(self, seen: set[str]) -> None:
        self.seen = seen

    def add_worker(self, scheduler: Any, worker: str) -> None:
        self.seen.add(scheduler.workers[worker].name)


class MemoryAdaptive(Adaptive):
    """Adaptive scaling plus worker jobs of the memory tasks ask for (``job_options(memory)``: the arguments of
    such a job that differ from the cluster's usual ones)."""

    def __init__(self, cluster: Any, job_options: Callable[[int], dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(cluster, **kwargs)
        self.job_options = job_options
        self.placed: dict[str, int] = {}        # worker jobs started for a task's memory: name -> memory
        self.seen: set[str] = set()             # jobs whose worker has connected (however briefly)
        cluster.scheduler.add_plugin(_Arrivals(self.seen), name="clowdr-arrivals")

    def _arriving(self) -> set[str]:
        """Placed jobs whose worker has not connected yet."""
        self.placed = {name: memory for name, memory in self.placed.items() if name in self.cluster.worker_spec}
        return set(self.placed) - self.observed

    def _unmet(self) -> list[int]:
        """The memory of each waiting task that no worker holds and no arriving job will."""
        arriving = sorted(self.placed[name] for name in self._arriving())
        unmet = []
        for task in self.cluster.scheduler.unrunnable:
            memory = int((task.resource_restrictions or {}).get(MEMORY, 0))
            fits = next((size for size in arriving if size >= memory), None) if memory else None
            if fits is not None:
                arriving.remove(fits)
            elif memory:
                unmet.append(memory)
        return unmet

    async def recommendations(self, target: int) -> dict[str, Any]:
        self.seen &= self.plan
        for name in self.seen - {ws.name for ws in self.cluster.scheduler.workers.values()}:
            self._forget(name)
        unmet = self._unmet()
        if unmet:
            return {"status": "up", "n": len(self.plan), "memory": unmet}
        found = await super().recommendations(target)
        if found["status"] == "down":
            # as many, but never a placed job on its way: other jobs without a worker (not arrived, or left) instead
            arriving = self._arriving()
            kept = [name for name in found["workers"] if name not in arriving]
            others = sorted(self.requested - self.observed - arriving - set(kept), key=str)
            found["workers"] = (kept + others)[:len(found["workers"])]
            if not found["workers"]:
                return {"status": "same"}
        return found

    def _forget(self, name: str) -> None:
        """The job whose worker has left ends by itself (a worker leaving on purpose ends its job): withdrawing it
        now would make the cancellation its record (SLURM CANCELLED, Grid Engine failed 100) instead of how it
        ended (OUT_OF_MEMORY), so it is cancelled only after Dask's lost-worker-timeout, in case it did not end."""
        import dask.config
        from dask.utils import parse_timedelta

        cluster = self.cluster
        cluster.worker_spec.pop(name, None)
        self.seen.discard(name)
        job = cluster.workers.pop(name, None)
        if job is not None:
            job.status = Status.closed      # for the cluster, it is: its own close must not wait for it
            cluster.loop.call_later(parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout")),
                                    job.close)

    async def scale_up(self, n: int, memory: list[int] | None = None) -> None:
        if not memory:
            await super().scale_up(n)
            return
        cluster = self.cluster
        for size in memory:
            name = self._fresh_name()
            spec = cluster.new_spec
            cluster.worker_spec[name] = dict(spec, options={**spec["options"], **self.job_options(size)})
            self.placed[name] = size
        await cluster

    def _fresh_name(self) -> str:
        """A job name never used in this cluster (Dask reuses a closed job's name, and a job of that name still
        closing would then stand for the new one, which never starts)."""
        cluster = self.cluster
        while True:
            name = cluster._new_worker_name(cluster._i)
            cluster._i += 1
            if name not in cluster.worker_spec and name not in cluster.workers:
                return str(name)
