"""A first run that explains itself: the end-of-launch report (terminal or not), ``clowdr task`` saying what it
ran and recording its launch, ``--version``, the ``--sweep`` hint, and a cancelled handle's outcome."""
from __future__ import annotations

import json
import shlex

from conftest import DATA, EXAMPLES, write_json
from test_progress import _run_on_a_terminal

import clowdr
from clowdr.report import SHOWN, LaunchReport

ECHO = EXAMPLES / "echo-tool.json"


def _rerun_line(stderr: str) -> list[str]:
    marker = "to run the failed tasks again: "
    line = next(line for line in stderr.splitlines() if marker in line)
    return shlex.split(line.split(marker, 1)[1])


def test_a_failed_run_off_a_terminal_says_what_failed_why_and_how_to_rerun(clowdr, provdir):
    result = clowdr("local", ECHO, DATA / "echo-invocations", provdir)       # task 3 fails on purpose
    assert result.returncode == 1
    run_id = result.meta.parent.name
    err = result.stderr
    assert f"run {run_id}: 4 task(s): 3 succeeded, 1 failed (tool-error: 1)" in err, err
    log = result.meta / "task-3-stderr.txt"
    assert f"task 3 failed (tool-error): exit code 3 (The user asked the tool to fail.); log: {log}" in err, err
    command = _rerun_line(err)
    assert command[:2] == ["clowdr", "local"] and command[-4:] == ["--rerun", "failed", "--run_id", run_id]
    again = clowdr(*command[1:])                   # the command as printed runs the failed task again
    assert again.returncode == 1 and again.meta == result.meta and again.summary(3)["attempt"] == 2
    assert "1 task(s): 0 succeeded, 1 failed" in again.stderr


def test_a_successful_run_says_so_in_one_line(clowdr, provdir):
    result = clowdr("local", ECHO, EXAMPLES / "invocations", provdir)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [f"clowdr: run {result.meta.parent.name}: 3 task(s): 3 succeeded, 0 failed"]


def test_the_report_also_ends_a_run_on_a_terminal(provdir):
    status, output = _run_on_a_terminal(["local", str(ECHO), str(EXAMPLES / "fails.json"), str(provdir)])
    assert status == 1, output
    assert "1/1 finished (0 ok, 1 failed)" in output                       # the progress line, then the report
    assert "1 task(s): 0 succeeded, 1 failed (tool-error: 1)" in output
    assert "exit code 3 (The user asked the tool to fail.)" in output and "--rerun failed --run_id" in output


def test_many_failures_name_the_first_few_and_count_the_rest():
    failed = [{"task": n, "failure": "tool-error" if n % 2 else "out-of-memory", "exitcode": 1 if n % 2 else None,
               "error": None if n % 2 else "killed for its memory", "stderr": f"/r/task-{n}-stderr.txt"}
              for n in range(SHOWN + 3)]
    classes = {"out-of-memory": 4, "tool-error": 4}
    lines = LaunchReport("RID", 2, len(failed), classes, failed[:SHOWN],
                         ["clowdr", "local", "d.json", "my invocations", "p"]).lines()
    assert lines[0] == f"clowdr: run RID: {len(failed) + 2} task(s): 2 succeeded, {len(failed)} failed " \
                       "(out-of-memory: 4, tool-error: 4)"
    assert lines[1] == "  task 0 failed (out-of-memory): killed for its memory; log: /r/task-0-stderr.txt"
    assert lines[2] == "  task 1 failed (tool-error): exit code 1; log: /r/task-1-stderr.txt"
    assert len([line for line in lines if line.startswith("  task ")]) == SHOWN
    assert "  ... and 3 more failed task(s)" in "\n".join(lines)
    assert lines[-1].endswith("clowdr local d.json 'my invocations' p")


def test_clowdr_task_says_what_it_ran_and_is_recorded_as_a_launch(clowdr, provdir):
    setup = clowdr("local", ECHO, DATA / "echo-invocations", provdir, "--setup")
    meta = setup.meta
    result = clowdr("task", meta / "task-2.json", meta / "task-3.json")
    assert result.returncode == 1
    run_id = meta.parent.name
    assert f"clowdr task: task 2 of run {run_id} (attempt 1)" in result.stderr, result.stderr
    assert "task 2 of run" in result.stderr and "succeeded, exit code 0" in result.stderr
    assert "command: for i in $(seq 1 2); do echo world" in result.stderr
    assert f"run {run_id}: 2 task(s): 1 succeeded, 1 failed (tool-error: 1)" in result.stderr
    assert _rerun_line(result.stderr) == ["clowdr", "task", str(meta / "task-3.json")]
    assert result.meta == meta
    launch = json.loads((meta / "run.json").read_text())["launches"][-1]
    assert launch["mode"] == "task" and launch["tasks"] == [2, 3] and launch["status"] == "finished"
    assert (launch["succeeded"], launch["failed"]) == (1, 1) and launch["command"][-2].endswith("task-2.json")
    assert json.loads((meta / "run.json").read_text())["tasks"] == 4      # the run still has its four tasks


def test_clowdr_task_records_a_launch_in_an_original_tool_run(clowdr, tmp_path):
    meta = tmp_path / "old" / "2019-03-04_10-11-12-ABCD1234" / "clowdr"
    meta.mkdir(parents=True)
    (meta / "echo-tool.json").write_text(ECHO.read_text())
    write_json(meta / "invocation-0.json", {"message": "first"})
    write_json(meta / "task-0.json", {"tool": "/elsewhere/echo-tool.json", "invocation": "/elsewhere/invocation-0.json",
                                      "dataloc": ["localhost"], "taskloc": "/elsewhere/work"})
    result = clowdr("task", meta / "task-0.json")
    assert result.returncode == 0, result.stderr
    run = json.loads((meta / "run.json").read_text())
    assert run["tool"] == "echo-tool" and [launch["mode"] for launch in run["launches"]] == ["task"]
    assert "1 task(s): 1 succeeded, 0 failed" in result.stderr


def test_version_names_clowdr_and_its_engine(clowdr):
    from importlib.metadata import version

    result = clowdr("--version")
    assert result.returncode == 0
    line = result.stdout.strip()
    assert line.startswith(f"clowdr {clowdr_version()}")
    assert f"dask {version('dask')}" in line and f"distributed {version('distributed')}" in line


def clowdr_version() -> str:
    return clowdr.__version__


def test_a_list_for_a_scalar_input_hints_at_sweep(clowdr, provdir):
    result = clowdr("local", ECHO, EXAMPLES / "sweep.json", provdir)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "sweep.json: field 'repeat'" in result.stderr and "add --sweep message --sweep repeat" in result.stderr
    assert list(provdir.iterdir()) == []
    swept = clowdr("local", ECHO, EXAMPLES / "sweep.json", provdir, "--sweep", "message")   # one left out
    assert swept.returncode == 2 and "add --sweep repeat)" in swept.stderr and "--sweep message" not in swept.stderr
