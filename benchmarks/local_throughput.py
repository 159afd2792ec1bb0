"""Throughput of ``clowdr local`` on N trivial tasks against ``xargs -P<cores>`` on the same command lines.

Run by hand:  python benchmarks/local_throughput.py [-n 1000] [--dir DIR]
Prints ms per task for both (measured in this same run), their ratio, and clowdr's start-up time
(CLI start to the first task running). Full provenance is written for every clowdr task.
Both work under DIR (default benchmarks/out/): on this project's machines /tmp creates files ~18x
slower than the rest of the same disk, which would measure /tmp rather than clowdr.
"""
from __future__ import annotations

import argparse
import json
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="number of tasks (default 1000)")
    parser.add_argument("--dir", default=str(Path(__file__).with_name("out")), help="where to work (default benchmarks/out)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clowdr-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        descriptor = root / "trivial.json"
        descriptor.write_text(json.dumps(DESCRIPTOR))
        invocations = root / "invocations"
        invocations.mkdir()
        for i in range(args.n):
            (invocations / f"inv-{i:06d}.json").write_text(json.dumps({"number": i}))
        provdir = root / "prov"
        provdir.mkdir()

        # Baseline: the same command lines through xargs, each in its own directory as clowdr runs them.
        lines = []
        for i in range(args.n):
            work = root / "xargs" / f"task-{i}"
            work.mkdir(parents=True)
            lines.append(f"cd {work} && echo {i} > out-{i}.txt")
        started = time.perf_counter()
        subprocess.run(["xargs", "-0", f"-P{cores}", "-n1", "sh", "-c"], input="\0".join(lines).encode(), check=True)
        xargs_ms = (time.perf_counter() - started) / args.n * 1000

        cli_start = time.time()
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "clowdr", "local", str(descriptor), str(invocations), str(provdir)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"clowdr failed ({done.returncode}): {done.stderr[-2000:]}")
        meta = Path(done.stdout.strip())
        summaries = [json.loads(p.read_text()) for p in meta.glob("task-*-summary.json")]
        assert len(summaries) == args.n and all(s["status"] == "succeeded" for s in summaries)
        starts = sorted(datetime.fromisoformat(s["start_time"]).timestamp() for s in summaries)
        ends = sorted(datetime.fromisoformat(s["end_time"]).timestamp() for s in summaries)
        startup = starts[0] - cli_start
        steady_ms = (ends[-1] - starts[0]) / args.n * 1000
        total_ms = wall / args.n * 1000

    print(f"tasks: {args.n} on {cores} cores")
    print(f"xargs -P{cores}:                   {xargs_ms:7.2f} ms per task")
    print(f"clowdr local (first to last task): {steady_ms:7.2f} ms per task  (ratio to xargs {steady_ms / xargs_ms:5.1f}x)")
    print(f"clowdr local (whole command):      {total_ms:7.2f} ms per task  (ratio to xargs {total_ms / xargs_ms:5.1f}x)")
    print(f"clowdr start-up (CLI start to first task running): {startup:.2f} s; whole command {wall:.2f} s")


if __name__ == "__main__":
    main()
