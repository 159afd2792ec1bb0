"""clowdr local end to end: expansion (directory, sweep, BIDS, groups, dev, setup), execution, provenance."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from conftest import DATA, EXAMPLES, write_json

ECHO = EXAMPLES / "echo-tool.json"


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def test_directory_of_invocations_full_record(clowdr, provdir):
    result = clowdr("local", ECHO, DATA / "echo-invocations", provdir)
    assert result.returncode == 1, result.stderr          # zz-fails.json fails on purpose
    # no progress line when stderr is not a terminal; the end-of-launch report says what failed
    meta = result.meta
    assert result.stderr.splitlines()[0] == f"clowdr: run {meta.parent.name}: 4 task(s): 3 succeeded, 1 failed (tool-error: 1)"
    assert meta.name == "clowdr" and meta.parent.parent == provdir.resolve()
    run = json.loads((meta / "run.json").read_text())
    assert run["cluster"] == "local" and run["tasks"] == 4
    assert {"clowdr", "boutiques", "dask", "distributed", "python"} <= set(run["versions"])
    assert run["command"][1:3] == ["local", str(ECHO)] or "local" in run["command"]
    assert run["start"] and run["end"] and run["launches"][-1]["status"] == "finished"

    # task ids follow sorted file names; copies keep the original names
    for n, name in enumerate(["hello.json", "slow.json", "world.json", "zz-fails.json"]):
        task = json.loads((meta / f"task-{n}.json").read_text())
        assert set(task) >= {"tool", "invocation", "dataloc", "taskloc"}
        assert Path(task["invocation"]).name == name and (meta / name).is_file()
        assert Path(task["tool"]) == meta / "echo-tool.json"

    summaries = result.summaries()
    assert [summaries[n]["status"] for n in range(4)] == ["succeeded"] * 3 + ["failed"]
    failed = summaries[3]
    assert failed["exitcode"] == 3 and failed["failure"] == "tool-error"
    assert failed["exit_description"] == "The user asked the tool to fail."
    world = summaries[2]
    assert [Path(p).name for p in world["outputs"]] == ["planet.txt"]
    assert Path(world["outputs"][0]).read_text() == "world\nworld\n"
    assert (meta / "task-2-stdout.txt").read_text() == "world\nworld\n"
    assert world["command"] == "for i in $(seq 1 2); do echo world; done | tee planet.txt && sleep 0"
    for key in ("status", "attempt", "submit_time", "start_time", "end_time", "realtime", "cpu_time", "peak_rss",
                "peak_vmem", "read_bytes", "write_bytes", "hostname", "worker", "command", "container_image",
                "duration", "exitcode", "launchtime", "outputs", "stdout", "stderr", "usage"):
        assert key in world, key
    assert world["attempt"] == 1
    for stamp in ("submit_time", "start_time", "end_time"):
        assert datetime.fromisoformat(world[stamp]).tzinfo is not None
    datetime.strptime(world["launchtime"], "%Y-%m-%d %H:%M:%S")
    assert ts(world["submit_time"]) <= ts(world["start_time"]) <= ts(world["end_time"])
    assert (meta / "task-2-usage.csv").read_text().splitlines()[0].startswith("time,cpu,ram")


def test_single_invocation_succeeds_with_exit_0(clowdr, provdir):
    result = clowdr("local", ECHO, DATA / "echo-invocations" / "hello.json", provdir)
    assert result.returncode == 0, result.stderr
    assert result.summary(0)["status"] == "succeeded"
    assert result.summary(0)["workdir"] == str(result.meta.parent / "work" / "task-0")


def test_sweep_is_a_cartesian_product(clowdr, provdir):
    result = clowdr("local", ECHO, EXAMPLES / "sweep.json", provdir, "--sweep", "message", "--sweep", "repeat")
    assert result.returncode == 0, result.stderr
    combos = []
    for n in range(6):
        task = json.loads((result.meta / f"task-{n}.json").read_text())
        invocation = json.loads(Path(result.meta / Path(task["invocation"]).name).read_text())
        assert Path(task["invocation"]).name == f"sweep_sweep-{n}.json"
        combos.append((invocation["message"], invocation["repeat"]))
        assert (result.meta / f"task-{n}-stdout.txt").read_text() == (invocation["message"] + "\n") * invocation["repeat"]
    assert combos == [(m, r) for m in ("alpha", "beta", "gamma") for r in (1, 2)]
    assert not (result.meta / "task-6.json").exists()


def _bids_setup(clowdr, provdir, tmp_path, invocation):
    path = write_json(tmp_path / "bids-invocation.json", invocation)
    result = clowdr("local", DATA / "bidsapp.json", path, provdir, "--bids", "--setup")
    assert result.returncode == 0, result.stderr
    tasks = sorted(result.meta.glob("task-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    found = []
    for task_file in tasks:
        task = json.loads(task_file.read_text())
        invocation_copy = json.loads((result.meta / Path(task["invocation"]).name).read_text())
        found.append((Path(task["invocation"]).name, task["dataloc"], invocation_copy.get("participant_label"),
                      invocation_copy.get("session_label")))
    return found


def test_bids_five_cases(clowdr, provdir, tmp_path):
    base = {"bids_dir": "/data/ds001", "output_dir": "/out", "analysis_level": "participant"}
    group = _bids_setup(clowdr, provdir, tmp_path, dict(base, analysis_level="group", participant_label=["01", "02"]))
    assert group == [("bids-invocation.json", ["/data/ds001"], ["01", "02"], None)]
    assert _bids_setup(clowdr, provdir, tmp_path, base) == [("bids-invocation.json", ["/data/ds001"], None, None)]
    participants = _bids_setup(clowdr, provdir, tmp_path, dict(base, participant_label=["01", "02"]))
    assert participants == [("invocation_sub-01.json", ["/data/ds001/sub-01"], ["01"], None),
                            ("invocation_sub-02.json", ["/data/ds001/sub-02"], ["02"], None)]
    pairs = _bids_setup(clowdr, provdir, tmp_path, dict(base, participant_label=["01", "02"], session_label=["a", "b"]))
    assert [p[:2] for p in pairs] == [
        ("invocation_sub-01_ses-a.json", ["/data/ds001/sub-01/ses-a"]),
        ("invocation_sub-01_ses-b.json", ["/data/ds001/sub-01/ses-b"]),
        ("invocation_sub-02_ses-a.json", ["/data/ds001/sub-02/ses-a"]),
        ("invocation_sub-02_ses-b.json", ["/data/ds001/sub-02/ses-b"]),
    ]
    assert all(len(p[2]) == 1 and len(p[3]) == 1 for p in pairs)
    sessions = _bids_setup(clowdr, provdir, tmp_path, dict(base, session_label=["a", "b"]))
    assert sessions == [("invocation_ses-a.json", ["/data/ds001"], None, ["a"]),
                        ("invocation_ses-b.json", ["/data/ds001"], None, ["b"])]


def test_bids_run_passes_one_participant_per_task(clowdr, provdir, tmp_path):
    invocation = write_json(tmp_path / "inv.json", {"bids_dir": "/data/ds", "output_dir": "/out",
                                                    "analysis_level": "participant", "participant_label": ["01", "02"]})
    result = clowdr("local", DATA / "bidsapp.json", invocation, provdir, "-b")
    assert result.returncode == 0, result.stderr
    assert (result.meta / "task-0-stdout.txt").read_text() == "/data/ds /out participant --participant_label 01\n"
    assert (result.meta / "task-1-stdout.txt").read_text() == "/data/ds /out participant --participant_label 02\n"


def test_groupby_runs_a_group_in_sequence_on_one_worker(clowdr, provdir, invocations):
    directory = invocations({f"i{n}.json": {"seconds": 0.3} for n in range(5)})
    result = clowdr("local", DATA / "sleep.json", directory, provdir, "-g", "2")
    assert result.returncode == 0, result.stderr
    summaries = result.summaries()
    assert len(summaries) == 5
    run = json.loads((result.meta / "run.json").read_text())
    assert run["launches"][-1]["groups"] == 3
    for first, second in ((0, 1), (2, 3)):
        a, b = summaries[first], summaries[second]
        assert a["worker"] == b["worker"]
        assert ts(b["start_time"]) >= ts(a["end_time"])
        assert a["submit_time"] == b["submit_time"]


def test_dev_runs_only_the_first_group(clowdr, provdir, invocations):
    directory = invocations({f"i{n}.json": {"seconds": 0} for n in range(5)})
    result = clowdr("local", DATA / "sleep.json", directory, provdir, "--dev", "--groupby", "2")
    assert result.returncode == 0, result.stderr
    assert sorted(result.summaries()) == [0, 1]
    assert (result.meta / "task-4.json").exists()         # every task is recorded, as the original did
    rest = clowdr("local", DATA / "sleep.json", directory, provdir, "-R", "incomplete", "--run_id",
                  result.meta.parent.name)
    assert sorted(rest.summaries()) == [0, 1, 2, 3, 4] and rest.summary(4)["attempt"] == 1
    single = clowdr("local", DATA / "sleep.json", directory, provdir, "-d")
    assert sorted(single.summaries()) == [0]


def test_setup_writes_metadata_and_launches_nothing(clowdr, provdir):
    result = clowdr("local", ECHO, DATA / "echo-invocations", provdir, "--setup")
    assert result.returncode == 0, result.stderr
    meta = result.meta
    assert sorted(p.name for p in meta.glob("task-*.json")) == [f"task-{n}.json" for n in range(4)]
    assert not list(meta.glob("task-*-summary.json"))
    assert not (meta.parent / "work").exists()
    run = json.loads((meta / "run.json").read_text())
    assert run["launches"][-1]["setup_only"] is True


def test_workdir_is_shared_by_every_task(clowdr, provdir, tmp_path, invocations):
    directory = invocations({"a.json": {"message": "one", "outname": "a"}, "b.json": {"message": "two", "outname": "b"}})
    workdir = tmp_path / "shared work"
    result = clowdr("local", ECHO, directory, provdir, "--workdir", workdir)
    assert result.returncode == 0, result.stderr
    assert (workdir / "a.txt").read_text() == "one\n" and (workdir / "b.txt").read_text() == "two\n"
    assert {s["workdir"] for s in result.summaries().values()} == {str(workdir)}


def test_tasks_run_in_parallel_on_the_local_cluster(clowdr, provdir, invocations):
    # long enough that a busy machine's start-up latency cannot keep the two from overlapping
    directory = invocations({f"i{n}.json": {"seconds": 2.5} for n in range(2)})
    result = clowdr("local", DATA / "sleep.json", directory, provdir)
    assert result.returncode == 0, result.stderr
    a, b = result.summaries()[0], result.summaries()[1]
    assert a["worker"] != b["worker"]
    assert ts(a["start_time"]) < ts(b["end_time"]) and ts(b["start_time"]) < ts(a["end_time"])   # overlapping runs


def test_python_api_returns_the_run_directory(tmp_path, provdir):
    script = tmp_path / "api.py"
    script.write_text(
        "from clowdr import driver\n"
        "if __name__ == '__main__':\n"
        f"    print(driver.local({str(ECHO)!r}, {str(EXAMPLES / 'invocations' / 'hello.json')!r}, {str(provdir)!r}))\n"
    )
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    meta = Path(done.stdout.strip())
    assert json.loads((meta / "task-0-summary.json").read_text())["status"] == "succeeded"
