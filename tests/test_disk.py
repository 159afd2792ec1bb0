"""A full disk never leaves a record that lies: every file of the run is whole or absent, the launch ends with one
line, and once there is room ``--rerun incomplete`` runs every task that never finished, including those whose
task files were never written. The disk is a real 2 MiB tmpfs mounted for the test (root)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from conftest import DATA, EXAMPLES, run_clowdr


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def whole_files(meta: Path) -> list[str]:
    """Every JSON file of the run that does not parse (there must be none) and every temporary file left."""
    bad = [p.name for p in meta.rglob("*") if p.name.endswith(".tmp")]
    for path in meta.rglob("*.json"):
        try:
            json.loads(path.read_text())
        except ValueError:
            bad.append(path.name)
    return bad


def test_a_disk_that_fills_up_ends_the_launch_with_one_line_and_loses_no_task(small_disk, tmp_path):
    tasks = 500
    invocations = tmp_path / "invocations"
    invocations.mkdir()
    for n in range(tasks):
        (invocations / f"i{n:04d}.json").write_text(json.dumps({"seconds": 0}))
    full = run_clowdr("local", DATA / "sleep.json", invocations, small_disk, timeout=300)
    assert full.returncode == 1, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and "Traceback" not in full.stderr, full.stderr
    meta = full.meta
    assert f"--rerun incomplete --run_id {meta.parent.name}" in lines[0]
    assert whole_files(meta) == []
    recorded = len(list(meta.glob("task-*[0-9].json")))
    summaries = len(list(meta.glob("task-*-summary.json")))
    assert recorded < tasks and summaries < tasks                            # the disk did fill up

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = run_clowdr("local", DATA / "sleep.json", invocations, small_disk, "--rerun", "incomplete",
                       "--run_id", meta.parent.name, timeout=300)
    assert again.returncode == 0, again.stderr
    assert len(list(meta.glob("task-*[0-9].json"))) == tasks
    done = [json.loads(p.read_text()) for p in meta.glob("task-*-summary.json")]
    assert len(done) == tasks and all(s["status"] == "succeeded" for s in done)
    assert whole_files(meta) == []


def test_a_run_json_cut_short_never_replaces_the_whole_one(small_disk, tmp_path):
    """run.json used to be renamed into place cut at 4096 bytes, and --rerun then refused the run."""
    filler = small_disk / "filler"
    invocation = tmp_path / "i.json"
    invocation.write_text(json.dumps({"seconds": 0}))
    first = run_clowdr("local", DATA / "sleep.json", invocation, small_disk)
    assert first.returncode == 0, first.stderr
    run_json = first.meta / "run.json"
    before = run_json.read_text()
    # leave less room than run.json needs once a launch is added to it
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(b"\0" * (free - 4096))
    again = run_clowdr("local", DATA / "sleep.json", invocation, small_disk, "--rerun", "all", "--run_id",
                       first.meta.parent.name)
    assert again.returncode == 1 and "No space left on device" in again.stderr, again.stderr
    assert run_json.read_text() == before or json.loads(run_json.read_text())       # whole, old or new
    assert whole_files(first.meta) == []
    filler.unlink()
    last = run_clowdr("local", DATA / "sleep.json", invocation, small_disk, "--rerun", "all", "--run_id",
                      first.meta.parent.name)
    assert last.returncode == 0, last.stderr


def test_a_full_temporary_directory_while_planning_is_one_line_and_launches_nothing(small_disk, tmp_path):
    """Validated tasks beyond 8 MiB of plan lines wait in the system's temporary directory: one too small for them
    ends the launch with one line naming it, before anything is written or started."""
    invocations = tmp_path / "invocations"
    invocations.mkdir()
    for n in range(100):                            # ~10 MiB of plan lines; the temporary directory holds 2 MiB
        (invocations / f"i{n:03d}.json").write_text(json.dumps({"message": "x" * 100_000, "repeat": 1}))
    provdir = tmp_path / "provdir"
    provdir.mkdir()
    full = run_clowdr("local", EXAMPLES / "echo-tool.json", invocations, provdir, env={"TMPDIR": str(small_disk)})
    assert full.returncode == 1, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in full.stderr, full.stderr
    assert str(small_disk) in lines[0] and "No space left on device" in lines[0] and "TMPDIR" in lines[0], lines[0]
    assert list(provdir.iterdir()) == []


def test_a_disk_that_fills_up_while_worker_processes_record_a_setup_ends_it_with_one_line(small_disk, tmp_path):
    """A --setup large enough to be recorded by worker processes (clowdr.spread; its threshold lowered here): the
    first file one of them cannot write ends it as it would end one process, every file written is whole, and
    ``--rerun incomplete`` records the rest once there is room."""
    tasks = 500
    invocations = tmp_path / "invocations"
    invocations.mkdir()
    for n in range(tasks):
        (invocations / f"i{n:04d}.json").write_text(json.dumps({"seconds": 0}))
    spread = {"DASK_CLOWDR__SETUP__SPREAD_FROM": "2"}
    full = run_clowdr("local", DATA / "sleep.json", invocations, small_disk, "--setup", env=spread)
    assert full.returncode == 1, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and "Traceback" not in full.stderr, full.stderr
    meta = next(small_disk.iterdir()) / "clowdr"
    assert f"--rerun incomplete --run_id {meta.parent.name}" in lines[0]
    assert whole_files(meta) == []
    assert len(list(meta.glob("task-*[0-9].json"))) < tasks                  # the disk did fill up

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = run_clowdr("local", DATA / "sleep.json", invocations, small_disk, "--rerun", "incomplete",
                       "--run_id", meta.parent.name, "--setup", env=spread)
    assert again.returncode == 0, again.stderr
    assert len(list(meta.glob("task-*[0-9].json"))) == tasks
    assert whole_files(meta) == []
