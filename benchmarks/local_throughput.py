"""Throughput of ``clowdr local`` on N trivial tasks against ``xargs -P<cores>`` on the same command lines.

Run by hand:  python benchmarks/local_throughput.py [-n 1000] [--repeat 3] [--dir DIR] [--compare SRC]
Each repetition runs xargs, then clowdr (full provenance for every task), then clowdr with workers that share
no filesystem with the client (``local.shared-filesystem: false``: scratch space, logs streamed back), and,
with ``--compare SRC``, the clowdr of another source tree (e.g. ``git worktree add /tmp/old HEAD~1``), all in
the same directory; the script prints ms per task for each, their ratios, clowdr's start-up time (CLI start
to the first task running), and the cost of creating one file in DIR, measured in the same repetition: on this project's
machines that cost alone swings between ~40 and ~1000 us over minutes, and clowdr writes eight files
per task (working directory, stdout, stderr, the tool's own output, usage, summary, task file,
invocation copy) where the xargs baseline writes one. Medians over the repetitions come last.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

DESCRIPTOR = {
    "name": "trivial", "tool-version": "1", "schema-version": "0.5", "description": "echo a number to a file",
    "command-line": "echo [NUMBER] > [OUT]",
    "inputs": [{"id": "number", "name": "n", "type": "Number", "integer": True, "value-key": "[NUMBER]"}],
    "output-files": [{"id": "out", "name": "out", "path-template": "out-[NUMBER].txt", "value-key": "[OUT]"}],
}


def create_cost_us(directory: Path, count: int = 500) -> float:
    """Microseconds to create (and close) one empty file in a new directory under ``directory``, which keeps the
    files: deleting them would make the next files created there dearer (see peers.py)."""
    tmp = tempfile.mkdtemp(prefix="create-cost-", dir=directory)
    started = time.perf_counter()
    for i in range(count):
        os.close(os.open(f"{tmp}/f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return (time.perf_counter() - started) / count * 1e6


def run_xargs(root: Path, n: int, cores: int) -> float:
    lines = []
    for i in range(n):
        work = root / "xargs" / f"task-{i}"
        work.mkdir(parents=True)
        lines.append(f"cd {work} && echo {i} > out-{i}.txt")
    started = time.perf_counter()
    subprocess.run(["xargs", "-0", f"-P{cores}", "-n1", "sh", "-c"], input="\0".join(lines).encode(), check=True)
    return (time.perf_counter() - started) / n * 1000


def trivial_inputs(root: Path, n: int) -> tuple[Path, Path]:
    """The trivial tool's descriptor and a directory of N invocations of it, written under ``root``."""
    descriptor = root / "trivial.json"
    descriptor.write_text(json.dumps(DESCRIPTOR))
    invocations = root / "invocations"
    invocations.mkdir()
    for i in range(n):
        (invocations / f"inv-{i:06d}.json").write_text(json.dumps({"number": i}))
    return descriptor, invocations


def clowdr_summaries(root: Path, n: int, *options: str, env: dict[str, str] | None = None
                     ) -> tuple[list[dict], float, float]:
    """Run N trivial tasks through ``clowdr local`` (plus ``options``); (summaries, CLI start time, wall seconds)."""
    descriptor, invocations = trivial_inputs(root, n)
    provdir = root / "prov"
    provdir.mkdir()
    cli_start = time.time()
    done = subprocess.run([sys.executable, "-m", "clowdr", "local", str(descriptor), str(invocations), str(provdir),
                           *options], capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.time() - cli_start
    if done.returncode != 0:
        sys.exit(f"clowdr failed ({done.returncode}): {done.stderr[-2000:]}")
    summaries = [json.loads(p.read_text()) for p in Path(done.stdout.strip()).glob("task-*-summary.json")]
    assert len(summaries) == n and all(s["status"] == "succeeded" for s in summaries)
    return summaries, cli_start, wall


def span(summaries: list[dict]) -> tuple[float, float]:
    """(first start, last end) of the tasks, as timestamps."""
    starts = [datetime.fromisoformat(s["start_time"]).timestamp() for s in summaries]
    ends = [datetime.fromisoformat(s["end_time"]).timestamp() for s in summaries]
    return min(starts), max(ends)


def run_clowdr(root: Path, n: int, env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """(ms per task from first start to last end, ms per task for the whole command, start-up seconds)."""
    root.mkdir()
    summaries, cli_start, wall = clowdr_summaries(root, n, env=env)
    first, last = span(summaries)
    return (last - first) / n * 1000, wall / n * 1000, first - cli_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="number of tasks (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--dir", default=str(Path(__file__).with_name("out")), help="where to work (default benchmarks/out)")
    parser.add_argument("--compare", metavar="SRC", help="another clowdr source tree to measure in the same runs")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{args.n} trivial tasks on {cores} cores, in {base}")
    print(f"{'rep':>3} {'create us':>9} {'xargs ms/task':>13} {'clowdr ms/task':>14} {'ratio':>6} "
          f"{'clowdr whole ms/task':>20} {'start-up s':>10} {'no-shared ms/task':>17} {'ratio':>6}"
          + (f" {'compared ms/task':>16} {'ratio':>6}" if args.compare else ""))
    for rep in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory(prefix="clowdr-bench-", dir=base) as tmp:
            create = create_cost_us(Path(tmp))
            xargs_ms = run_xargs(Path(tmp), args.n, cores)
            # this tree and the compared one alternate which goes first (a machine's pace drifts within a run)
            compared_ms = float("nan")
            if args.compare and rep % 2:
                compared_ms = run_clowdr(Path(tmp) / "compared", args.n, env={"PYTHONPATH": args.compare})[0]
            steady_ms, whole_ms, startup = run_clowdr(Path(tmp) / "shared", args.n)
            apart_ms = run_clowdr(Path(tmp) / "apart", args.n, env={
                "DASK_CLOWDR__LOCAL__SHARED_FILESYSTEM": "false", "DASK_CLOWDR__WORKER__SCRATCH": f"{tmp}/scratch"})[0]
            if args.compare and not rep % 2:
                compared_ms = run_clowdr(Path(tmp) / "compared", args.n, env={"PYTHONPATH": args.compare})[0]
        rows.append((create, xargs_ms, steady_ms, whole_ms, startup, apart_ms, compared_ms))
        print(f"{rep:>3} {create:>9.0f} {xargs_ms:>13.2f} {steady_ms:>14.2f} {steady_ms / xargs_ms:>6.1f} "
              f"{whole_ms:>20.2f} {startup:>10.2f} {apart_ms:>17.2f} {apart_ms / steady_ms:>6.2f}"
              + (f" {compared_ms:>16.2f} {steady_ms / compared_ms:>6.2f}" if args.compare else ""))
    median = [statistics.median(column) for column in zip(*rows)]
    print(f"median: file create {median[0]:.0f} us; xargs -P{cores} {median[1]:.2f} ms/task; clowdr local "
          f"{median[2]:.2f} ms/task (first task start to last task end; ratio {median[2] / median[1]:.1f}x), "
          f"{median[3]:.2f} ms/task for the whole command; start-up {median[4]:.2f} s; without a shared filesystem "
          f"{median[5]:.2f} ms/task ({median[5] / median[2]:.2f}x shared)"
          + (f"; {args.compare}: {median[6]:.2f} ms/task (this tree {median[2] / median[6]:.2f}x that)"
             if args.compare else ""))


if __name__ == "__main__":
    main()
