"""clowdr at scale: recording a large run, the client's memory, and choosing what to rerun.

Run by hand:  python benchmarks/scale.py [--setup-tasks 100000] [--setup-repeat 3] [--run-tasks 2000 10000]
              [--dir DIR]

Prints, each measured in this run:
- ``--setup`` of N invocations (a directory of N files) against the floor: a plain Python loop writing the same
  number of small JSON files clowdr writes for them (a task file and an invocation copy each) on the same disk,
  alternated, and the median of the ratios;
- the client's peak RSS (``wait4``'s figure for the ``clowdr local`` process, which hosts the Dask scheduler,
  started by clowdr's own spawner so that the figure is that process's, not this script's) for runs
  of trivial tasks of each size, and its growth between the sizes;
- ``--rerun failed`` on the largest of those runs, where nothing failed: the whole command's time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from clowdr.spawner import Spawner

DESCRIPTOR = {
    "name": "trivial", "tool-version": "1", "schema-version": "0.5", "description": "echo a number",
    "command-line": "echo [NUMBER]",
    "inputs": [{"id": "number", "name": "n", "type": "Number", "integer": True, "value-key": "[NUMBER]"}],
}


def invocations(root: Path, n: int) -> tuple[Path, Path]:
    descriptor = root / "trivial.json"
    descriptor.write_text(json.dumps(DESCRIPTOR))
    directory = root / f"invocations-{n}"
    if directory.is_dir():
        return descriptor, directory
    directory.mkdir()
    for i in range(n):
        (directory / f"inv-{i:06d}.json").write_text(json.dumps({"number": i}))
    return descriptor, directory


def clowdr(*args: str | Path) -> tuple[float, int, str]:
    """(seconds, peak RSS in KiB, stdout) of one clowdr command."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        command = Spawner.get().start([sys.executable, "-m", "clowdr", *map(str, args)], os.getcwd(), dict(os.environ),
                                      out.fileno(), err.fileno())
        command.ended(None)
        status, usage = command.result()
        seconds = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:   # every task of these runs succeeds: anything else is no measurement
            err.seek(0)
            sys.exit(f"clowdr failed ({os.waitstatus_to_exitcode(status)}): {err.read()[-2000:].decode()}")
        out.seek(0)
        return seconds, usage.max_rss // 1024, out.read().decode()


def floor(target: Path, tasks: int) -> float:
    """Seconds a plain loop takes to write the files clowdr writes for TASKS tasks (an invocation copy and a task
    file each, about their size) into the new directory TARGET: ``json.dumps`` and one open and write per file,
    no fsync (clowdr does none either)."""
    target.mkdir()
    started = time.perf_counter()
    for i in range(tasks):
        with open(target / f"inv-{i:06d}.json", "w") as handle:
            handle.write(json.dumps({"number": i}))
        with open(target / f"task-{i}.json", "w") as handle:
            handle.write(json.dumps({"tool": f"{target}/trivial.json", "invocation": f"{target}/inv-{i:06d}.json",
                                     "dataloc": ["localhost"], "taskloc": f"{target}/work/task-{i}"}))
    return time.perf_counter() - started


def _load() -> str:
    """The machine's load averages (1, 5, 15 min): the figures beside them are worth what the load lets them be."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup-tasks", type=int, default=100_000)
    parser.add_argument("--setup-repeat", type=int, default=3, help="--setup and floor measurements, alternated")
    parser.add_argument("--run-tasks", type=int, nargs="+", default=[2000, 10_000])
    parser.add_argument("--dir", default=str(Path(__file__).with_name("out")))
    args = parser.parse_args()
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clowdr-scale-", dir=base) as tmp:
        root = Path(tmp)
        descriptor, directory = invocations(root, args.setup_tasks)
        ratios = []
        for rep in range(1, args.setup_repeat + 1):
            # Fresh directories side by side, none removed before the end: this disk's cost of creating a file
            # drifts ten-fold over minutes and is worst next to inodes just freed, so the floor and clowdr
            # alternate which goes first, and one measurement each would compare two different disks.
            plain_first = floor(root / f"floor-{rep}", args.setup_tasks) if rep % 2 else None
            (root / f"setup-{rep}").mkdir()
            setup, setup_peak, _ = clowdr("local", descriptor, directory, root / f"setup-{rep}", "--setup")
            plain = plain_first if plain_first is not None else floor(root / f"floor-{rep}", args.setup_tasks)
            ratios.append(setup / plain)
            print(f"--setup of {args.setup_tasks} invocations: {setup:.1f} s, peak RSS {setup_peak / 1024:.0f} MiB; "
                  f"floor ({2 * args.setup_tasks} small JSON files in a loop): {plain:.1f} s; "
                  f"ratio {setup / plain:.2f}x  (load {_load()})", flush=True)
        print(f"--setup: median ratio to the floor over {len(ratios)}: {statistics.median(ratios):.2f}x")
        peaks = []
        for n in args.run_tasks:
            descriptor, directory = invocations(root, n)
            provdir = root / f"run-{n}"
            provdir.mkdir()
            seconds, peak, out = clowdr("local", descriptor, directory, provdir)
            peaks.append(peak)
            print(f"{n} tasks: {seconds:.1f} s, client peak RSS {peak / 1024:.0f} MiB  (load {_load()})", flush=True)
        print(f"client growth from {args.run_tasks[0]} to {args.run_tasks[-1]} tasks: "
              f"{(peaks[-1] - peaks[0]) / 1024:.0f} MiB")
        run_id = Path(out.strip().splitlines()[-1]).parent.name
        seconds, _, _ = clowdr("local", descriptor, directory, provdir, "--rerun", "failed", "--run_id", run_id)
        print(f"--rerun failed on the {args.run_tasks[-1]}-task run, nothing failed: {seconds:.2f} s (the whole "
              f"command; load {_load()})")


if __name__ == "__main__":
    main()
