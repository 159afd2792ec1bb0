"""Synthetic provenance directories for benchmarking and testing the dashboard's data layer.

Run by hand:  python benchmarks/make_provenance.py OUTDIR -n 10000 [--usage-rows 50] [--failed 0.05]
              [--running 0.01] [--pending 0.01] [--retried 0.01] [--format ours|original] [--seed 0] [--time-load]
or import it: ``make_run(outdir, n, ...)`` returns the new run's ``clowdr/`` directory.

One run is written into OUTDIR (a provenance directory) in exactly the layout clowdr writes (run.json, the
descriptor copy, invocation copies with 2-3 parameters, task-N.json, task-N-summary.json, task-N-usage.csv,
stdout/stderr, ``attempts/`` for retried tasks, running tasks without a summary, pending tasks with only their
task file), or in Clowdr 0.1.2's layout (no run.json, no attempts, the original summary keys only, recorded
paths from another machine). Tasks follow a timeline: a pool of workers takes them in order, with log-normal
durations. Files are written directly (no atomic renames: nobody reads them while they are made), and only
in OUTDIR: /tmp on this project's machines is slow at creating files. ``--time-load`` then times
``clowdr.share.table.load_tasks`` on the new run.
"""
from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import random
import statistics
import string
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USAGE_HEADER = "time,cpu,ram,vmem,read_bytes,write_bytes,procs\n"
ORIGINAL_USAGE_HEADER = "time,cpu,ram\n"
START = 1767600000.0          # 2026-01-05 08:00 UTC: a fixed timeline, so the same seed gives the same run
OTHER_MACHINE = "/home/someone/prov"

DESCRIPTOR = {
    "name": "synth-tool", "tool-version": "1.0.0", "schema-version": "0.5",
    "description": "A synthetic tool: processes one subject with a threshold, optionally smoothing.",
    "command-line": "process [SUBJECT] [THRESHOLD] [SMOOTH] [OUT]",
    "inputs": [
        {"id": "subject", "name": "Subject", "type": "String", "value-key": "[SUBJECT]"},
        {"id": "threshold", "name": "Threshold", "type": "Number", "value-key": "[THRESHOLD]"},
        {"id": "smooth", "name": "Smooth", "type": "Flag", "command-line-flag": "--smooth", "value-key": "[SMOOTH]",
         "optional": True},
    ],
    "output-files": [{"id": "out", "name": "Output", "path-template": "[SUBJECT].out", "value-key": "[OUT]"}],
    "error-codes": [{"code": 2, "description": "The subject's data is unreadable."}],
}


def iso(timestamp: float) -> str:
    """As clowdr writes times (ISO 8601 with zone, to the microsecond); UTC keeps generation fast."""
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat()


def launchtime(timestamp: float) -> str:
    """The original tool's ``launchtime``: local time, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def timeline(rng: random.Random, n: int, workers: int) -> list[tuple[float, float, float]]:
    """(submit, start, duration) per task: all submitted at once, taken in order by the first free worker."""
    free = [START + 1.0] * workers
    heapq.heapify(free)
    times = []
    for i in range(n):
        submit = START + 0.8 + i * 0.0004
        start = max(heapq.heappop(free), submit) + rng.uniform(0.005, 0.05)
        duration = rng.lognormvariate(math.log(90.0), 0.6)
        heapq.heappush(free, start + duration)
        times.append((submit, start, duration))
    return times


def usage_rows(rng: random.Random, rows: int, duration: float, original: bool, partial: bool = False) -> str:
    """A usage series: time spread over the task, a RAM ramp with noise and one spike, slowly growing I/O."""
    peak = rng.uniform(200.0, 4000.0)
    spike = rng.randrange(rows) if rows else -1
    lines = []
    read = write = 0
    for k in range(rows):
        t = duration * (k + 1) / (rows + 1)
        ram = peak * (0.3 + 0.6 * k / max(rows, 1)) * rng.uniform(0.95, 1.0)
        if k == spike:
            ram = peak
        cpu = rng.uniform(60.0, 100.0)
        if original:
            lines.append(f"{t:.3f},{cpu:.1f},{ram:.2f}\n")
            continue
        read += rng.randrange(0, 1 << 20)
        write += rng.randrange(0, 1 << 19)
        lines.append(f"{t:.3f},{cpu:.1f},{ram:.2f},{ram * 1.6:.2f},{read},{write},{1 + (k % 3 == 0)}\n")
    if partial and lines:
        lines[-1] = lines[-1][: len(lines[-1]) // 2]        # a line still being written
    return (ORIGINAL_USAGE_HEADER if original else USAGE_HEADER) + "".join(lines)


def put(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def dumps(data: object) -> str:
    return json.dumps(data, indent=2) + "\n"


def make_run(outdir: str | Path, n: int, usage_rows_per_task: int = 50, failed: float = 0.05,
             fmt: str = "ours", running: float = 0.01, pending: float = 0.01, retried: float = 0.01,
             workers: int = 64, seed: int = 0) -> Path:
    """Write one synthetic run of N tasks into the provenance directory OUTDIR; return its ``clowdr/`` directory.

    The last tasks of the timeline are ``pending`` (task file only), those before them ``running`` (logs and a
    growing usage file, no summary); a ``failed`` fraction of the rest fail; a ``retried`` fraction (ours only)
    has an earlier attempt in ``attempts/``.
    """
    if fmt not in ("ours", "original"):
        raise ValueError("fmt is 'ours' or 'original'")
    rng = random.Random(seed)
    original = fmt == "original"
    base = Path(outdir).absolute()
    base.mkdir(parents=True, exist_ok=True)
    while True:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.gmtime(START))
        run_id = f"{stamp}-{''.join(rng.choices(string.ascii_uppercase + string.digits, k=8))}"
        run_dir = base / run_id
        try:
            (run_dir / "clowdr").mkdir(parents=True)
            break
        except FileExistsError:
            continue
    meta = str(run_dir / "clowdr")
    recorded = f"{OTHER_MACHINE}/{run_id}/clowdr" if original else meta      # paths as the writer saw them
    workroot = "/home/someone/work" if original else str(run_dir / "work")

    times = timeline(rng, n, workers)
    n_pending = round(n * pending)
    n_running = round(n * running)
    finished = n - n_pending - n_running
    put(f"{meta}/synth-tool.json", dumps(DESCRIPTOR))
    if not original:
        launch = {"mode": "new", "command": ["clowdr", "local", "synth-tool.json", "invocations", str(base)],
                  "options": {"descriptor": "synth-tool.json", "invocation": "invocations", "provdir": str(base)},
                  "cluster": "slurm", "tasks": list(range(n)), "groups": n, "setup_only": False,
                  "start": iso(START), "end": None,
                  "versions": {"python": sys.version.split()[0], "clowdr": "1.0.0.dev0"}}
        put(f"{meta}/run.json", dumps({"run_id": run_id, "tool": DESCRIPTOR["name"], "descriptor": "synth-tool.json",
                                       "start": iso(START), "end": None, "launches": [launch],
                                       "command": launch["command"], "options": launch["options"],
                                       "cluster": "slurm", "versions": launch["versions"], "tasks": n}))
        os.mkdir(f"{meta}/attempts")

    for i in range(n):
        submit, start, duration = times[i]
        subject = f"sub-{i:05d}"
        invocation_name = f"invocation-{i}.json" if original else f"{subject}.json"
        invocation = {"subject": subject, "threshold": round(rng.uniform(0.1, 0.9), 3)}
        if rng.random() < 0.5:
            invocation["smooth"] = True
        put(f"{meta}/{invocation_name}", json.dumps(invocation) + "\n")
        put(f"{meta}/task-{i}.json", dumps({"tool": f"{recorded}/synth-tool.json",
                                           "invocation": f"{recorded}/{invocation_name}",
                                           "dataloc": ["localhost"], "taskloc": f"{workroot}/task-{i}"}))
        if i >= finished + n_running:
            continue                                                   # pending: nothing else yet
        if i >= finished:                                              # running: logs so far, no summary
            put(f"{meta}/task-{i}-stdout.txt", f"processing {subject}\n")
            put(f"{meta}/task-{i}-stderr.txt", "")
            put(f"{meta}/task-{i}-usage.csv",
                usage_rows(rng, max(1, usage_rows_per_task // 3), duration, original, partial=(i % 2 == 0)))
            continue
        fails = rng.random() < failed
        attempt = 1
        if not original and rng.random() < retried:
            attempt = 2
            history = f"{meta}/attempts/task-{i}/attempt-1"
            os.makedirs(history)
            lost = rng.random() < 0.5
            earlier_end = start
            start = start + rng.uniform(5.0, 30.0)
            put(f"{history}/summary.json", dumps(summary(
                rng, i, 1, submit, earlier_end - duration / 2, duration / 2, 2, recorded, workroot, subject,
                "worker-lost" if lost else "tool-error")))
            put(f"{history}/usage.csv", usage_rows(rng, usage_rows_per_task // 2, duration / 2, False))
            put(f"{history}/stdout.txt", f"processing {subject}\n")
            put(f"{history}/stderr.txt", "" if lost else f"error: cannot read {subject}\n")
        code = 2 if fails else 0
        if original:
            data = {"duration": float(math.ceil(duration)), "exitcode": code, "launchtime": launchtime(start),
                    "outputs": [] if fails else [f"{workroot}/task-{i}/{subject}.out"],
                    "stdout": f"{recorded}/task-{i}-stdout.txt", "stderr": f"{recorded}/task-{i}-stderr.txt",
                    "usage": f"{recorded}/task-{i}-usage.csv"}
        else:
            data = summary(rng, i, attempt, submit, start, duration, code, recorded, workroot, subject,
                           "tool-error" if fails else None)
        put(f"{meta}/task-{i}-usage.csv", usage_rows(rng, usage_rows_per_task, duration, original))
        put(f"{meta}/task-{i}-stdout.txt",
            f"processing {subject}\nthreshold {invocation['threshold']}\n" + ("" if fails else "done\n"))
        put(f"{meta}/task-{i}-stderr.txt", f"error: cannot read {subject}\n" if fails else "")
        put(f"{meta}/task-{i}-summary.json", dumps(data))
    return Path(meta)


def summary(rng: random.Random, i: int, attempt: int, submit: float, start: float, duration: float, code: int,
            recorded: str, workroot: str, subject: str, failure: str | None) -> dict[str, object]:
    """A summary with every key clowdr writes, realistic values."""
    lost = failure == "worker-lost"
    user = duration * rng.uniform(0.6, 0.95)
    system = duration * rng.uniform(0.01, 0.05)
    peak = rng.randrange(200, 4000) * 1024 * 1024
    command = f"process {subject} 0.5 {workroot}/task-{i}/{subject}.out"
    job = str(100000 + i // 4)
    return {
        "duration": None if lost else round(duration, 6), "exitcode": None if lost else code,
        "launchtime": None if lost else launchtime(start),
        "outputs": [] if failure else [f"{workroot}/task-{i}/{subject}.out"],
        "task": i, "attempt": attempt, "hostname": f"node{(i // 4) % 32:02d}",
        "worker": f"tcp://10.0.{(i // 4) % 32}.1:{40000 + i % 1000}", "slurm_job_id": job,
        "workdir": f"{workroot}/task-{i}", "start_time": None if lost else iso(start), "command": command,
        "launch_command": command, "container_image": None, "container_engine": None, "signal": None,
        "end_time": iso(start + duration), "realtime": None if lost else round(duration, 6),
        "peak_vmem": int(peak * 1.6), "samples": 50, "user_time": round(user, 6), "system_time": round(system, 6),
        "cpu_time": round(user + system, 6), "cpu_percent": round(100 * (user + system) / duration, 1),
        "peak_rss": peak, "read_bytes": rng.randrange(1 << 30), "write_bytes": rng.randrange(1 << 28),
        "measured": "process-tree", "status": "failed" if failure else "succeeded", "failure": failure,
        "missing_outputs": [],
        "exit_description": "The subject's data is unreadable." if code == 2 and not lost else None,
        "error": f"worker tcp://10.0.0.1:40000 lost; SLURM job {job}: NODE_FAIL" if lost else None,
        "submit_time": iso(submit),
        "stdout": f"{recorded}/task-{i}-stdout.txt", "stderr": f"{recorded}/task-{i}-stderr.txt",
        "usage": f"{recorded}/task-{i}-usage.csv",
    }


def time_load(meta: Path, repeat: int = 3) -> list[float]:
    """Seconds ``load_tasks`` takes on the run (each repetition from scratch, files in the page cache)."""
    sys.path.insert(0, str(ROOT))
    from clowdr.share.table import load_tasks

    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        frame = load_tasks(meta.parent)
        seconds.append(time.perf_counter() - started)
    counts = frame["status"].value_counts().to_dict()
    print(f"loaded {len(frame)} tasks x {len(frame.columns)} columns; statuses {counts}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, help="Provenance directory to write the run into (created if needed).")
    parser.add_argument("-n", type=int, default=10000, help="Number of tasks.")
    parser.add_argument("--usage-rows", type=int, default=50, help="Usage samples per finished task.")
    parser.add_argument("--failed", type=float, default=0.05, help="Fraction of finished tasks that fail.")
    parser.add_argument("--running", type=float, default=0.01, help="Fraction of tasks still running.")
    parser.add_argument("--pending", type=float, default=0.01, help="Fraction of tasks not started.")
    parser.add_argument("--retried", type=float, default=0.01, help="Fraction with an earlier attempt (ours only).")
    parser.add_argument("--workers", type=int, default=64, help="Tasks running at once on the timeline.")
    parser.add_argument("--format", choices=("ours", "original"), default="ours", dest="fmt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-load", action="store_true", help="Then time load_tasks on the new run.")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    meta = make_run(args.outdir, args.n, args.usage_rows, args.failed, args.fmt, args.running, args.pending,
                    args.retried, args.workers, args.seed)
    print(f"generated {args.n} tasks ({args.fmt}) in {time.perf_counter() - started:.1f} s: {meta}")
    if args.time_load:
        seconds = time_load(meta)
        runs = ", ".join(f"{s:.3f}" for s in seconds)
        print(f"load_tasks: {runs} s (median {statistics.median(seconds):.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
