"""200 trivial tasks on the loopback SLURM: ``clowdr local --cluster slurm`` against one ``sbatch --array`` job.

Run by hand, with SLURM up (``bash scripts/slurm-up.sh``):  python benchmarks/slurm_throughput.py [-n 200]
Both run the same command lines in the same run; the script prints, for each, the time from submission
(CLI start, or sbatch) to the first task running, and ms per task from that first start to the last end.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from local_throughput import clowdr_summaries, span  # noqa: E402 - the same trivial tool and record reading


def run_array(root: Path, n: int) -> tuple[float, float]:
    lines = root / "lines.txt"
    stamps = root / "stamps"
    stamps.mkdir()
    work = root / "array"
    lines.write_text("".join(f"mkdir -p {work}/task-{i} && cd {work}/task-{i} && echo {i} > out-{i}.txt\n"
                             for i in range(n)))
    script = root / "array.sh"
    script.write_text("#!/bin/sh\n"
                      f"echo $(date +%s.%N) > {stamps}/$SLURM_ARRAY_TASK_ID.start\n"
                      f"sh -c \"$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {lines})\"\n"
                      f"echo $(date +%s.%N) > {stamps}/$SLURM_ARRAY_TASK_ID.end\n")
    submitted = time.time()
    job = subprocess.run(["sbatch", "--parsable", f"--array=0-{n - 1}", "-o", "/dev/null", "--mem=100",
                          "-t", "10", str(script)], capture_output=True, text=True, check=True).stdout.strip()
    while len(list(stamps.glob("*.end"))) < n:
        time.sleep(0.2)
    starts = [float(p.read_text()) for p in stamps.glob("*.start")]
    ends = [float(p.read_text()) for p in stamps.glob("*.end")]
    subprocess.run(["scancel", job], capture_output=True)
    return min(starts) - submitted, (max(ends) - min(starts)) / n * 1000


def run_clowdr(root: Path, n: int) -> tuple[float, float, float]:
    summaries, cli_start, wall = clowdr_summaries(root, n, "--cluster", "slurm", "-a", "mem:500,time:0:20",
                                                  env={"DASK_JOBQUEUE__SLURM__INTERFACE": "lo"})
    first, last = span(summaries)
    print(f"clowdr used {len({s['job_id'] for s in summaries})} worker jobs")
    return first - cli_start, (last - first) / n * 1000, wall / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="number of tasks (default 200)")
    args = parser.parse_args()
    base = Path(__file__).with_name("out")
    base.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clowdr-slurm-bench-", dir=base) as tmp:
        array_first, array_ms = run_array(Path(tmp), args.n)
        clowdr_first, clowdr_ms, clowdr_whole = run_clowdr(Path(tmp), args.n)
    print(f"{args.n} trivial tasks on the loopback SLURM")
    print(f"sbatch --array:        first task running after {array_first:5.2f} s; {array_ms:7.2f} ms per task")
    print(f"clowdr --cluster slurm: first task running after {clowdr_first:5.2f} s; {clowdr_ms:7.2f} ms per task "
          f"(ratio {clowdr_ms / array_ms:.2f}x); whole command {clowdr_whole:.2f} ms per task")


if __name__ == "__main__":
    main()
