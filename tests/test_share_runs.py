"""What the dashboard says about runs and tasks, on real runs and on the original tool's format: the runs table,
statuses of tasks no launch ran or whose client died, per-run wall time, the original's peak memory, what was
requested against what was used, failed tasks first, and what an export of one failed run holds."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, EXAMPLES, ROOT, run_clowdr, write_json

pn = pytest.importorskip("panel")

from test_share_table import original_format_run

from clowdr.share import views
from clowdr.share.app import build_app
from clowdr.share.runs import run_table
from clowdr.share.static import static_view
from clowdr.share.table import load_tables, load_tasks

sys.path.insert(0, str(ROOT / "benchmarks"))
from make_provenance import make_run

ECHO = EXAMPLES / "echo-tool.json"
MIB = 1024 * 1024
FAILS = {"message": "this one fails on purpose", "fail": True}


def shift_run(meta: Path, days: int) -> None:
    """Move a run's recorded times DAYS earlier (run.json launches and task summaries), as if run then."""
    import pandas as pd

    def earlier(value: str | None) -> str | None:
        return (pd.Timestamp(value) - pd.Timedelta(days=days)).isoformat() if value else value

    run = json.loads((meta / "run.json").read_text())
    run["start"], run["end"] = earlier(run["start"]), earlier(run["end"])
    for launch in run["launches"]:
        launch["start"], launch["end"] = earlier(launch["start"]), earlier(launch["end"])
    (meta / "run.json").write_text(json.dumps(run))
    for path in meta.glob("task-*-summary.json"):
        summary = json.loads(path.read_text())
        for key in ("submit_time", "start_time", "end_time"):
            summary[key] = earlier(summary.get(key))
        path.write_text(json.dumps(summary))


def test_the_runs_table_and_per_run_wall_time(clowdr, provdir, tmp_path):
    first = clowdr("local", ECHO, EXAMPLES / "invocations", provdir)
    assert first.returncode == 0, first.stderr
    earlier = provdir / "2020-01-01_00-00-00-EARLIER1"
    shutil.copytree(first.meta.parent, earlier, ignore=shutil.ignore_patterns("work"))
    shift_run(earlier / "clowdr", days=1)                  # the same run, a day before

    tasks, runs = load_tables(provdir)
    table = run_table(runs, tasks)
    assert list(table["run_id"]) == [first.meta.parent.name, earlier.name]        # newest first
    assert set(table["tool"]) == {"echo-tool"} and set(table["version"]) == {"1.0.0"}
    assert set(table["backend"]) == {"local"} and set(table["by_status"]) == {"3 succeeded"}
    assert table["command"][0].startswith("clowdr local ") and str(ECHO) in table["command"][0]
    assert table["launched"][1].startswith((tasks["start_time"].min()).strftime("%Y-%m-%d"))
    for text in table["wall_time"]:
        assert text.endswith(" s") and float(text.split()[0]) < 60          # each run's own seconds
    assert (table["peak_memory_mib"] > 0).all() and (table["cpu_hours"] >= 0).all()

    stats = views.overview(tasks, runs)
    assert 0 < stats["wall_time"] < 120                                      # two runs' seconds, not a day
    html = views.overview_html(stats, "t")
    assert "wall time (sum of 2 runs)" in html and "h " not in html.split("wall time")[1]

    page = build_app(provdir, live=False)
    dash = page.dashboard
    assert len(dash.runs_table.value) == 2 and len(dash.frame) == 6          # every run's tasks at first
    dash.runs_table.selection = [1]                                          # drill into one run
    assert dash.run_id == earlier.name and set(dash.frame["run_id"]) == {earlier.name}
    assert "clowdr share: run " + earlier.name in dash.overview_pane.object
    dash.runs_table.selection = []
    assert dash.run_id is None and len(dash.frame) == 6


def test_setup_and_dev_tasks_are_not_launched(clowdr, provdir):
    setup = clowdr("local", ECHO, EXAMPLES / "invocations", provdir, "--setup")
    assert setup.returncode == 0, setup.stderr
    dev = clowdr("local", ECHO, DATA / "echo-invocations", provdir, "--dev")
    assert dev.returncode == 0, dev.stderr
    frame = load_tasks(provdir)
    statuses = {run: list(rows.sort_values("task")["status"]) for run, rows in frame.groupby("run_id")}
    assert statuses[setup.meta.parent.name] == ["not launched"] * 3          # never "pending" forever
    assert statuses[dev.meta.parent.name] == ["succeeded"] + ["not launched"] * 3
    tasks, runs = load_tables(provdir)
    by_run = dict(zip(run_table(runs, tasks)["run_id"], run_table(runs, tasks)["by_status"]))
    assert by_run[setup.meta.parent.name] == "3 not launched"
    assert by_run[dev.meta.parent.name] == "3 not launched, 1 succeeded"


def test_tasks_of_a_dead_client_are_interrupted(clowdr, provdir):
    result = clowdr("local", ECHO, DATA / "echo-invocations", provdir)
    meta = result.meta
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run = json.loads((meta / "run.json").read_text())
    run["launches"][-1].update(end=None, status=None, client={"host": __import__("socket").gethostname(),
                                                              "pid": gone.pid, "started": 1.0})
    (meta / "run.json").write_text(json.dumps(run))                         # its client died without a word
    (meta / "task-1-summary.json").unlink()                                  # task 1 was running
    for kind in ("summary.json", "stdout.txt", "stderr.txt", "usage.csv"):
        (meta / f"task-2-{kind}").unlink()                                   # task 2 had not started
    frame = load_tasks(provdir)
    assert list(frame["status"]) == ["succeeded", "interrupted", "interrupted", "failed"]
    tasks, runs = load_tables(provdir)
    assert not run_table(runs, tasks)["wall_time"][0].endswith("so far")    # a dead run's time does not grow


def test_the_original_tools_run(tmp_path):
    meta = original_format_run(tmp_path / "oldprov")
    summary = json.loads((meta / "task-1-summary.json").read_text())
    summary["exitcode"] = 3
    (meta / "task-1-summary.json").write_text(json.dumps(summary))
    frame = load_tasks(meta.parent)
    assert frame.loc[0, "peak_rss"] == round(91.5 * MIB) and frame.loc[0, "peak_cpu"] == 50.0   # its usage file
    assert (frame["tool"] == "echo-tool").all() and (frame["tool_version"] == "1.0.0").all()
    assert frame.loc[1, "exit_description"] == "The user asked the tool to fail."               # error-codes

    write_json(meta / "clowdr-summary.json", [                       # what the original ``share`` wrote
        {"Task ID": "0", "Tool Name": "echo-tool", "Exit Code": 0, "RAM: Max (MB)": 123.5, "CPU: Max (%)": 77.0,
         "RAM: Series (MB)": [123.5], "CPU: Series (%)": [77.0]}])
    frame = load_tasks(meta.parent)
    assert frame.loc[0, "peak_rss"] == round(123.5 * MIB) and frame.loc[0, "peak_cpu"] == 77.0
    assert frame.loc[1, "peak_rss"] == round(91.5 * MIB)             # not in that file: its usage file

    tasks, runs = load_tables(meta.parent)
    table = run_table(runs, tasks)
    assert table["tool"][0] == "echo-tool" and table["version"][0] == "1.0.0"
    assert table["peak_memory_mib"][0] == 123.5
    exported = [table.value for table in static_view(meta.parent).select(pn.widgets.Tabulator)
                if "clowdr-runs" in table.css_classes]
    assert list(exported[0]["tool"]) == ["echo-tool"] and list(exported[0]["version"]) == ["1.0.0"]   # the export
    facts = views.task_facts_html(views.failed_first(tasks).iloc[0], runs[0])
    assert "3: The user asked the tool to fail." in facts and "original Clowdr did not keep it" in facts
    assert "77% at most" not in facts and "50% at most" in facts      # task 1: the failed one, first


def test_requested_against_used(clowdr, provdir, tmp_path):
    result = clowdr("local", ECHO, DATA / "echo-invocations" / "zz-fails.json", provdir, "-a", "mem:256")
    assert result.returncode == 1, result.stderr
    run = json.loads((result.meta / "run.json").read_text())
    assert run["launches"][-1]["requested"] == {"cpus": None, "memory": 256 * MIB, "walltime": None}
    tasks, runs = load_tables(provdir)
    assert tasks.loc[0, "requested_memory"] == 256 * MIB
    facts = views.task_facts_html(tasks.iloc[0], runs[0])
    assert "<th>memory</th><td>256.0 MiB</td><td>" in facts and " MiB peak" in facts
    assert "<th>CPU</th><td>1 CPU(s) (suggested by the descriptor)</td>" in facts
    assert "<th>walltime</th><td>1m 00s (suggested by the descriptor)</td>" in facts
    assert "exit 3</pre>" in facts and "3: The user asked the tool to fail." in facts

    batch = tmp_path / "batch"
    batch.mkdir()
    setup = run_clowdr("local", ECHO, EXAMPLES / "invocations", batch, "--cluster", "slurm", "--setup",
                       "-a", "time:2:00,mem:1024")                # nothing submitted: what each job would ask
    assert setup.returncode == 0, setup.stderr
    asked = json.loads((setup.meta / "run.json").read_text())["launches"][-1]["requested"]
    assert asked == {"cpus": 1, "memory": 1024 * MIB, "walltime": 7200}


def test_failed_tasks_come_first(tmp_path):
    meta = make_run(tmp_path / "prov", 60, usage_rows_per_task=3, failed=0.0, running=0.0, pending=0.0,
                    retried=0.0, seed=5)
    summary = json.loads((meta / "task-57-summary.json").read_text())
    summary.update(status="failed", exitcode=2, failure="tool-error", exit_description="The subject's data is "
                   "unreadable.")
    (meta / "task-57-summary.json").write_text(json.dumps(summary))       # the only failure, far down
    dash = build_app(tmp_path / "prov", live=False).dashboard
    shown = dash.table.value
    assert shown["status"][0] == "failed" and int(shown["task"][0]) == 57   # on the first page, first
    assert list(shown["task"][1:4]) == [0, 1, 2]
    assert dash.selected == [0] and "task-57: failed" in dash.task_title.object    # and shown at once
    assert "2: The subject&#x27;s data is unreadable." in dash.facts_pane.object
    assert list(dash.timeline_source.data["status"][:2]) == ["failed", "succeeded"]

    page = static_view(tmp_path / "prov")
    chosen = [pane.object for pane in page.select(pn.pane.HTML) if "clowdr-chosen" in pane.css_classes]
    assert "In this order: " + meta.parent.name + "/task-57: failed, " in chosen[0]   # the export: first too
    detailed = [pane.object for pane in page.select(pn.pane.HTML) if "<h3>" in str(pane.object)]
    assert "task-57: failed" in detailed[0]


def test_an_export_of_one_failed_run(clowdr, provdir, tmp_path):
    first = clowdr("local", ECHO, DATA / "echo-invocations" / "zz-fails.json", provdir)
    again = clowdr("local", ECHO, first.meta, provdir, "--rerun", "failed", "--run_id", first.meta.parent.name)
    assert first.returncode == again.returncode == 1
    page = static_view(provdir)
    figures = {pane.object.title.text: pane.object for pane in page.select(pn.pane.Bokeh)}
    for title in ("CPU (%)", "RAM (MiB)", "I/O (MiB, cumulative: read solid, write dashed)", "Duration (s)"):
        fig = figures[title]
        assert fig.y_range.start == 0 and fig.y_range.end > 0           # never -1 to 1, never unknown
    assert figures["CPU (%)"].y_range.end >= 100
    notes = [pane.object for pane in page.select(pn.pane.HTML) if "clowdr-usage-note" in pane.css_classes]
    assert len(notes) == 1 and "ended before its first usage sample" in notes[0]      # why the plots are empty
    details = [pane.object for pane in page.select(pn.pane.HTML) if "clowdr-task-detail" in pane.css_classes]
    assert len(details) == 1 and "<b>Attempts (2)</b>" in details[0]                 # both attempts
    attempts = details[0].split("clowdr-attempts", 1)[1].split("</table>", 1)[0]
    assert attempts.count("<td>The user asked the tool to fail.</td>") == 2


def test_an_export_of_ten_thousand_tasks_is_at_most_ten_megabytes(tmp_path):
    make_run(tmp_path / "prov", 10_000, usage_rows_per_task=5, seed=2)
    out = tmp_path / "big.html"
    result = run_clowdr("share", tmp_path / "prov", "--export", out)
    assert result.returncode == 0, result.stderr
    size = out.stat().st_size
    print(f"export of 10,000 tasks: {size / 1e6:.2f} MB")
    assert size <= 10 * 1000 * 1000
    text = out.read_text(encoding="utf-8")
    assert "process sub-00000 0.5" in text and "data is unreadable." in text    # commands, exit descriptions
