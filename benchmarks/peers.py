"""clowdr against the tools its users could pick instead, on N trivial tasks: whole-command times.

Run by hand:  python benchmarks/peers.py [-n 1 500 2000] [--repeat 3] [--dir DIR]
              [--snakemake PATH] [--parsl-python PATH]

Each task writes one number to a file of its own. Tools, interleaved within each repetition (a machine's pace
drifts over minutes): clowdr (``clowdr local``, full provenance of every task), GNU parallel with ``--joblog``
(it also keeps a record per job), ``xargs -P<cores>``, and, where installed, Snakemake (one rule instance per
task, ``--cores <cores>``) and Parsl (a ``bash_app`` per task on a HighThroughputExecutor and on a
ThreadPoolExecutor). The time of each is the whole command, from exec to exit. Also timed: ``clowdr local
--rerun failed`` on the finished run (nothing to rerun). Prints every measurement, then the medians and each
tool's ratio to clowdr. Nothing is deleted before the end, and each repetition prints what creating one file
costs in DIR at that moment: on a disk where that swings (see below), compare only runs where it is low.
Snakemake and Parsl are looked for on PATH and in this interpreter; ``--snakemake`` and
``--parsl-python`` point at them elsewhere (e.g. a virtual environment, to keep them out of clowdr's).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from local_throughput import create_cost_us, trivial_inputs

CORES = os.cpu_count() or 1
PARSL_SCRIPT = """
import sys
import parsl
from parsl.app.app import bash_app
from parsl.config import Config
kind, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if kind == "htex":
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider
    executor = HighThroughputExecutor(max_workers_per_node={cores}, provider=LocalProvider(), address="127.0.0.1",
                                      loopback_address="127.0.0.1")
else:
    from parsl.executors.threads import ThreadPoolExecutor
    executor = ThreadPoolExecutor(max_threads={cores})
parsl.load(Config(executors=[executor]))

@bash_app
def task(i, path):
    return f"echo {{i}} > {{path}}"

futures = [task(i, f"{{out}}/out-{{i}}.txt") for i in range(n)]
assert all(f.result() == 0 for f in futures)
parsl.dfk().cleanup()
""".format(cores=CORES)
SNAKEFILE = """
rule all:
    input: expand("out/out-{i}.txt", i=range(int(config["count"])))

rule task:
    output: "out/out-{i}.txt"
    shell: "echo {wildcards.i} > {output}"
"""


def timed(command: list[str], **kwargs) -> float:
    """Seconds from exec to exit; the command must succeed."""
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{command[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed


def numbers(n: int) -> str:
    return "".join(f"{i}\n" for i in range(n))


def run_clowdr(work: Path, n: int) -> float:
    descriptor, invocations = trivial_inputs(work, n)
    (work / "prov").mkdir()
    return timed([sys.executable, "-m", "clowdr", "local", str(descriptor), str(invocations), str(work / "prov")])


def run_clowdr_rerun(work: Path, n: int) -> float:
    """``--rerun failed`` on the run ``run_clowdr`` just made in ``work``: nothing failed, nothing to run."""
    run_id = next((work / "prov").iterdir()).name
    return timed([sys.executable, "-m", "clowdr", "local", str(work / "trivial.json"), str(work / "invocations"),
                  str(work / "prov"), "--rerun", "failed", "--run_id", run_id])


def run_parallel(work: Path, n: int) -> float:
    return timed(["parallel", "--joblog", str(work / "joblog"), f"-j{CORES}", f"echo {{}} > {work}/out-{{}}.txt"],
                 input=numbers(n))


def run_xargs(work: Path, n: int) -> float:
    return timed(["xargs", f"-P{CORES}", "-I{}", "sh", "-c", f"echo {{}} > {work}/out-{{}}.txt"], input=numbers(n))


def snakemake_runner(snakemake: str) -> Callable[[Path, int], float]:
    def run(work: Path, n: int) -> float:
        (work / "Snakefile").write_text(SNAKEFILE)
        return timed([snakemake, "--cores", str(CORES), "--quiet", "all", "--config", f"count={n}",
                      "-s", str(work / "Snakefile"), "-d", str(work)])
    return run


def parsl_runner(python: str, kind: str) -> Callable[[Path, int], float]:
    def run(work: Path, n: int) -> float:
        script = work / "parsl_tasks.py"
        script.write_text(PARSL_SCRIPT)
        (work / "out").mkdir()
        # Parsl starts its interchange and worker pool as commands of its own installation: its bin/ on PATH
        path = f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return timed([python, str(script), kind, str(n), str(work / "out")], cwd=work, env={**os.environ, "PATH": path})
    return run


def has_module(python: str, module: str) -> bool:
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def tools(args: argparse.Namespace) -> dict[str, Callable[[Path, int], float]]:
    """The tools to measure, each saying why when it is left out."""
    found: dict[str, Callable[[Path, int], float]] = {"clowdr": run_clowdr, "clowdr --rerun failed": run_clowdr_rerun}
    if shutil.which("parallel"):
        found["GNU parallel --joblog"] = run_parallel
    else:
        print("GNU parallel: not installed (Debian package parallel); skipped")
    found[f"xargs -P{CORES}"] = run_xargs
    snakemake = args.snakemake or shutil.which("snakemake")
    if snakemake:
        found[f"Snakemake --cores {CORES}"] = snakemake_runner(snakemake)
    else:
        print("Snakemake: not installed (pip install snakemake, or --snakemake PATH); skipped")
    python = args.parsl_python or sys.executable
    if has_module(python, "parsl"):
        found["Parsl HTEX"] = parsl_runner(python, "htex")
        found["Parsl threads"] = parsl_runner(python, "threads")
    else:
        print("Parsl: not installed (pip install parsl, or --parsl-python PATH); skipped")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, nargs="+", default=[1, 500, 2000], help="task counts (default 1 500 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--dir", default=str(Path(__file__).with_name("out")), help="where to work (default benchmarks/out)")
    parser.add_argument("--snakemake", help="the snakemake executable")
    parser.add_argument("--parsl-python", help="a Python interpreter that has parsl")
    args = parser.parse_args()
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    measured = tools(args)
    times: dict[tuple[str, int], list[float]] = {}
    print(f"trivial tasks on {CORES} cores, whole-command seconds, in {base}")
    # Nothing is deleted until every measurement is done: on an ext4 file system without a journal (this machine's),
    # creating a file within minutes of many deletions in its block group cost 23-633 us here instead of ~25 (the
    # allocator reads and skips every recently freed inode), so deleting one measurement's files would tax whichever
    # tool comes next, and most the one that creates most files.
    with tempfile.TemporaryDirectory(prefix="clowdr-peers-", dir=base) as kept:
        for rep in range(1, args.repeat + 1):
            for n in args.n:
                print(f"rep {rep}  N={n:<5} creating one file here costs {create_cost_us(Path(kept)):.0f} us", flush=True)
                for name, run in measured.items():
                    label = "clowdr" if name.startswith("clowdr") else name.split()[0] + name.split()[-1]
                    work = Path(kept) / f"{rep}-{n}" / label
                    work.mkdir(parents=True, exist_ok=True)
                    seconds = run(work, n)
                    times.setdefault((name, n), []).append(seconds)
                    print(f"rep {rep}  N={n:<5} {name:<24} {seconds:8.3f} s", flush=True)
    print(f"\nmedians of {args.repeat}, whole command (ratio to clowdr's time for the same N)")
    print(f"{'tool':<24}" + "".join(f"{'N=' + str(n):>22}" for n in args.n))
    for name in measured:
        cells = []
        for n in args.n:
            median = statistics.median(times[(name, n)])
            ratio = median / statistics.median(times[("clowdr", n)])
            cells.append(f"{median:9.3f} s ({ratio:5.2f}x)")
        print(f"{name:<24}" + "".join(f"{cell:>22}" for cell in cells))
    if len(args.n) >= 2:
        low, high = sorted(args.n)[-2:]
        print(f"\nper extra task between N={low} and N={high} (ms):")
        for name in measured:
            extra = (statistics.median(times[(name, high)]) - statistics.median(times[(name, low)])) / (high - low)
            print(f"  {name:<24} {extra * 1000:6.2f}")


if __name__ == "__main__":
    main()
