"""Whatever dies, no tool outlives its attempt, and the record says what happened.

Every test here starts the real CLI, kills something for real (the client, a Dask worker), and then looks at
the process table: each process the launch had started (workers, their guards, the tools) must be gone
within seconds, and no process may still carry the test's marker.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from conftest import DATA, ROOT, write_json

MIB = 1 << 20

SETTLE = 15.0        # seconds the launch's processes get to go after the kill


def long_tool(tmp_path: Path, marker: str) -> Path:
    """A tool that records its pid, checks whether an earlier attempt's tool still runs, and sleeps the first
    time(s). MARKER is on its command line, so a surviving copy can be found in the process table."""
    return write_json(tmp_path / "long.json", {
        "name": "long", "tool-version": "1", "schema-version": "0.5", "description": "sleeps unless told not to",
        # an earlier attempt's shell still running (a zombie, dead but not yet reaped, runs nothing)
        "command-line": f"p=$(cat {tmp_path}/pid 2>/dev/null); if [ -n \"$p\" ] && [ -e /proc/$p ] && "
                        f"! grep -q '^State:.*[ZX]' /proc/$p/status; then echo overlap; else echo alone; fi; "
                        f"echo $$ > {tmp_path}/pid.new && mv {tmp_path}/pid.new {tmp_path}/pid; "
                        f"if [ -e {tmp_path}/quick ]; then exit 0; fi; sleep 60 # {marker} [X]",
        "inputs": [{"id": "x", "name": "x", "type": "String", "value-key": "[X]", "optional": True}]})


@pytest.fixture(autouse=True)
def no_launch_left() -> Iterator[None]:
    """A failing test still leaves nothing running: every launch it started is killed, with its processes."""
    yield
    for process in LAUNCHED:
        if process.poll() is None:
            tree = everything_under(process.pid)
            process.kill()
            process.communicate()
            for pid in tree:
                with contextlib.suppress(psutil.Error):
                    psutil.Process(pid).kill()
    LAUNCHED.clear()


LAUNCHED: list[subprocess.Popen[str]] = []


def launch(tmp_path: Path, provdir: Path, marker: str, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.Popen[str]:
    LAUNCHED.append(subprocess.Popen(
        [sys.executable, "-m", "clowdr", "local", str(long_tool(tmp_path, marker)),
         str(write_json(tmp_path / "i.json", {})), str(provdir), *args],
        cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True))
    return LAUNCHED[-1]


def tool_pid(tmp_path: Path, after: int | None = None, timeout: float = 60) -> int:
    """The pid the (next) tool wrote, once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = (tmp_path / "pid").read_text().strip() if (tmp_path / "pid").exists() else ""
        if text and int(text) != after:
            return int(text)
        time.sleep(0.05)
    raise AssertionError("the tool never started")


def survivors(pids: list[int], marker: str | None = None) -> list[str]:
    """Processes of ``pids`` still alive, and any process whose command line carries ``marker``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        line = " ".join(proc.info["cmdline"] or [])
        if proc.info["pid"] in pids or (marker and marker in line):
            found.append(f"{proc.info['pid']}: {line[:120]}")
    return found


def gone(pids: list[int], marker: str | None = None) -> list[str]:
    deadline = time.monotonic() + SETTLE
    while (left := survivors(pids, marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def everything_under(pid: int) -> list[int]:
    return [child.pid for child in psutil.Process(pid).children(recursive=True)]


def run_of(provdir: Path) -> Path:
    return next(provdir.iterdir()) / "clowdr"


@pytest.mark.parametrize("name, status", [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", 130)])
def test_a_stopping_signal_stops_every_tool_and_says_how_to_go_on(tmp_path, provdir, name, status):
    marker = f"clowdr-test-{uuid.uuid4().hex}"
    process = launch(tmp_path, provdir, marker)
    first = tool_pid(tmp_path)
    started = everything_under(process.pid)
    if name == "SIGTERM":
        process.send_signal(signal.SIGTERM)                  # as a batch system or `kill` sends it
    else:
        os.killpg(process.pid, getattr(signal, name))       # as a terminal sends it: to its whole process group
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    meta = run_of(provdir)
    run_id = meta.parent.name
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert f"interrupted by {name}" in lines[0] and f"--rerun incomplete --run_id {run_id}" in lines[0]
    assert stdout.strip() == str(meta)
    assert gone([first, *started], marker) == []
    launched = json.loads((meta / "run.json").read_text())["launches"][-1]
    assert launched["status"] == "interrupted" and launched["end"]
    # the attempt it cut short keeps its summary in the history; the task itself is left for --rerun incomplete
    assert not (meta / "task-0-summary.json").exists()
    archived = json.loads((meta / "attempts" / "task-0" / "attempt-1" / "summary.json").read_text())
    assert archived["failure"] == "cancelled" and name in archived["error"]
    assert archived["start_time"] and archived["hostname"] and archived["worker"]
    (tmp_path / "quick").touch()
    again = subprocess.run([sys.executable, "-m", "clowdr", "local", str(tmp_path / "long.json"),
                            str(tmp_path / "i.json"), str(provdir), "--rerun", "incomplete", "--run_id", run_id],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    summary = json.loads((meta / "task-0-summary.json").read_text())
    assert summary["attempt"] == 2 and (meta / "task-0-stdout.txt").read_text() == "alone\n"


def test_a_client_killed_outright_leaves_no_tool_and_a_run_share_calls_interrupted(tmp_path, provdir):
    marker = f"clowdr-test-{uuid.uuid4().hex}"
    process = launch(tmp_path, provdir, marker)
    first = tool_pid(tmp_path)
    started = everything_under(process.pid)
    process.kill()
    process.communicate(timeout=30)
    assert gone([first, *started], marker) == []
    from clowdr.share.table import load_tasks

    tasks = load_tasks(provdir)
    assert list(tasks["status"]) == ["interrupted"]                 # not "running" forever


def test_workers_killed_mid_task_leave_no_tool_and_each_retry_runs_alone(tmp_path, provdir):
    """Three worker kills used to leave three copies of the tool running beside the fourth attempt (workers as
    processes of their own: a worker that is a thread of the client dies only with the client, tested above)."""
    marker = f"clowdr-test-{uuid.uuid4().hex}"
    process = launch(tmp_path, provdir, marker, env={"DASK_CLOWDR__RETRIES__MAX": "3",
                                                      "DASK_CLOWDR__LOCAL__PROCESSES": "true"})
    tools, pid = [], None
    for _ in range(3):
        pid = tool_pid(tmp_path, after=pid)
        tools.append(pid)
        spawner = psutil.Process(pid).parent()
        worker = spawner.parent()                                   # sh -> the worker's spawner -> the Dask worker
        assert "python" in worker.name()
        if len(tools) == 3:
            (tmp_path / "quick").touch()                          # the next attempt ends at once
        worker.kill()
        # the next attempt (same marker) may already run: this attempt's own processes must be gone
        assert gone([pid, spawner.pid]) == [], "the killed worker's tool still runs"
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    meta = Path(stdout.strip().splitlines()[-1])
    summary = json.loads((meta / "task-0-summary.json").read_text())
    assert summary["attempt"] == 4 and summary["status"] == "succeeded"
    assert (meta / "task-0-stdout.txt").read_text() == "alone\n"     # no earlier copy ran beside it
    for attempt in (1, 2, 3):
        lost = json.loads((meta / "attempts" / "task-0" / f"attempt-{attempt}" / "summary.json").read_text())
        assert lost["failure"] == "worker-lost"
        assert lost["start_time"] and lost["hostname"] and lost["worker"]
    assert survivors(tools, marker) == []


def cgroup_limits_here() -> bool:
    from clowdr.limits import _parent

    return _parent(memory=True) is not None


def test_a_local_memory_limit_kills_the_tool_and_the_retry_with_doubled_memory_passes(clowdr, provdir, tmp_path):
    if not cgroup_limits_here():
        pytest.skip("no writable memory cgroup on this machine: a local memory limit cannot be enforced")
    invocation = write_json(tmp_path / "i.json", {"mib": 100, "seconds": 0.5})
    result = clowdr("local", DATA / "alloc.json", invocation, provdir, "-a", "mem:64")
    assert result.returncode == 0, result.stderr
    summary = result.summary(0)
    assert summary["attempt"] == 2 and summary["status"] == "succeeded"
    assert summary["memory_limit"] == 128 * MIB and summary["peak_rss"] > 100 * MIB
    first = json.loads((result.meta / "attempts" / "task-0" / "attempt-1" / "summary.json").read_text())
    assert first["failure"] == "out-of-memory" and first["memory_limit"] == 64 * MIB
    assert "limit 64 MiB" in first["error"]
    assert first["peak_vmem"] >= first["peak_rss"] > 0                 # never below what was resident
    assert summary["previous_attempts_ended"][0]["failure"] == "out-of-memory"


def test_out_of_memory_at_the_largest_memory_allowed_is_final(clowdr, provdir, tmp_path):
    if not cgroup_limits_here():
        pytest.skip("no writable memory cgroup on this machine: a local memory limit cannot be enforced")
    invocation = write_json(tmp_path / "i.json", {"mib": 100, "seconds": 0})
    result = clowdr("local", DATA / "alloc.json", invocation, provdir, "-a", "mem:40",
                    env={"DASK_CLOWDR__RETRIES__MAX_MEMORY": "80MiB"})
    assert result.returncode == 1
    summary = result.summary(0)
    assert summary["failure"] == "out-of-memory" and summary["attempt"] == 2 and summary["memory_limit"] == 80 * MIB
    assert "out-of-memory: 1" in result.stderr


def test_a_tool_that_kills_its_own_process_group_is_named_by_its_signal(clowdr, provdir, tmp_path):
    descriptor = write_json(tmp_path / "self.json", {
        "name": "self-kill", "tool-version": "1", "schema-version": "0.5", "description": "kills its group",
        "command-line": "kill -KILL 0 [X]",
        "inputs": [{"id": "x", "name": "x", "type": "String", "value-key": "[X]", "optional": True}]})
    result = clowdr("local", descriptor, write_json(tmp_path / "i.json", {}), provdir)
    summary = result.summary(0)
    assert (summary["failure"], summary["signal"]) == ("signal", "SIGKILL"), summary


def failing_once(tmp_path: Path) -> Path:
    return write_json(tmp_path / "once.json", {
        "name": "fails-once", "tool-version": "1", "schema-version": "0.5", "description": "fails the first time",
        "command-line": f"if [ -e {tmp_path}/failed ]; then exit 0; fi; touch {tmp_path}/failed; exit 3 [X]",
        "inputs": [{"id": "x", "name": "x", "type": "String", "value-key": "[X]", "optional": True}]})


def test_a_tool_error_runs_again_only_when_asked(clowdr, provdir, tmp_path):
    invocation = write_json(tmp_path / "i.json", {})
    plain = clowdr("local", failing_once(tmp_path), invocation, provdir, "--retries", "3")
    assert plain.returncode == 1 and plain.summary(0)["attempt"] == 1
    (tmp_path / "failed").unlink()
    asked = clowdr("local", failing_once(tmp_path), invocation, provdir, "--retries", "1",
                   env={"DASK_CLOWDR__RETRIES__CLASSES": '["tool-error"]'})
    assert asked.returncode == 0, asked.stderr
    summary = asked.summary(0)
    assert summary["attempt"] == 2 and summary["previous_attempts_ended"][0]["exitcode"] == 3
    archived = json.loads((asked.meta / "attempts" / "task-0" / "attempt-1" / "summary.json").read_text())
    assert archived["failure"] == "tool-error" and archived["command"]           # its whole summary is kept


def daemonising_tool(tmp_path: Path, marker: str, then: str) -> Path:
    """A tool that starts a daemon in a session of its own (``setsid``: out of the tool's process group), records
    the daemon's pid, then runs ``then``. MARKER is on the daemon's command line."""
    return write_json(tmp_path / "daemon.json", {
        "name": "daemoniser", "tool-version": "1", "schema-version": "0.5", "description": "leaves a daemon",
        "command-line": f"setsid sh -c 'echo $$ > {tmp_path}/daemon; exec sleep 300 # {marker}' "
                        f"< /dev/null > /dev/null 2>&1 & "
                        f"while [ ! -s {tmp_path}/daemon ]; do sleep 0.05; done; {then} [X]",
        "inputs": [{"id": "x", "name": "x", "type": "String", "value-key": "[X]", "optional": True}]})


def needs_task_cgroups() -> None:
    from clowdr.limits import _parent

    if _parent(memory=False) is None:
        pytest.skip("no writable cgroup here: a daemon that leaves its session is documented to escape")


def test_a_daemon_the_tool_left_behind_is_killed_when_the_tool_ends(clowdr, provdir, tmp_path):
    needs_task_cgroups()
    marker = f"clowdr-test-{uuid.uuid4().hex}"
    result = clowdr("local", daemonising_tool(tmp_path, marker, "echo done"), write_json(tmp_path / "i.json", {}),
                    provdir, timeout=120)
    assert result.returncode == 0, result.stderr
    daemon = int((tmp_path / "daemon").read_text())
    assert gone([daemon], marker) == [], "the tool's daemon outlived its attempt"


def test_a_daemon_of_a_running_tool_is_killed_with_its_client(tmp_path, provdir):
    needs_task_cgroups()
    marker = f"clowdr-test-{uuid.uuid4().hex}"
    LAUNCHED.append(subprocess.Popen(
        [sys.executable, "-m", "clowdr", "local", str(daemonising_tool(tmp_path, marker, "sleep 300")),
         str(write_json(tmp_path / "i.json", {})), str(provdir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True))
    process = LAUNCHED[-1]
    deadline = time.monotonic() + 60
    while not (tmp_path / "daemon").exists() or not (tmp_path / "daemon").read_text().strip():
        assert time.monotonic() < deadline, "the tool never started its daemon"
        time.sleep(0.05)
    daemon = int((tmp_path / "daemon").read_text())
    started = everything_under(process.pid)
    process.kill()
    process.communicate(timeout=30)
    assert gone([daemon, *started], marker) == [], "the daemon outlived the client that ran its tool"


def test_an_attempt_waits_for_the_lock_an_earlier_one_holds_on_its_working_directory(tmp_path):
    """The lock that keeps a retry from running beside an earlier attempt: a task's own working directory is
    itself the lock (no lock file left among its outputs); a directory every task shares (--workdir) holds one
    lock file per task, so different tasks run there side by side while one task's attempts still exclude
    each other."""
    from clowdr.command import TaskSetupError
    from clowdr.worker import Place

    own, shared = tmp_path / "task-3", tmp_path / "shared"
    own.mkdir()
    shared.mkdir()

    def place(directory, of_all):
        return Place(str(directory), str(tmp_path / "out"), str(tmp_path / "err"), True, False, of_all)

    earlier = place(own, False).hold(3, 0)
    with pytest.raises(TaskSetupError, match="an earlier attempt of task 3 still runs"):
        place(own, False).hold(3, 0.3)
    assert list(own.iterdir()) == []
    os.close(earlier)
    os.close(place(own, False).hold(3, 0))          # released with the earlier attempt's last descriptor

    task_3 = place(shared, True).hold(3, 0)
    task_4 = place(shared, True).hold(4, 0)          # another task in the same directory: not held up
    with pytest.raises(TaskSetupError):
        place(shared, True).hold(3, 0.3)
    assert sorted(p.name for p in shared.iterdir()) == [".clowdr-task-3.lock", ".clowdr-task-4.lock"]
    os.close(task_3)
    os.close(task_4)
