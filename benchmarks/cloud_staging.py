"""Staging throughput (clowdr.staging, through s3fs) next to plain boto3 on the same loopback S3 server, and
the per-task overhead of ``clowdr cloud`` (FargateCluster on moto + the test ECS agent) over ``clowdr local``.

Run by hand:  python benchmarks/cloud_staging.py [--small 1000] [--big-mb 200] [--tasks 20] [--repeat 3]
The S3 server is moto's, started here as its own process on 127.0.0.1 (so it does not share this process's
GIL); the cloud part re-runs this script inside ``bwrap --unshare-net`` (only loopback) with moto in-process,
as the tests do. Medians over the repetitions; MB is 10^6 bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

BUCKET = "clowdr-bench"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def moto_process() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("moto server did not start")


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def staging_figures(args: argparse.Namespace) -> None:
    server, url = moto_process()
    os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    import boto3

    from clowdr import config, staging

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    small = os.urandom(4096)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=BUCKET, Key=f"small/f{i:05d}", Body=small), range(args.small)))
    big_bytes = args.big_mb * 10 ** 6
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.bin"
        with open(big, "wb") as handle:
            for _ in range(args.big_mb):
                handle.write(os.urandom(10 ** 6))
        s3.upload_file(str(big), BUCKET, "big/big.bin")
        plan = dict(chunk=int(config.get("staging.multipart-chunk")), tries=int(config.get("staging.tries")),
                    concurrency=int(config.get("staging.concurrency")))
        rows: dict[str, list[float]] = {}

        def fresh() -> Path:
            directory = Path(tempfile.mkdtemp(dir=tmp))
            return directory

        def boto_small() -> None:
            target = fresh()
            with ThreadPoolExecutor(plan["concurrency"]) as pool:
                list(pool.map(lambda i: s3.download_file(BUCKET, f"small/f{i:05d}", str(target / f"f{i:05d}")),
                              range(args.small)))

        def boto_up() -> None:
            s3.upload_file(str(big), BUCKET, "up-boto/big.bin")

        for _ in range(args.repeat):
            figures = {
                f"{args.small} x 4 KiB in, clowdr": (timed(lambda: staging.stage_in(
                    staging.Staging(source=f"s3://{BUCKET}/small", **plan), str(fresh()))), args.small * 4096),
                f"{args.small} x 4 KiB in, boto3": (timed(boto_small), args.small * 4096),
                f"{args.big_mb} MB in, clowdr": (timed(lambda: staging.stage_in(
                    staging.Staging(source=f"s3://{BUCKET}/big", **plan), str(fresh()))), big_bytes),
                f"{args.big_mb} MB in, boto3": (timed(lambda: s3.download_file(BUCKET, "big/big.bin",
                                                                               str(fresh() / "big.bin"))), big_bytes),
                f"{args.big_mb} MB out, clowdr": (timed(lambda: staging.keep_outputs(
                    staging.Staging(outputs=f"s3://{BUCKET}/up-clowdr", **plan), [str(big)], tmp)), big_bytes),
                f"{args.big_mb} MB out, boto3": (timed(boto_up), big_bytes),
            }
            for name, (seconds, size) in figures.items():
                rows.setdefault(name, []).append(seconds)
                print(f"  {name:28s} {size / seconds / 1e6:8.1f} MB/s  ({seconds:.2f} s)", flush=True)
        print("medians:")
        for name, values in rows.items():
            seconds = statistics.median(values)
            size, files = (args.small * 4096, args.small) if "KiB" in name else (big_bytes, 1)
            print(f"  {name:28s} {size / seconds / 1e6:8.1f} MB/s  {files / seconds:8.1f} files/s")
    server.terminate()
    server.wait()


# -- per-task overhead of the cloud path --------------------------------------------------------------------------
TRIVIAL = {"name": "trivial", "tool-version": "1", "schema-version": "0.5", "description": "echo",
           "command-line": "echo [N] > out-[N].txt",
           "inputs": [{"id": "n", "name": "n", "type": "Number", "integer": True, "value-key": "[N]"}],
           "output-files": [{"id": "out", "name": "out", "path-template": "out-[N].txt"}]}


def overhead_inside(args: argparse.Namespace) -> None:
    """Inside the namespace: moto in-process, the test ECS agent, then clowdr local --s3 and clowdr cloud on the
    same N trivial tasks, with the same staging (one 4 KiB object per task)."""
    import boto3
    from moto.ecs import models as ecs_models
    from moto.moto_api import state_manager
    from moto.server import ThreadedMotoServer

    from ecsagent import TestEcsAgent

    ecs_models.random_private_ip = lambda *a, **k: "127.0.0.1"
    state_manager.set_transition(model_name="ecs::task", transition={"progression": "manual", "times": 10 ** 9})
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp())
    env = {**os.environ, "AWS_ENDPOINT_URL": url, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "PYTHONPATH": str(ROOT),
           "DASK_CLOWDR__CLOUD__IMAGE": "bench", "DASK_CLOWDR__CLOUD__CLIENT_ADDRESS": "127.0.0.1",
           "DASK_CLOWDR__CLOUD__PRIVATE_IP": "true", "DASK_CLOWDR__CLOUD__N_WORKERS": str(os.cpu_count() or 2),
           "DASK_CLOWDR__LOCAL__N_WORKERS": str(os.cpu_count() or 2)}
    session = boto3.Session(aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1")
    os.environ["AWS_ENDPOINT_URL"] = url
    session.client("s3").create_bucket(Bucket=BUCKET)
    session.client("s3").put_object(Bucket=BUCKET, Key="in/data.bin", Body=os.urandom(4096))
    session.client("ecs").put_account_setting(name="taskLongArnFormat", value="enabled")
    creds = work / "creds.csv"
    creds.write_text("Access key ID,Secret access key\nbench,bench\n")
    descriptor = work / "trivial.json"
    descriptor.write_text(json.dumps(TRIVIAL))
    invocation = work / "sweep.json"
    invocation.write_text(json.dumps({"n": list(range(args.tasks))}))
    agent = TestEcsAgent(session, url, work / "agent")
    results: dict[str, list[float]] = {}
    for repetition in range(args.repeat):
        for name, argv in (
            ("local --s3", ["local", str(descriptor), str(invocation), None, "--s3", f"s3://{BUCKET}/in",
                            "--sweep", "n"]),
            ("cloud (Fargate on moto + test agent)", ["cloud", str(descriptor), str(invocation), None,
                                                      f"s3://{BUCKET}/in", "aws", str(creds), "--sweep", "n"]),
        ):
            prov = work / f"prov-{repetition}-{len(results.get(name, []))}-{name.split()[0]}"
            prov.mkdir()
            argv[argv.index(None)] = str(prov)
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "clowdr", *argv], capture_output=True, text=True, env=env,
                                  cwd=ROOT)
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"{name} failed: {done.stderr[-2000:]}")
            results.setdefault(name, []).append(seconds)
            print(f"  {name:40s} {seconds:6.2f} s for {args.tasks} tasks ({seconds / args.tasks * 1000:7.1f} ms/task)",
                  flush=True)
    agent.close()
    server.stop()
    local, cloud = (statistics.median(v) for v in results.values())
    print("medians:")
    print(f"  local --s3: {local:.2f} s; cloud: {cloud:.2f} s; cloud overhead {cloud - local:+.2f} s per run "
          f"({(cloud - local) / args.tasks * 1000:+.1f} ms per task, start-up and teardown included)")
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--big-mb", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        overhead_inside(args)
        return
    print("staging throughput, loopback moto S3 server:")
    staging_figures(args)
    print("per-task overhead, inside bwrap --unshare-net:", flush=True)
    subprocess.run(["bwrap", "--unshare-net", "--dev-bind", "/", "/", "--die-with-parent", sys.executable, __file__,
                    "--inside", "--tasks", str(args.tasks), "--repeat", str(args.repeat)], check=True)


if __name__ == "__main__":
    main()
