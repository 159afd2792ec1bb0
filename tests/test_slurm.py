"""clowdr on a real single-node SLURM on 127.0.0.1 (scripts/slurm-up.sh), through dask-jobqueue."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from conftest import (DATA, EXAMPLES, LOOPBACK, finish, out_of_memory_then_twice_the_memory,
                      walltime_run_in_background, write_json)

MIB = 1 << 20


def scontrol(job_id: str) -> dict[str, str]:
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(item.split("=", 1) for item in shown.split() if "=" in item)


def sacct_state(job_id: str, wait: float = 20.0) -> str:
    """The job's final state in SLURM's job completion record (``sacct -c``: written as the job ends)."""
    deadline = time.monotonic() + wait
    while True:
        shown = subprocess.run(["sacct", "-c", "-n", "-P", "-j", job_id, "-o", "JobID,State"], capture_output=True,
                               text=True).stdout
        states = [line.split("|")[1] for line in shown.splitlines() if line.split("|")[0] == job_id]
        if states or time.monotonic() > deadline:
            return states[-1] if states else ""
        time.sleep(0.5)


@pytest.fixture(scope="module", autouse=True)
def walltime_run(slurm, tmp_path_factory):
    """The run of test_a_walltime_kill_is_recorded_as_walltime, started with the module: SLURM's time limits are
    whole minutes, checked every 30 s, so the kill comes 60-90 s after the job starts; the other tests run
    meanwhile."""
    yield from walltime_run_in_background("slurm", "0:01", tmp_path_factory)


def test_clusterargs_and_jobname_reach_the_scheduler(slurm, clowdr, provdir, tmp_path):
    invocation = write_json(tmp_path / "i.json", {"seconds": 0})
    result = clowdr("local", DATA / "sleep.json", invocation, provdir, "-c", "slurm", "-n", "clowdr-e2e",
                    "-a", "time:0:30,mem:300,account:clowdrtest,partition:short,comment:from-clowdr",
                    env=LOOPBACK, timeout=240)
    assert result.returncode == 0, result.stderr
    job = scontrol(result.summary(0)["job_id"])
    assert job["JobName"] == "clowdr-e2e"
    assert job["TimeLimit"] == "00:30:00"                             # time:0:30 is thirty minutes
    assert job["MinMemoryNode"] == "300M"
    assert job["Account"] == "clowdrtest" and job["Partition"] == "short"
    assert job["Comment"] == "from-clowdr"                            # an unknown key becomes a directive


def test_setup_prints_the_job_script_and_submits_nothing(slurm, clowdr, provdir):
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    result = clowdr("local", EXAMPLES / "echo-tool.json", EXAMPLES / "invocations", provdir, "--setup", "-c",
                    "slurm", "-a", "time:4:00,mem:2048,qos:normal", "-n", "named", env=LOOPBACK)
    assert result.returncode == 0, result.stderr
    script = result.stdout
    for line in ("#SBATCH -J named", "#SBATCH -t 04:00:00", "#SBATCH --mem=2048M", "#SBATCH --qos=normal",
                 "--preload clowdr.worker"):
        assert line in script, line
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert not set(after) - set(before)     # an earlier test's job may leave the queue meanwhile
    assert not list(result.meta.glob("task-*-summary.json"))


def test_suggested_resources_set_the_request_when_nothing_else_does(slurm, clowdr, provdir, tmp_path):
    descriptor = json.loads((DATA / "sleep.json").read_text())
    descriptor["suggested-resources"] = {"cpu-cores": 2, "ram": 0.5, "walltime-estimate": 600}
    path = write_json(tmp_path / "suggested.json", descriptor)
    result = clowdr("local", path, write_json(tmp_path / "i.json", {"seconds": 0}), provdir, "--setup", "-c", "slurm",
                    env=LOOPBACK)
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --cpus-per-task=2" in result.stdout and "#SBATCH -t 00:10:00" in result.stdout
    assert "#SBATCH --mem=512M" in result.stdout
    overridden = clowdr("local", path, tmp_path / "i.json", provdir, "--setup", "-c", "slurm", "-a", "cpus:1",
                        env=LOOPBACK)
    assert "#SBATCH --cpus-per-task=1" in overridden.stdout


@pytest.mark.parametrize("tool_first", [False, True], ids=["scancel", "tool-signalled-first"])
def test_a_worker_job_scancelled_mid_task_runs_the_task_again(slurm, clowdr, provdir, tmp_path, tool_first):
    """SLURM signals a job's processes deepest first: the tool a moment before its worker. tool-signalled-first
    stretches that moment (the tool's process group, then scancel): the task is still worker-lost, not signal."""
    marker = tmp_path / "started-once"
    descriptor = write_json(tmp_path / "slow.json", {
        "name": "slow-once", "tool-version": "1", "schema-version": "0.5", "description": "slow the first time",
        "command-line": f"if [ -e {marker} ]; then echo second; exit 0; fi; echo $SLURM_JOB_ID > {marker}; "
                        "sleep 60 [X]",
        "inputs": [{"id": "x", "name": "x", "type": "String", "value-key": "[X]", "optional": True}]})
    process = subprocess.Popen(
        ["python3", "-m", "clowdr", "local", str(descriptor), str(write_json(tmp_path / "e.json", {})), str(provdir),
         "-c", "slurm"], cwd=Path(__file__).parent.parent, env={**os.environ, **LOOPBACK},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    first_job = marker.read_text().strip()
    tool = next(tool for tool in psutil.process_iter(["cmdline"])
                if str(marker) in " ".join(tool.info["cmdline"] or []) and tool.parent().name() != "sh")
    worker = tool.parent().parent()                 # sh -> the worker's spawner -> the Dask worker
    if tool_first:
        os.killpg(tool.pid, signal.SIGTERM)         # the tool's process group: its shell leads it
    subprocess.run(["scancel", first_job], check=True)
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr
    assert not worker.is_running()
    meta = Path(stdout.strip().splitlines()[-1])
    summary = json.loads((meta / "task-0-summary.json").read_text())
    assert summary["attempt"] == 2 and summary["status"] == "succeeded"
    assert summary["job_id"] != first_job
    ended = summary["previous_attempts_ended"][0]
    assert ended["job_id"] == first_job and ended["failure"] == "worker-lost"
    assert "CANCELLED" in ended["error"]
    archived = json.loads((meta / "attempts" / "task-0" / "attempt-1" / "summary.json").read_text())
    assert archived["failure"] == "worker-lost" and archived["job_id"] == first_job


def test_bad_clusterargs_are_refused_before_anything_runs(clowdr, provdir, tmp_path):
    invocation = write_json(tmp_path / "i.json", {"seconds": 0})
    for bad in ("time", "time:soon", "mem:lots", "cpus:zero"):
        result = clowdr("local", DATA / "sleep.json", invocation, provdir, "-c", "slurm", "-a", bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "--clusterargs" in result.stderr
    assert list(provdir.iterdir()) == []


def test_clowdr_task_runs_a_task_file_of_a_slurm_run(slurm, clowdr, provdir, tmp_path):
    setup = clowdr("local", EXAMPLES / "echo-tool.json", EXAMPLES / "invocations", provdir, "--setup", "-c", "slurm",
                   env=LOOPBACK)
    result = clowdr("task", setup.meta / "task-0.json", "-v", f"{tmp_path}:/mnt")
    assert result.returncode == 0, result.stderr
    assert json.loads((setup.meta / "task-0-summary.json").read_text())["status"] == "succeeded"


def test_workers_retire_before_their_walltime_instead_of_being_killed(slurm, clowdr, provdir, invocations):
    """A 2-minute walltime and a 115 s retire margin leave each worker job ~5 s to take tasks: the work moves to
    fresh jobs and no task is ever killed by the walltime."""
    directory = invocations({f"i{n}.json": {"seconds": 2} for n in range(4)})
    env = dict(LOOPBACK, DASK_CLOWDR__SLURM__RETIRE_MARGIN="115", DASK_CLOWDR__SLURM__MAX_JOBS="1")
    result = clowdr("local", DATA / "sleep.json", directory, provdir, "-c", "slurm", "-a", "time:0:02", env=env,
                    timeout=300)
    assert result.returncode == 0, result.stderr
    summaries = result.summaries().values()
    assert all(s["status"] == "succeeded" and s["attempt"] == 1 for s in summaries)
    assert len({s["job_id"] for s in summaries}) >= 2
    for job in {s["job_id"] for s in summaries}:
        assert scontrol(job).get("JobState") != "TIMEOUT"


def test_out_of_memory_runs_again_in_a_worker_job_with_twice_the_memory(slurm, provdir, tmp_path):
    """The tool outgrows its 256 MiB worker job: SLURM's task/cgroup kills it and records the job OUT_OF_MEMORY, and
    the retry asks for 512 MiB, which a new worker job is submitted for."""
    plugin = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    if "task/cgroup" not in plugin:
        pytest.skip("this SLURM does not enforce --mem (no TaskPlugin=task/cgroup: scripts/slurm-up.sh found no "
                    "writable memory cgroup, a job failed under it, or /etc/slurm/cgroup.conf is not its own)")
    first, summary = out_of_memory_then_twice_the_memory("slurm", provdir, tmp_path)
    assert first["peak_rss"] < 256 * MIB
    assert sacct_state(first["job_id"]) == "OUT_OF_MEMORY"
    assert scontrol(first["job_id"])["MinMemoryNode"] == "256M"
    assert scontrol(summary["job_id"])["MinMemoryNode"] == "512M"


def test_a_retry_whose_bigger_worker_job_slurm_refuses_is_a_submit_error(slurm, clowdr, provdir, tmp_path):
    """The retry after out-of-memory asks for more memory than any node has: SLURM refuses that job, and the task
    ends as a submit-error saying so, instead of waiting forever for a worker that cannot come."""
    if "task/cgroup" not in subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout:
        pytest.skip("this SLURM does not enforce --mem (no TaskPlugin=task/cgroup: see the test above)")
    invocation = write_json(tmp_path / "i.json", {"mib": 300, "seconds": 1})
    env = dict(LOOPBACK, DASK_CLOWDR__RETRIES__MEMORY_GROWTH="10000", DASK_CLOWDR__RETRIES__MAX_MEMORY="8TiB",
               DASK_CLOWDR__SLURM__SUBMIT_TRIES="1")
    result = clowdr("local", DATA / "alloc.json", invocation, provdir, "-c", "slurm", "-a", "mem:256", env=env,
                    timeout=180)
    assert result.returncode == 1, result.stderr
    summary = result.summary(0)
    assert summary["attempt"] == 2 and summary["failure"] == "submit-error", summary
    assert "refused a worker job with the 2560000 MiB this attempt needs" in summary["error"], summary["error"]
    assert summary["previous_attempts_ended"][0]["failure"] == "out-of-memory"


def test_a_walltime_kill_is_recorded_as_walltime(walltime_run):
    """With the retire margin off, SLURM's time limit kills the task: the record says so, not 'lost'."""
    result = finish(walltime_run, timeout=240)
    assert result.returncode == 1, result.stderr
    summary = result.summary(0)
    assert summary["status"] == "failed" and summary["failure"] == "walltime", summary
    assert "time limit" in summary["error"] and summary["job_id"]
    assert scontrol(summary["job_id"])["JobState"] == "TIMEOUT"

