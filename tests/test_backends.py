"""The same run on every back-end that can run here: the records come out complete and of the same shape.

Back-ends: the local one (shared filesystem, and without one, its workers unable to see the provenance
directory), SLURM and Grid Engine (real daemons on 127.0.0.1), each batch one also with
``shared-filesystem: false``. PBS, LSF and HTCondor have no daemon here: tests/test_job_scripts.py checks their
job scripts.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import DATA, LOOPBACK, Result, hidden_from_workers, run_clowdr, write_json

TOOL = {
    "name": "outcomes", "tool-version": "1", "schema-version": "0.5", "description": "succeeds, fails, forgets",
    "command-line": "echo out-[NAME]; echo err-[NAME] >&2; sleep 0.4; [ '[NAME]' = forget ] || echo [NAME] > out.txt; "
                    "exit [CODE]",
    "inputs": [{"id": "name", "name": "name", "type": "String", "value-key": "[NAME]"},
               {"id": "code", "name": "code", "type": "Number", "integer": True, "value-key": "[CODE]"}],
    "output-files": [{"id": "out", "name": "out", "path-template": "out.txt"}],
}
TASKS = {"a-ok.json": {"name": "ok", "code": 0}, "b-fails.json": {"name": "fails", "code": 3},
         "c-forget.json": {"name": "forget", "code": 0}}
EXPECTED = {0: ("succeeded", None, 0), 1: ("failed", "tool-error", 3), 2: ("failed", "missing-output", 0)}
BACKENDS = ["local", "local-no-shared", "slurm", "slurm-no-shared", "sge", "sge-no-shared"]


def launch(tmp_path: Path, backend: str, request: Any) -> tuple[Result, Path]:
    name, _, mode = backend.partition("-")
    env = dict(LOOPBACK)
    args: list[str] = []
    if name != "local":
        request.getfixturevalue(name)                       # the scheduler's daemons, started by our scripts
        args = ["-c", name]
    provdir = tmp_path / "prov"
    provdir.mkdir()
    if mode == "no-shared" and name == "local":
        env.update(hidden_from_workers(provdir, tmp_path / "scratch"))
    elif mode == "no-shared":
        env.update({f"DASK_CLOWDR__{name.upper()}__SHARED_FILESYSTEM": "false",
                    "DASK_CLOWDR__WORKER__SCRATCH": str(tmp_path / "scratch"),
                    # job logs where dask-jobqueue's own setting says (the client's run is not theirs to write)
                    f"DASK_JOBQUEUE__{name.upper()}__LOG_DIRECTORY": str(tmp_path / "job-logs")})
    descriptor = write_json(tmp_path / "outcomes.json", TOOL)
    directory = tmp_path / "invocations"
    for file_name, invocation in TASKS.items():
        write_json(directory / file_name, invocation)
    return run_clowdr("local", descriptor, directory, provdir, *args, env=env, timeout=300), provdir


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[int, set[str]]:
    """The summary keys of the same run on the default back-end."""
    result, _ = launch(tmp_path_factory.mktemp("reference"), "local", None)
    assert result.returncode == 1, result.stderr
    return {n: set(summary) for n, summary in result.summaries().items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_run_gives_the_same_records_on_every_backend(backend, tmp_path, request, reference):
    result, provdir = launch(tmp_path, backend, request)
    assert result.returncode == 1, result.stderr                 # one task fails on purpose
    name, _, mode = backend.partition("-")
    summaries = result.summaries()
    assert sorted(summaries) == [0, 1, 2]
    for n, (status, failure, code) in EXPECTED.items():
        summary = summaries[n]
        assert (summary["status"], summary["failure"], summary["exitcode"]) == (status, failure, code), summary
        assert summary["backend"] == name
        assert (summary["job_id"] is None) == (name == "local")
        extra = {"outputs_host"} if mode == "no-shared" else set()
        assert set(summary) == reference[n] | extra
        word = TASKS[sorted(TASKS)[n]]["name"]
        assert (result.meta / f"task-{n}-stdout.txt").read_text() == f"out-{word}\n"
        assert (result.meta / f"task-{n}-stderr.txt").read_text() == f"err-{word}\n"
        with open(result.meta / f"task-{n}-usage.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == summary["samples"]
    assert Path(summaries[0]["outputs"][0]).read_text() == "ok\n"
    if mode == "no-shared":
        assert summaries[0]["workdir"].startswith(str(tmp_path / "scratch"))
        assert not (provdir / result.meta.parent.name / "work").exists()
        assert not (result.meta / name).exists()
        assert name == "local" or list((tmp_path / "job-logs").iterdir())


@pytest.mark.parametrize("scheduler, refused, says", [("slurm", "partition:nosuch", "invalid partition"),
                                                     ("sge", "queue:nosuch.q", "unknown queue")])
def test_worker_jobs_the_scheduler_refuses_are_a_submit_error(scheduler, refused, says, request, clowdr, provdir,
                                                             invocations):
    """dask-jobqueue alone does not submit a refused job again, and the launch would wait forever: clowdr submits it
    submit-tries times, then the tasks are submit-errors."""
    request.getfixturevalue(scheduler)
    directory = invocations({f"i{n}.json": {"name": f"t{n}", "code": 0} for n in range(2)})
    env = {**LOOPBACK, f"DASK_CLOWDR__{scheduler.upper()}__SUBMIT_TRIES": "3",
           f"DASK_CLOWDR__{scheduler.upper()}__SUBMIT_DELAY": "0.5"}
    result = clowdr("local", write_json(directory.parent / "outcomes.json", TOOL), directory, provdir,
                    "-c", scheduler, "-a", refused, env=env, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "(try 1 of 3)" in result.stderr and "(try 3 of 3)" in result.stderr
    for summary in result.summaries().values():
        assert summary["failure"] == "submit-error" and says in summary["error"].lower(), summary
    assert "2 task(s): 0 succeeded, 2 failed (submit-error: 2)" in result.stderr


@pytest.mark.parametrize("scheduler", ["slurm", "sge"])
def test_tasks_run_on_several_worker_jobs(scheduler, request, clowdr, provdir, invocations, tmp_path):
    """Each task waits until tasks have run in two distinct worker jobs: it fails unless the work is shared."""
    request.getfixturevalue(scheduler)
    directory = invocations({f"i{n}.json": {"dir": str(tmp_path / "jobs"), "n": 2} for n in range(6)})
    result = clowdr("local", DATA / "meet.json", directory, provdir, "--cluster", scheduler,
                    env={**LOOPBACK, f"DASK_CLOWDR__{scheduler.upper()}__MAX_JOBS": "2"}, timeout=240)
    assert result.returncode == 0, result.stderr
    summaries = result.summaries()
    assert len(summaries) == 6 and all(s["status"] == "succeeded" for s in summaries.values())
    assert {s["backend"] for s in summaries.values()} == {scheduler}
    jobs = {s["job_id"] for s in summaries.values()}
    assert None not in jobs and len(jobs) >= 2                         # several worker jobs shared the work
    assert json.loads((result.meta / "run.json").read_text())["cluster"] == scheduler
    assert list((result.meta / scheduler).iterdir())                    # worker job logs kept with the run


def test_a_parcel_asks_for_the_largest_memory_of_its_tasks_on_a_batch_backend_only():
    from clowdr.backends import LocalBackend, SLURM
    from clowdr.protocol import TaskSpec

    specs = [TaskSpec(0, 1, {}, memory=256 << 20), TaskSpec(1, 2, {}, memory=512 << 20), TaskSpec(2, 1, {})]
    assert SLURM().placement(specs) == {"resources": {"MEMORY": 512 << 20}}
    assert SLURM().placement([TaskSpec(2, 1, {})]) == {}
    assert LocalBackend().placement(specs) == {}
    assert SLURM().task_memory() == SLURM().requested()["memory"]       # the first attempt asks for the job's


def test_a_task_needing_more_memory_than_any_worker_gets_a_worker_of_its_own():
    """MemoryAdaptive on a real (local) Dask cluster: the small worker stays idle, a worker advertising the memory
    asked for is started for the task, and the task runs there."""
    from distributed import Client, LocalCluster, get_worker

    from clowdr.backends.placement import MEMORY, MemoryAdaptive

    def memory_here() -> float:
        return get_worker().state.total_resources[MEMORY]

    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, resources={MEMORY: 100},
                      protocol="tcp://", host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        cluster.adapt(Adaptive=MemoryAdaptive, job_options=lambda memory: {"resources": {MEMORY: memory}},
                      minimum=1, maximum=3, interval="100ms")
        assert client.submit(memory_here, resources={MEMORY: 100}, pure=False).result(timeout=30) == 100
        # Dask's own adaptive scaling would leave it waiting: the small idle worker counts as enough
        assert client.submit(memory_here, resources={MEMORY: 200}, pure=False).result(timeout=30) == 200
