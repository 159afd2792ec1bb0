"""The worker image's parts that run without Docker or AWS: the ``dask-scheduler``/``dask-worker`` shims
(docker/), a real scheduler and worker started through them on loopback, and the versions check that makes a
worker whose software differs from the client's refuse to start. The image itself is built from the tool's
image and a registry's uv image, which this machine cannot pull: its build command is checked instead."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT, free_port

from clowdr.backends.cloud import VERSIONS_VARIABLE, WORKER_ARGS, client_versions
from clowdr.cloudworker import MISMATCH_EXIT
from clowdr.workerimage import DOCKERFILE, build_command

SHIMS = ROOT / "docker"


@pytest.fixture
def scheduler():
    port = free_port()
    proc = subprocess.Popen([str(SHIMS / "dask-scheduler"), "--host", "127.0.0.1", "--port", str(port),
                             "--dashboard-address", ":0", "--idle-timeout", "300"],
                            env={**os.environ, "CLOWDR_PYTHON": sys.executable}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    address = f"tcp://127.0.0.1:{port}"
    from distributed import Client

    deadline = time.monotonic() + 120
    while True:
        try:
            client = Client(address, timeout=5)
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.5)
    yield address, client
    client.close()
    proc.terminate()
    proc.wait(timeout=60)


def worker(address: str, versions: dict[str, str]) -> subprocess.Popen:
    """A worker as dask-cloudprovider starts one, through the shim, with the client's versions in its env."""
    return subprocess.Popen([str(SHIMS / "dask-worker"), address, "--nthreads", "1", "--death-timeout", "60",
                             *WORKER_ARGS],
                            env={**os.environ, "CLOWDR_PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
                                 VERSIONS_VARIABLE: json.dumps(versions)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def test_a_matching_worker_joins_through_the_shims(scheduler):
    address, client = scheduler
    proc = worker(address, client_versions())
    try:
        client.wait_for_workers(1, timeout=120)
        assert len(client.scheduler_info()["workers"]) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_a_worker_whose_versions_differ_refuses_to_start(scheduler):
    address, client = scheduler
    wanted = dict(client_versions(), dask="1999.1.0")
    proc = worker(address, wanted)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == MISMATCH_EXIT, err
    assert "this worker image does not match the client" in err
    assert f"dask: client 1999.1.0, worker {client_versions()['dask']}" in err
    assert client.scheduler_info()["workers"] == {}


def test_build_command_carries_the_clients_versions():
    versions = client_versions()
    command = build_command("bids/example:v2", "me/example-worker:1")
    assert command[:6] == ["docker", "build", "-f", str(DOCKERFILE), "-t", "me/example-worker:1"]
    args = dict(a.split("=", 1) for a in command[7::2])
    assert args == {"TOOL_IMAGE": "bids/example:v2", "PYTHON_VERSION": versions["python"],
                    "DASK_VERSION": versions["dask"], "DISTRIBUTED_VERSION": versions["distributed"],
                    "CLOWDR_VERSION": versions["clowdr"]}
    text = DOCKERFILE.read_text()
    for name in args:
        assert f"ARG {name}" in text
    assert "COPY docker/dask-scheduler docker/dask-worker /usr/local/bin/" in text
