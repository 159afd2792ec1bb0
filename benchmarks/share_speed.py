"""How fast ``clowdr share`` is ready, and how big its export is, at 1,000 and 10,000 tasks.

Run by hand:  python benchmarks/share_speed.py [--sizes 1000 10000]
For each size, a synthetic run (benchmarks/make_provenance.py) is written under benchmarks/out/, then:
the time from starting ``clowdr share RUN --port P`` to the first page answered over HTTP (the app built
for that session), the time to build the app in-process, and the time and size of ``--export``.
Target: ready in at most 3 s at 10,000 tasks; the export at most 10 MB.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from make_provenance import make_run  # noqa: E402


def served_ready(run: Path) -> float:
    """Seconds from starting the server to the first page it answers."""
    from clowdr.share.serve import free_port

    port = free_port()
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "clowdr", "share", str(run), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
                    if page.status == 200:
                        return time.perf_counter() - started
            except OSError:
                if server.poll() is not None:
                    sys.exit("clowdr share exited before serving")
                time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(timeout=30)


def built_in_process(run: Path) -> float:
    from clowdr.share.app import build_app

    started = time.perf_counter()
    build_app(run, live=False)
    return time.perf_counter() - started


def exported(run: Path, out: Path) -> tuple[float, int]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "clowdr", "share", str(run), "--export", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started, out.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    base = Path(__file__).with_name("out") / "share-speed"
    print(f"{'tasks':>6} {'served ready s':>14} {'built in-process s':>18} {'export s':>8} {'export MB':>9}")
    for size in args.sizes:
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        run = make_run(base, size)
        ready = served_ready(run)
        built = built_in_process(run)
        seconds, size_bytes = exported(run, base / "report.html")
        print(f"{size:>6} {ready:>14.2f} {built:>18.2f} {seconds:>8.2f} {size_bytes / 1e6:>9.2f}")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
