"""What clowdr measures, and the original tool's defects as regression tests (see legacy-clowdr.md)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path


from conftest import DATA, ROOT, write_json

MIB = 1024 * 1024


def usage_rows(meta: Path, n: int) -> list[dict[str, str]]:
    with open(meta / f"task-{n}-usage.csv") as handle:
        return list(csv.DictReader(handle))


def test_a_2_5_second_task_is_recorded_as_about_2_5_seconds(clowdr, provdir, tmp_path):
    """Defect 1: a 1 s polling loop recorded a 2.5 s task as 4.0 s."""
    result = clowdr("local", DATA / "sleep.json", write_json(tmp_path / "i.json", {"seconds": 2.5}), provdir)
    assert result.returncode == 0, result.stderr
    summary = result.summary(0)
    assert 2.45 <= summary["duration"] <= 2.75
    assert summary["realtime"] == summary["duration"]
    rows = usage_rows(result.meta, 0)
    assert len(rows) >= 3 and float(rows[-1]["time"]) < 2.5


def test_a_task_too_short_to_sample_still_has_real_numbers(clowdr, provdir, invocations):
    """Defect 2: no usage sample raised IndexError and aborted the run; the other tasks never ran."""
    directory = invocations({f"i{n}.json": {"seconds": 0} for n in range(3)})
    result = clowdr("local", DATA / "sleep.json", directory, provdir)
    assert result.returncode == 0, result.stderr
    for n, summary in result.summaries().items():
        assert summary["samples"] == 0
        assert summary["cpu_time"] is not None and summary["cpu_time"] >= 0
        # within its spawner's size: at most that, not clowdr's ~80 MiB worker, and no number it did not reach
        assert 0 < summary["peak_rss"] < 20 * MIB and summary["peak_rss_upper_bound"] is True
        assert summary["duration"] < 1.0
        assert usage_rows(result.meta, n) == []              # a header, no invented samples
    assert len(result.summaries()) == 3


def test_peak_rss_of_a_200_mib_tool_within_10_percent(clowdr, provdir, tmp_path):
    """Defect 8: usage described the Python wrapper, and the first CPU sample was always 0.0."""
    result = clowdr("local", DATA / "alloc.json", write_json(tmp_path / "i.json", {"mib": 200, "seconds": 1.5}), provdir)
    assert result.returncode == 0, result.stderr
    summary = result.summary(0)
    assert 180 * MIB <= summary["peak_rss"] <= 220 * MIB, summary["peak_rss"] / MIB
    assert summary["cpu_time"] >= 1.0                       # the tool burns CPU for 1.5 s
    rows = usage_rows(result.meta, 0)
    assert float(rows[0]["cpu"]) > 0.0
    assert max(float(r["ram"]) for r in rows) >= 180


def test_usage_file_grows_while_the_task_runs(provdir, tmp_path):
    invocation = write_json(tmp_path / "i.json", {"mib": 10, "seconds": 4})
    process = subprocess.Popen([sys.executable, "-m", "clowdr", "local", str(DATA / "alloc.json"), str(invocation),
                                str(provdir)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            usage = list(provdir.glob("*/clowdr/task-0-usage.csv"))
            summary = list(provdir.glob("*/clowdr/task-0-summary.json"))
            if usage and not summary:
                rows = len(usage[0].read_text().splitlines()) - 1
                if not seen or rows != seen[-1]:
                    seen.append(rows)
            time.sleep(0.05)
        assert process.wait(timeout=60) == 0, process.stderr.read()
    finally:
        process.kill()
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] >= 3, seen


def test_samples_are_taken_while_a_tool_runs_and_end_the_moment_it_exits(tmp_path):
    """The thread that waits for the spawner's word of the tool's end samples between waits: sampling ends when
    the tool does, not at the next tick."""
    from clowdr.sampling import ProcessTree, Sampler
    from clowdr.spawner import Spawner

    ended = tmp_path / "ended"
    with open(tmp_path / "out", "wb") as out:
        tool = Spawner.get().start([sys.executable, "-c", "import sys, time; memory = bytearray(40 << 20); "
                                    "time.sleep(0.5); open(sys.argv[1], 'w').write(repr(time.time()))", str(ended)],
                                   str(tmp_path), dict(os.environ), out.fileno(), out.fileno())
    emitted: list = []
    sampler = Sampler(ProcessTree(tool.pid), time.perf_counter(), emitted.extend, 0.1, 2.0)
    sampler.sample_until(tool.ended)
    returned = time.time()
    status, usage = tool.result()
    assert os.waitstatus_to_exitcode(status) == 0
    assert returned - float(ended.read_text()) < 0.3       # the next tick would have been 0.7 or 1.5 s after start
    assert len(sampler.samples) >= 2 and emitted == sampler.samples
    assert max(sample.ram for sample in sampler.samples) >= 40
    assert usage.peak_rss is not None and usage.peak_rss >= 40 * MIB


def test_more_than_64_kib_of_stdout_and_no_output_files(clowdr, provdir, tmp_path):
    """Defects 4 and 5: >64 KiB of stdout deadlocked; a descriptor without output-files crashed after the run."""
    size = 5 * MIB
    result = clowdr("local", DATA / "bigout.json", write_json(tmp_path / "i.json", {"bytes": size}), provdir)
    assert result.returncode == 0, result.stderr
    assert (result.meta / "task-0-stdout.txt").stat().st_size == size
    assert (result.meta / "task-0-stderr.txt").read_text() == "done-on-stderr\n"
    assert result.summary(0)["outputs"] == []


def test_a_dot_in_the_provdir_path(clowdr, tmp_path):
    """Defect 6: task ids were parsed out of paths, and a '.' in the provdir broke them."""
    provdir = tmp_path / "my.prov.v1.2"
    provdir.mkdir()
    directory = tmp_path / "in.vocations"
    for n in range(3):
        write_json(directory / f"task.{n}.json", {"seconds": 0, "code": n})
    result = clowdr("local", DATA / "sleep.json", directory, provdir)
    assert result.returncode == 1
    assert {n: s["exitcode"] for n, s in result.summaries().items()} == {0: 0, 1: 1, 2: 2}


def test_an_invalid_invocation_fails_fast_instead_of_hanging(clowdr, provdir, tmp_path):
    """Defect 3: an invocation failing validation hung forever."""
    started = time.monotonic()
    result = clowdr("local", DATA / "sleep.json", write_json(tmp_path / "bad.json", {"seconds": "soon"}), provdir,
                    timeout=60)
    assert result.returncode == 2 and time.monotonic() - started < 30
    assert "bad.json" in result.stderr and "seconds" in result.stderr
    assert list(provdir.iterdir()) == []


def test_signals_and_error_codes_are_recorded(clowdr, provdir, tmp_path, invocations):
    directory = invocations({"a.json": {"seconds": 0, "code": 7}})
    result = clowdr("local", DATA / "sleep.json", directory, provdir)
    summary = result.summary(0)
    assert result.returncode == 1 and summary["exitcode"] == 7
    assert summary["exit_description"] == "Seven: the test's own failure."
    killer = write_json(tmp_path / "kill.json", {
        "name": "killer", "tool-version": "1", "schema-version": "0.5", "description": "dies by SIGKILL",
        "command-line": "kill -9 $$ [X]", "inputs": [{"id": "x", "name": "x", "type": "String", "value-key": "[X]", "optional": True}]})
    killed = clowdr("local", killer, write_json(tmp_path / "empty.json", {}), provdir)
    assert killed.returncode == 1
    assert killed.summary(0)["signal"] == "SIGKILL" and killed.summary(0)["failure"] == "signal"


def test_a_lost_worker_is_noticed_and_the_task_runs_again(clowdr, provdir, tmp_path):
    """The tool kills its own Dask worker once: attempt 1 is recorded as worker lost, attempt 2 completes."""
    marker = tmp_path / "killed-once"
    descriptor = write_json(tmp_path / "killer.json", {
        "name": "worker-killer", "tool-version": "1", "schema-version": "0.5",
        "description": "Kills the Dask worker running it, the first time only.",
        # $PPID is the worker's spawner (clowdr.spawner); its parent is the Dask worker process.
        "command-line": f"if [ ! -e {marker} ]; then touch {marker}; sleep 0.3; "
                        "kill -9 $(cut -d' ' -f4 /proc/$PPID/stat); sleep 5; fi; echo survived [X]",
        "inputs": [{"id": "x", "name": "x", "type": "String", "value-key": "[X]", "optional": True}]})
    result = clowdr("local", descriptor, write_json(tmp_path / "empty.json", {}), provdir, timeout=180,
                    env={"DASK_CLOWDR__LOCAL__PROCESSES": "true"})   # a worker process of its own to kill
    assert result.returncode == 0, result.stderr
    summary = result.summary(0)
    assert summary["attempt"] == 2 and summary["status"] == "succeeded"
    ended = summary["previous_attempts_ended"][0]
    assert ended["attempt"] == 1 and ended["failure"] == "worker-lost" and "worker lost" in ended["error"]
    assert (result.meta / "task-0-stdout.txt").read_text() == "survived\n"
    archived = json.loads((result.meta / "attempts" / "task-0" / "attempt-1" / "summary.json").read_text())
    assert archived["status"] == "failed" and archived["failure"] == "worker-lost" and archived["attempt"] == 1


def test_no_credentials_or_environment_in_the_record(clowdr, provdir, tmp_path):
    secret = "AKIAEXAMPLESECRET1234"
    env = {"AWS_SECRET_ACCESS_KEY": secret, "AWS_ACCESS_KEY_ID": secret}
    result = clowdr("local", DATA / "sleep.json", write_json(tmp_path / "i.json", {"seconds": 0}), provdir, env=env)
    assert result.returncode == 0, result.stderr
    for path in result.meta.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path


def test_provenance_files_are_never_left_half_written(clowdr, provdir, invocations):
    directory = invocations({f"i{n}.json": {"seconds": 0} for n in range(20)})
    result = clowdr("local", DATA / "sleep.json", directory, provdir)
    assert result.returncode == 0
    leftovers = [p for p in result.meta.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    for path in result.meta.glob("*.json"):
        json.loads(path.read_text())
    assert os.listdir(result.meta / "..") == ["clowdr", "work"] or set(os.listdir(result.meta / "..")) == {"clowdr", "work"}


def test_peak_rss_is_the_tools_own_never_its_spawners_or_its_workers(clowdr, provdir, tmp_path):
    """A tool's wait4 peak starts from its spawner's own size: above it, it is the tool's; within it, that size
    stands as an upper bound, and the record says so (never the worker's ~80 MiB)."""
    big = clowdr("local", DATA / "alloc.json", write_json(tmp_path / "a.json", {"mib": 200, "seconds": 0}), provdir)
    assert big.returncode == 0, big.stderr
    assert 195 * MIB <= big.summary(0)["peak_rss"] <= 230 * MIB and big.summary(0)["peak_rss_upper_bound"] is False
    short = clowdr("local", DATA / "sleep.json", write_json(tmp_path / "s.json", {"seconds": 0}), provdir)
    summary = short.summary(0)
    assert 1 * MIB < summary["peak_rss"] < 32 * MIB and summary["peak_rss_upper_bound"] is True
    assert summary["cpu_time"] is not None
    from clowdr.share.table import load_tasks
    from clowdr.share.views import task_facts_html

    tasks = load_tasks(provdir)
    rows = {row["run_id"]: row for _, row in tasks.iterrows()}
    assert "<td>at most " in task_facts_html(rows[short.meta.parent.name], None)
    assert "<td>at most " not in task_facts_html(rows[big.meta.parent.name], None)
