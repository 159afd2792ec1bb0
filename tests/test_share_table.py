"""The dashboard's data layer on real runs, on the original tool's format, on partial (live) runs, and on bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from conftest import DATA, EXAMPLES, ROOT, run_clowdr, write_json

pd = pytest.importorskip("pandas")

from clowdr.errors import InputError
from clowdr.provenance import this_client
from clowdr.share.table import find_runs, load_attempts, load_tasks, load_usage, read_log_tail

sys.path.insert(0, str(ROOT / "benchmarks"))
from make_provenance import make_run

ECHO = EXAMPLES / "echo-tool.json"
FAILING = {"message": "this one fails", "fail": True}


@pytest.fixture(scope="module")
def echo_run(tmp_path_factory) -> Path:
    """A real run of the echo tool over examples/invocations plus one failing invocation (read, never changed)."""
    base = tmp_path_factory.mktemp("echo")
    invocations = base / "invocations"
    shutil.copytree(EXAMPLES / "invocations", invocations)
    write_json(invocations / "zz-fails.json", FAILING)
    provdir = base / "prov"
    provdir.mkdir()
    result = run_clowdr("local", ECHO, invocations, provdir)
    assert result.returncode == 1, result.stderr          # one task fails on purpose
    return result.meta


def copy_run(meta: Path, tmp_path: Path) -> Path:
    """A copy of a run to damage: ``<tmp>/prov/<run id>/clowdr``."""
    target = tmp_path / "prov" / meta.parent.name / "clowdr"
    shutil.copytree(meta, target)
    return target


def test_load_tasks_on_a_real_run(echo_run):
    frame = load_tasks(echo_run.parent.parent)
    assert list(frame["task"]) == [0, 1, 2, 3]
    assert (frame["run_id"] == echo_run.parent.name).all()
    assert list(frame["param.message"]) == ["hello", "taking my time", "world", "this one fails"]
    assert list(frame["status"]) == ["succeeded", "succeeded", "succeeded", "failed"]
    assert list(frame["exitcode"]) == [0, 0, 0, 3]
    assert frame.loc[3, "failure"] == "tool-error"
    assert frame.loc[3, "exit_description"] == "The user asked the tool to fail."
    assert bool(frame.loc[3, "param.fail"]) is True and pd.isna(frame.loc[0, "param.fail"])
    assert frame.loc[0, "param.repeat"] == 3 and frame.loc[1, "param.seconds"] == 2
    assert (frame["tool"] == "echo-tool").all() and (frame["format"] == "clowdr").all()
    assert list(frame["attempt"]) == [1, 1, 1, 1] and list(frame["attempts"]) == [1, 1, 1, 1]
    for column in ("submit_time", "start_time", "end_time"):
        for value in frame[column]:
            assert isinstance(value, pd.Timestamp) and value.tzinfo is not None
    assert (frame["end_time"] >= frame["start_time"]).all()
    assert (frame["queue_wait"] >= 0).all()
    assert frame.loc[1, "duration"] >= 2.0                # the "taking my time" task sleeps 2 s
    assert (frame["peak_rss"] > 0).all() and frame["hostname"].notna().all()
    assert frame.loc[0, "command"].startswith("for i in $(seq 1 3); do echo hello")
    assert Path(frame.loc[0, "meta"]) == echo_run


def original_format_run(provdir: Path) -> Path:
    """A Clowdr 0.1.2 run as legacy-clowdr.md documents it, every recorded path from another machine."""
    run_id = "2019-03-04_10-11-12-ABCD1234"
    meta = provdir / run_id / "clowdr"
    meta.mkdir(parents=True)
    old = f"/home/someone/prov/{run_id}/clowdr"
    shutil.copy(ECHO, meta / "echo-tool.json")
    for n, message in enumerate(["first", "second", "third", "fourth"]):
        write_json(meta / f"inv-{n}.json", {"message": message, "repeat": n + 1})
        write_json(meta / f"task-{n}.json", {"tool": f"{old}/echo-tool.json", "invocation": f"{old}/inv-{n}.json",
                                             "dataloc": ["localhost"], "taskloc": f"/home/someone/work/{n}"})
    for n, code in ((0, 0), (1, 1)):
        write_json(meta / f"task-{n}-summary.json", {
            "duration": 4.0, "exitcode": code, "launchtime": "2019-03-04 10:11:13", "outputs": [],
            "stdout": f"{old}/task-{n}-stdout.txt", "stderr": f"{old}/task-{n}-stderr.txt",
            "usage": f"{old}/task-{n}-usage.csv"})
        (meta / f"task-{n}-usage.csv").write_text("time,cpu,ram\n0,0.0,90.1\n1,50.0,91.5\n")
        (meta / f"task-{n}-stdout.txt").write_text(f"old output {n}\n")
        (meta / f"task-{n}-stderr.txt").write_text("")
    (meta / "task-2-stdout.txt").write_text("still going\n")      # task 2 was running; task 3 never started
    return meta


def test_load_tasks_on_an_original_tool_run(tmp_path):
    meta = original_format_run(tmp_path / "oldprov")
    frame = load_tasks(meta.parent)
    assert list(frame["status"]) == ["succeeded", "failed", "running", "pending"]
    assert frame["exitcode"].isna().tolist() == [False, False, True, True]
    assert frame.loc[0, "exitcode"] == 0 and frame.loc[1, "exitcode"] == 1
    assert list(frame["param.message"]) == ["first", "second", "third", "fourth"]     # found by basename
    assert list(frame["param.repeat"]) == [1, 2, 3, 4]
    assert (frame["tool"] == "echo-tool").all() and (frame["format"] == "original").all()
    launched = pd.Timestamp(datetime.strptime("2019-03-04 10:11:13", "%Y-%m-%d %H:%M:%S").timestamp(),
                            unit="s", tz="UTC")
    assert frame.loc[0, "start_time"] == launched and frame.loc[1, "start_time"] == launched
    assert frame.loc[0, "duration"] == 4.0
    assert frame.loc[0, "end_time"] == launched + pd.Timedelta(seconds=4)
    assert pd.isna(frame.loc[2, "start_time"]) and pd.isna(frame.loc[2, "duration"])
    assert pd.isna(frame.loc[0, "submit_time"]) and pd.isna(frame.loc[0, "queue_wait"])
    assert list(frame["attempt"]) == [1, 1, 1, 1] and list(frame["attempts"]) == [1, 1, 1, 0]

    usage = load_usage(meta, 1)
    assert list(usage.columns) == ["time", "cpu", "ram"] and list(usage["ram"]) == [90.1, 91.5]
    attempts = load_attempts(meta, 1)
    assert [(a["attempt"], a["status"], a["exitcode"]) for a in attempts] == [(1, "failed", 1)]
    assert load_attempts(meta, 2) == [{"attempt": 1, "status": "running"}]
    assert load_attempts(meta, 3) == []
    assert read_log_tail(meta, 0, "stdout") == ("old output 0\n", False)


def test_every_form_of_location(echo_run, tmp_path):
    provdir = tmp_path / "prov"
    real = copy_run(echo_run, tmp_path)
    synthetic = make_run(provdir, 12, usage_rows_per_task=3, seed=1)
    original = original_format_run(provdir)
    expected = sorted([real, synthetic, original], key=lambda meta: meta.parent.name)
    assert find_runs(provdir) == expected
    (provdir / "notes.txt").write_text("not a run")          # other files in a provenance directory are ignored
    assert find_runs(str(provdir)) == expected

    frame = load_tasks(provdir)
    assert len(frame) == 4 + 12 + 4
    assert list(frame["run_id"]) == sorted(frame["run_id"])          # (run_id, task) order
    for _, rows in frame.groupby("run_id"):
        assert list(rows["task"]) == sorted(rows["task"])

    for form in (real.parent, real, real / "clowdr-summary.json"):
        if form.name == "clowdr-summary.json":
            form.write_text("[]\n")                                   # what the original ``share`` wrote
        assert find_runs(form) == [real]
        assert list(load_tasks(form)["param.message"]) == ["hello", "taking my time", "world", "this one fails"]


def test_bad_locations(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError, match="nowhere"):
        find_runs(missing)
    stray = tmp_path / "stray.json"
    stray.write_text("{}")
    with pytest.raises(InputError, match="stray.json"):
        load_tasks(stray)
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "photo.jpg").write_text("x")
    with pytest.raises(InputError, match="unrelated"):
        find_runs(unrelated)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert find_runs(empty) == []                      # a provenance directory with no runs yet
    frame = load_tasks(empty)
    assert len(frame) == 0 and {"run_id", "task", "status", "start_time"} <= set(frame.columns)


def test_a_partial_run_never_raises(echo_run, tmp_path):
    meta = copy_run(echo_run, tmp_path)
    run = json.loads((meta / "run.json").read_text())
    run["launches"][-1]["end"] = None                                          # the launch is still going,
    run["launches"][-1]["client"] = this_client()                              # its client (this process) alive
    run["launches"][-1]["tasks"] += [4, 5]                                     # two more tasks it launched
    (meta / "run.json").write_text(json.dumps(run))
    (meta / "task-1-summary.json").unlink()                                    # running: its logs exist
    for kind in ("summary.json", "stdout.txt", "stderr.txt", "usage.csv"):     # pending: nothing yet
        (meta / f"task-2-{kind}").unlink()
    summary = (meta / "task-0-summary.json").read_bytes()
    (meta / "task-0-summary.json").write_bytes(summary[: len(summary) // 2])   # half-written: as if absent
    definition = (meta / "task-3.json").read_bytes()
    (meta / "task-3.json").write_bytes(definition[:10])                       # its parameters are unknown
    (meta / ".task-3-summary.json.123.456.tmp").write_text("{")                # a write in progress
    usage = meta / "task-1-usage.csv"
    usage.write_text(usage.read_text() + "2.1,5.0,3.6")                        # a line being appended
    (meta / "task-4.json").write_text(json.dumps({"invocation": "/elsewhere/missing.json"}))
    (meta / "task-4-usage.csv").write_text("time,cpu,ram,vmem,read_bytes,write_bytes,procs\n0.1,1,2,3,4,5,1\n")
    (meta / "task-5.json").write_text(json.dumps({"invocation": 42, "tool": ["not", "a", "path"]}))
    (meta / "task-5-usage.csv").write_text("time,cpu,ram,vmem,read_bytes,write_bytes,procs\n")

    frame = load_tasks(meta)
    assert list(frame["task"]) == [0, 1, 2, 3, 4, 5]
    assert list(frame["status"]) == ["running", "running", "pending", "failed", "running", "pending"]
    assert pd.isna(frame.loc[1, "start_time"]) and pd.isna(frame.loc[1, "exitcode"])
    assert list(frame["attempts"]) == [1, 1, 0, 1, 1, 0]
    assert pd.isna(frame.loc[3, "param.message"]) and frame.loc[3, "exitcode"] == 3
    assert frame.loc[1, "param.message"] == "taking my time"
    assert (frame["tool"] == "echo-tool").all()                                # from run.json when unknown

    series = load_usage(meta, 1)
    assert len(series) == 4 and series["time"].iloc[-1] < 2.0                   # the partial line is skipped
    assert load_usage(meta, 2).empty and list(load_usage(meta, 2).columns) == ["time", "cpu", "ram"]
    (meta / "task-6-usage.csv").write_text("time,cpu,ram\n0.1,1,2\nnot,a,number\n0.3,x\n0.5,3,4,5,6\n0.7,1")
    assert list(load_usage(meta, 6)["time"]) == [0.1]
    assert load_attempts(meta, 0) == [{"attempt": 1, "status": "running"}]
    assert load_attempts(meta, 2) == []


def test_load_usage_resampling_keeps_the_peaks(tmp_path):
    meta = tmp_path / "clowdr"
    meta.mkdir()
    lines = ["time,cpu,ram,vmem,read_bytes,write_bytes,procs"]
    for k in range(1000):
        ram = 5000.0 if k == 613 else 100.0 + k / 10
        cpu = 400.0 if k == 77 else 50.0
        lines.append(f"{k * 0.5 + 0.25},{cpu},{ram},{ram * 2},{k * 10},{k},{1 + k % 3}")
    (meta / "task-7-usage.csv").write_text("\n".join(lines) + "\n")
    full = load_usage(meta, 7)
    assert len(full) == 1000 and list(full.columns) == ["time", "cpu", "ram", "vmem", "read_bytes",
                                                        "write_bytes", "procs"]
    small = load_usage(meta, 7, max_points=50)
    assert 3 <= len(small) <= 50
    assert small["time"].iloc[0] == 0.25 and small["time"].iloc[-1] == 999 * 0.5 + 0.25
    assert small["time"].is_monotonic_increasing
    for column in ("ram", "cpu", "vmem", "read_bytes", "procs"):
        assert small[column].max() == full[column].max()
    assert len(load_usage(meta, 7, max_points=5000)) == 1000
    with pytest.raises(ValueError):
        load_usage(meta, 7, max_points=2)


def test_load_attempts_after_a_real_rerun(clowdr, provdir):
    first = clowdr("local", ECHO, DATA / "echo-invocations", provdir)
    assert first.returncode == 1
    meta = first.meta
    again = clowdr("local", ECHO, DATA / "echo-invocations", provdir, "--rerun", "failed", "--run_id",
                   meta.parent.name)
    assert again.returncode == 1 and again.meta == meta
    attempts = load_attempts(meta, 3)
    assert [(a["attempt"], a["status"], a["exitcode"]) for a in attempts] == [(1, "failed", 3), (2, "failed", 3)]
    assert pd.Timestamp(attempts[0]["start_time"]) < pd.Timestamp(attempts[1]["start_time"])
    assert [a["attempt"] for a in load_attempts(meta, 0)] == [1]
    frame = load_tasks(provdir)
    assert list(frame["attempt"]) == [1, 1, 1, 2] and list(frame["attempts"]) == [1, 1, 1, 2]
    assert read_log_tail(meta, 3, "stdout", attempt=1) == ("this one fails on purpose\n", False)
    assert load_usage(meta, 3, attempt=1).columns[0] == "time"


def test_read_log_tail(tmp_path):
    meta = tmp_path / "clowdr"
    meta.mkdir()
    body = b"".join(b"line %06d\n" % k for k in range(20000)) + b"last \xff\xfe bytes\n"
    (meta / "task-2-stderr.txt").write_bytes(body)
    text, truncated = read_log_tail(meta, 2, "stderr", max_bytes=1000)
    assert truncated and text.endswith("last \ufffd\ufffd bytes\n")
    assert len(text.encode("utf-8", errors="replace")) >= 1000 - 10 and "line 019999" in text
    whole, cut = read_log_tail(meta, 2, "stderr", max_bytes=len(body))
    assert not cut and whole.startswith("line 000000\n")
    assert read_log_tail(meta, 2, "stderr")[1] is True              # 64 KiB by default
    assert read_log_tail(meta, 9, "stdout") == ("", False)          # no log yet
    (tmp_path / "secret.txt").write_text("secret")
    for stream in ("../secret", "usage", "summary", "stdout.txt", "", "STDOUT"):
        with pytest.raises(InputError):
            read_log_tail(meta, 2, stream)
    for task in ("2", -1, True, 2.0, "../../secret"):
        with pytest.raises(InputError):
            read_log_tail(meta, task, "stderr")                     # type: ignore[arg-type]


def test_synthetic_runs_in_both_formats(tmp_path):
    ours = make_run(tmp_path / "a", 200, usage_rows_per_task=10, failed=0.1, running=0.05, pending=0.05,
                    retried=0.05, seed=3)
    frame = load_tasks(ours)
    counts = frame["status"].value_counts()
    assert counts["running"] == 10 and counts["pending"] == 10 and counts["failed"] > 0
    assert (frame["attempts"] == 2).sum() > 0 and frame["param.subject"].notna().all()
    assert frame.loc[frame["status"] == "succeeded", "start_time"].notna().all()
    retried = int(frame.loc[frame["attempts"] == 2, "task"].iloc[0])
    assert [a["attempt"] for a in load_attempts(ours, retried)] == [1, 2]
    old = make_run(tmp_path / "b", 50, usage_rows_per_task=10, fmt="original", seed=3)
    frame = load_tasks(old)
    assert (frame["format"] == "original").all() and not (old / "run.json").exists()
    assert frame.loc[frame["status"] == "succeeded", "start_time"].notna().all()
    assert list(load_usage(old, 0).columns) == ["time", "cpu", "ram"]


def test_the_commands_do_not_import_the_dashboard_layer():
    code = ("import sys, clowdr.cli, clowdr.engine, clowdr.driver; "
            "print(sorted(m for m in sys.modules if m.startswith('clowdr.share') or m == 'pandas'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"


def test_a_task_left_without_summary_by_an_ended_launch_is_interrupted(clowdr, provdir):
    result = clowdr("local", EXAMPLES / "echo-tool.json", EXAMPLES / "invocations", provdir)
    assert result.returncode == 0, result.stderr
    (result.meta / "task-1-summary.json").unlink()          # as if the client died while task 1 ran
    statuses = dict(zip(load_tasks(provdir)["task"], load_tasks(provdir)["status"]))
    assert statuses[1] == "interrupted" and statuses[0] == "succeeded"
    assert load_attempts(result.meta, 1, ended=True) == [{"attempt": 1, "status": "interrupted"}]
