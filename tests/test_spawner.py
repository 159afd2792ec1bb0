"""The spawner (clowdr.spawner): every tool's parent, its true peak RSS, and its end with its worker's."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from clowdr.spawner import Spawner, SpawnError

MIB = 1 << 20
ROOT = Path(__file__).parent.parent


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, keep: tuple[int, ...] = ()):
    """Start ``argv`` through this process's spawner and wait for it: (exit code, usage, stdout)."""
    out = cwd / "stdout"
    with open(out, "wb") as stdout:
        tool = Spawner.get().start(argv, str(cwd), env or dict(os.environ), stdout.fileno(), stdout.fileno(), keep)
    tool.ended(None)
    status, usage = tool.result()
    return os.waitstatus_to_exitcode(status), usage, out.read_text()


def gone(pids: list[int], within: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within
    while (alive := [pid for pid in pids if psutil.pid_exists(pid) and
                     psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def test_a_tool_runs_in_a_session_of_its_own_with_what_it_was_given_and_default_signals(tmp_path):
    read, keep = os.pipe()
    code, _, out = run(["/bin/sh", "-c", 'echo "$CLOWDR_TEST_VALUE $(pwd)"; echo $(cut -d" " -f6 /proc/$$/stat) $$; '
                        'ls -l /proc/$$/fd; grep SigIgn /proc/$$/status; exit 3'],
                       tmp_path, dict(os.environ, CLOWDR_TEST_VALUE="given"), (keep,))
    os.close(keep)
    lines = out.splitlines()
    assert code == 3
    assert lines[0] == f"given {tmp_path}"
    session, pid = lines[1].split()
    assert session == pid                                    # its own session, hence its own process group
    assert f"pipe:[{os.fstat(read).st_ino}]" in out                 # the descriptor it was to keep
    ignored = int(lines[-1].split()[1], 16)
    for number in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (number - 1)), number         # ignored by the spawner or by Python, not by it
    os.close(read)


def test_a_tool_that_cannot_start_is_a_spawn_error_saying_why(tmp_path):
    with open(tmp_path / "out", "wb") as out:
        with pytest.raises(SpawnError, match=f"cannot enter the working directory {tmp_path}/absent: No such file"):
            Spawner.get().start(["/bin/sh", "-c", "true"], str(tmp_path / "absent"), dict(os.environ), out.fileno(),
                                out.fileno()).pid
        with pytest.raises(SpawnError, match="cannot run /no/such/program: No such file"):
            Spawner.get().start(["/no/such/program"], str(tmp_path), dict(os.environ), out.fileno(), out.fileno()).pid
    assert run(["/bin/sh", "-c", "echo still here"], tmp_path)[2] == "still here\n"


def test_the_peak_rss_above_the_spawners_own_size_is_the_tools_and_within_it_unknown(tmp_path):
    """This test's own process holds 200 MiB: a tool it forked itself would be recorded at least that big."""
    ballast = bytearray(200 * MIB)
    ballast[::4096] = b"x" * len(ballast[::4096])
    _, big, _ = run([sys.executable, "-c", "b = bytearray(60 << 20); b[::4096] = b'x' * len(b[::4096])"], tmp_path)
    assert big.peak_rss is not None and 60 * MIB <= big.peak_rss <= 80 * MIB
    _, small, _ = run(["/bin/sh", "-c", "true"], tmp_path)
    assert small.peak_rss is None and small.max_rss <= small.floor < 32 * MIB
    assert small.user_time >= 0 and small.system_time >= 0
    del ballast


def test_what_a_tool_leaves_in_its_process_group_ends_with_it(tmp_path):
    code, _, out = run(["/bin/sh", "-c", "sleep 60 & echo $!"], tmp_path)
    assert code == 0 and gone([int(out)]) == []


def test_a_command_line_larger_than_one_read_reaches_the_tool_whole(tmp_path):
    value = "v" * (120 << 10)
    code, _, out = run(["/bin/sh", "-c", 'printf %s "$1" | wc -c', "sh", value], tmp_path)
    assert code == 0 and int(out) == len(value)


def test_a_worker_killed_outright_takes_its_tools_with_it(tmp_path):
    """SIGKILL runs no clean-up code in the worker: its spawner notices the closed socket and stops its tools,
    the one still running and what it started in the background."""
    script = ("import os, sys, time\nfrom clowdr.spawner import Spawner\n"
              "out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n"
              "tool = Spawner.get().start(['/bin/sh', '-c', 'sleep 61 & echo $!; sleep 62'], sys.argv[2], "
              "dict(os.environ), out, out)\n"
              "print(tool.pid, Spawner.get()._process.pid, flush=True)\ntime.sleep(60)\n")
    worker = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out"), str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        tool, spawner = map(int, worker.stdout.readline().split())
        deadline = time.monotonic() + 10
        while not (tmp_path / "out").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        background = int((tmp_path / "out").read_text())
        assert gone([tool, background], within=0.5) == [tool, background]      # running while the worker lives
        worker.kill()
        assert gone([tool, background, spawner]) == []
    finally:
        worker.kill()
        worker.wait()


def test_a_spawner_that_dies_ends_its_attempt_with_an_error_and_the_next_tool_gets_a_new_one(tmp_path):
    with open(tmp_path / "out", "wb") as out:
        tool = Spawner.get().start(["/bin/sh", "-c", "sleep 60"], str(tmp_path), dict(os.environ), out.fileno(),
                                   out.fileno())
    first = Spawner.get()._process
    assert tool.pid                                                    # started
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    with pytest.raises(SpawnError, match="ended before the tool did"):
        tool.result()
    assert gone([tool.pid]) == []
    assert run(["/bin/sh", "-c", "echo new"], tmp_path)[2] == "new\n"
    assert Spawner.get()._process.pid != first.pid
