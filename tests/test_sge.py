"""clowdr on a real single-node Son of Grid Engine on 127.0.0.1 (scripts/sge-up.sh), through dask-jobqueue."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (DATA, EXAMPLES, LOOPBACK, ROOT, finish, out_of_memory_then_twice_the_memory,
                      walltime_run_in_background, write_json)


def qacct(job_id: str, wait: float = 20.0) -> dict[str, str]:
    """The accounting record of a finished job (written a moment after it ends)."""
    deadline = time.monotonic() + wait
    while True:
        shown = subprocess.run(["qacct", "-j", job_id], capture_output=True, text=True).stdout
        fields = dict(line.split(None, 1) for line in shown.splitlines() if len(line.split(None, 1)) == 2)
        if "failed" in fields or time.monotonic() > deadline:
            return {k: v.strip() for k, v in fields.items()}
        time.sleep(0.5)


@pytest.fixture(scope="module", autouse=True)
def walltime_run(sge, tmp_path_factory):
    """The run of test_a_walltime_kill_is_recorded_as_walltime, started with the module (the time limit takes its
    15 s while the other tests run)."""
    yield from walltime_run_in_background("sge", "0:0:15", tmp_path_factory)


def test_jobname_and_clusterargs_reach_grid_engine(sge, clowdr, provdir, tmp_path):
    invocation = write_json(tmp_path / "i.json", {"seconds": 8})
    process = subprocess.Popen(
        [sys.executable, "-m", "clowdr", "local", str(DATA / "sleep.json"), str(invocation), str(provdir), "-c", "sge",
         "-n", "clowdr-e2e", "-a", "time:0:30,mem:300,account:clowdrtest,queue:all.q,ac:from=clowdr"],
        cwd=ROOT, env={**os.environ, **LOOPBACK}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        fields: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while fields.get("job_name") != "clowdr-e2e" and time.monotonic() < deadline:
            for job in jobs():          # other tests' jobs too (the walltime run's)
                shown = subprocess.run(["qstat", "-j", job], capture_output=True, text=True).stdout
                fields = dict(re.split(r":\s+", line, maxsplit=1) for line in shown.splitlines()
                              if re.search(r":\s", line))
                if fields.get("job_name") == "clowdr-e2e":
                    break
            time.sleep(0.3)
        assert fields["job_name"] == "clowdr-e2e"                        # -n
        assert fields["account"] == "clowdrtest"                        # -a account:... (-A)
        resources = dict(item.split("=") for item in fields["hard resource_list"].split(","))
        assert resources["h_rt"] == "1800" and resources["mem_free"] == "300M"     # time:0:30 is thirty minutes
        assert fields["hard_queue_list"] == "all.q"
        assert fields["context"] == "from=clowdr"                       # an unknown key becomes a directive
    finally:
        stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr


def jobs() -> set[str]:
    listed = subprocess.run(["qstat", "-u", "*"], capture_output=True, text=True).stdout.splitlines()
    return {line.split()[0] for line in listed[2:] if line.split()}


def test_setup_prints_the_job_script_and_submits_nothing(sge, clowdr, provdir):
    before = jobs()              # an earlier test's job may still be on its way out
    result = clowdr("local", EXAMPLES / "echo-tool.json", EXAMPLES / "invocations", provdir, "--setup", "-c", "sge",
                    "-a", "time:4:00,mem:2048,l:arch=lx-amd64", "-n", "named", env=LOOPBACK)
    assert result.returncode == 0, result.stderr
    for line in ("#$ -N named", "#$ -l h_rt=04:00:00", "#$ -l mem_free=2048M", "#$ -l arch=lx-amd64"):
        assert line in result.stdout.splitlines(), line
    assert jobs() <= before      # nothing new submitted
    assert not list(result.meta.glob("task-*-summary.json"))


def test_a_worker_job_deleted_mid_task_runs_the_task_again(sge, clowdr, provdir, tmp_path):
    marker = tmp_path / "started-once"
    descriptor = write_json(tmp_path / "slow.json", {
        "name": "slow-once", "tool-version": "1", "schema-version": "0.5", "description": "slow the first time",
        "command-line": f"if [ -e {marker} ]; then echo second; exit 0; fi; echo $JOB_ID > {marker}; sleep 60 [X]",
        "inputs": [{"id": "x", "name": "x", "type": "String", "value-key": "[X]", "optional": True}]})
    process = subprocess.Popen(
        [sys.executable, "-m", "clowdr", "local", str(descriptor), str(write_json(tmp_path / "e.json", {})),
         str(provdir), "-c", "sge"], cwd=ROOT, env={**os.environ, **LOOPBACK},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (marker.exists() and marker.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    first_job = marker.read_text().strip()
    subprocess.run(["qdel", first_job], check=True, capture_output=True)
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr
    meta = Path(stdout.strip().splitlines()[-1])
    summary = json.loads((meta / "task-0-summary.json").read_text())
    assert summary["attempt"] == 2 and summary["status"] == "succeeded"
    assert summary["job_id"] != first_job
    ended = summary["previous_attempts_ended"][0]
    assert ended["job_id"] == first_job and ended["failure"] == "worker-lost"
    assert "failed: 100" in ended["error"]                              # Grid Engine's own account of a qdel
    archived = json.loads((meta / "attempts" / "task-0" / "attempt-1" / "summary.json").read_text())
    assert archived["failure"] == "worker-lost" and archived["job_id"] == first_job


def test_workers_retire_before_their_walltime_instead_of_being_killed(sge, clowdr, provdir, invocations):
    """A 40 s walltime and a 35 s retire margin leave each worker job ~5 s to take tasks: the work moves to
    fresh jobs and no task is ever killed by the time limit."""
    directory = invocations({f"i{n}.json": {"seconds": 2} for n in range(4)})
    env = dict(LOOPBACK, DASK_CLOWDR__SGE__RETIRE_MARGIN="35", DASK_CLOWDR__SGE__MAX_JOBS="1")
    result = clowdr("local", DATA / "sleep.json", directory, provdir, "-c", "sge", "-a", "time:0:0:40", env=env,
                    timeout=300)
    assert result.returncode == 0, result.stderr
    summaries = result.summaries().values()
    assert all(s["status"] == "succeeded" and s["attempt"] == 1 for s in summaries)
    jobs = {s["job_id"] for s in summaries}
    assert len(jobs) >= 2
    for job in jobs:
        assert not qacct(job).get("failed", "").startswith("37")          # none killed by h_rt


def test_out_of_memory_runs_again_in_a_worker_job_with_twice_the_memory(sge, provdir, tmp_path):
    """The tool outgrows its 256 MiB worker job and is killed for it; the retry asks for 512 MiB, which a new worker
    job is submitted for. Grid Engine here holds a job to no memory (mem_free is a request; h_vmem would limit the
    address space, under which an allocation fails instead of being killed): the worker holds the tool to its job's
    memory itself, and the scheduler's record shows the doubled request, not the kill."""
    first, summary = out_of_memory_then_twice_the_memory("sge", provdir, tmp_path)
    first_job, second_job = qacct(first["job_id"]), qacct(summary["job_id"])
    assert "mem_free=256M" in first_job["category"] and "mem_free=512M" in second_job["category"]
    assert first_job["failed"] == "0"             # its worker left on its own once the task outgrew the job


def test_a_walltime_kill_is_recorded_as_walltime(walltime_run):
    """With the retire margin off, Grid Engine's h_rt kills the task: the record says so, not 'lost'."""
    result = finish(walltime_run, timeout=240)
    assert result.returncode == 1, result.stderr
    summary = result.summary(0)
    assert summary["status"] == "failed" and summary["failure"] == "walltime", summary
    assert "time limit" in summary["error"] and summary["job_id"]
    assert qacct(summary["job_id"])["failed"].startswith("37")

