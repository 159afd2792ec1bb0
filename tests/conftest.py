"""Shared fixtures: real runs of the real CLI, real tools, and a real Docker engine started by our own script."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
EXAMPLES = ROOT / "examples"
SCRIPTS = ROOT / "scripts"


NETNS_TEST = "test_cloud_tests_run_in_a_network_namespace"
NETNS_RUN = pytest.StashKey[tuple[subprocess.Popen, Any, Path]]()


@pytest.hookimpl(trylast=True)          # after -k/-m deselection: only a run that is asked for starts
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The cloud tests' run inside a network namespace is minutes of mostly waiting on moto and Dask: it starts
    as soon as the session's tests are known, beside the others, and its test (moved last) reads its end."""
    chosen = [item for item in items if item.name == NETNS_TEST]
    if not chosen or os.environ.get("CLOWDR_TEST_NETNS") == "1" or not shutil.which("bwrap"):
        return
    items.remove(chosen[0])
    items.append(chosen[0])
    inner = Path(tempfile.mkdtemp(prefix="clowdr-netns-"))
    output = open(inner / "output.txt", "w+")      # a file, not a pipe: minutes of output never block the run
    config.stash[NETNS_RUN] = (subprocess.Popen(
        ["bwrap", "--unshare-net", "--dev-bind", "/", "/", "--die-with-parent", "--setenv", "CLOWDR_TEST_NETNS", "1",
         sys.executable, "-m", "pytest", str(chosen[0].path), "-q", "-p", "no:cacheprovider", "--show-capture=no",
         "--basetemp", str(inner / "tmp")], stdout=output, stderr=subprocess.STDOUT, text=True, cwd=ROOT), output, inner)


def pytest_unconfigure(config: pytest.Config) -> None:
    """A namespace run whose test never read it (the session stopped first) does not outlive the session."""
    started = config.stash.get(NETNS_RUN, None)
    if started is not None:
        process, output, inner = started
        if process.poll() is None:
            process.kill()
            process.wait()
        output.close()
        shutil.rmtree(inner, ignore_errors=True)



@pytest.fixture
def netns_run(request: pytest.FixtureRequest) -> tuple[int, str]:
    """The namespace run's exit status and output, once it has ended (see ``pytest_collection_modifyitems``)."""
    started = request.config.stash.get(NETNS_RUN, None)
    if started is None:
        pytest.skip("no namespace run was started (bubblewrap missing, or already inside the namespace)")
    process, output, _ = started
    code = process.wait(timeout=900)
    output.seek(0)
    return code, output.read()


@dataclass
class Result:
    """A finished ``clowdr`` command: exit status, output, and the run it wrote (if any)."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def meta(self) -> Path:
        """The run's clowdr/ directory, as printed on stdout."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"no run directory printed; stderr: {self.stderr}"
        return Path(lines[-1])

    def summary(self, n: int) -> dict[str, Any]:
        return json.loads((self.meta / f"task-{n}-summary.json").read_text())

    def summaries(self) -> dict[int, dict[str, Any]]:
        found = {}
        for path in self.meta.glob("task-*-summary.json"):
            found[int(path.name.split("-")[1])] = json.loads(path.read_text())
        return found


def run_clowdr(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
    """Run the real CLI in a new process (``python -m clowdr``), as a user would."""
    done = subprocess.run([sys.executable, "-m", "clowdr", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=ROOT)
    return Result(done.returncode, done.stdout, done.stderr)


def start_clowdr(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The real CLI started in the background, for ``finish``: a slow run overlaps other tests."""
    return subprocess.Popen([sys.executable, "-m", "clowdr", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, cwd=ROOT)


def finish(process: subprocess.Popen, timeout: float) -> Result:
    """The background run's result; one still running after ``timeout`` seconds (or at a test's failure) is
    stopped as a user would stop it (SIGTERM: its worker jobs are withdrawn), killed if that does not do."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
    return Result(process.returncode, stdout, stderr)


def out_of_memory_then_twice_the_memory(scheduler: str, provdir: Path, tmp_path: Path) -> tuple[dict, dict]:
    """A tool that outgrows its 256 MiB worker job on ``scheduler``: checks that it was out-of-memory with that limit,
    then succeeded in another job with 512 MiB; returns (the first attempt's summary, the task's summary)."""
    mib = 1 << 20
    invocation = write_json(tmp_path / "i.json", {"mib": 300, "seconds": 1})
    result = run_clowdr("local", DATA / "alloc.json", invocation, provdir, "-c", scheduler, "-a", "mem:256",
                        env=LOOPBACK, timeout=180)
    assert result.returncode == 0, result.stderr
    summary = result.summary(0)
    assert summary["attempt"] == 2 and summary["status"] == "succeeded" and summary["memory_limit"] == 512 * mib
    first = json.loads((result.meta / "attempts" / "task-0" / "attempt-1" / "summary.json").read_text())
    assert first["failure"] == "out-of-memory" and first["memory_limit"] == 256 * mib, first
    assert "limit 256 MiB" in first["error"] and 0 < first["peak_rss"]
    assert summary["previous_attempts_ended"][0]["failure"] == "out-of-memory"
    assert first["job_id"] != summary["job_id"]
    return first, summary


def walltime_run_in_background(scheduler: str, limit: str, tmp_path_factory: Any) -> Any:
    """For a module fixture: a 300 s tool's run under ``-a time:<limit>`` (retire margin and retries off), started
    in the background so that the scheduler's time limit takes its time while the module's other tests run; stopped
    at the module's end if it still runs."""
    directory = tmp_path_factory.mktemp("walltime")
    (directory / "prov").mkdir()
    env = dict(LOOPBACK, **{f"DASK_CLOWDR__{scheduler.upper()}__RETIRE_MARGIN": "0", "DASK_CLOWDR__RETRIES__MAX": "0"})
    process = start_clowdr("local", DATA / "sleep.json", write_json(directory / "i.json", {"seconds": 300}),
                           directory / "prov", "-c", scheduler, "-a", f"time:{limit}", env=env)
    yield process
    if process.poll() is None:
        finish(process, timeout=0)


@pytest.fixture
def clowdr():
    return run_clowdr


@pytest.fixture
def provdir(tmp_path: Path) -> Path:
    path = tmp_path / "prov"
    path.mkdir()
    return path


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def invocations(tmp_path: Path):
    """Write invocation files: ``invocations({"a.json": {...}, ...})`` returns their directory."""
    def make(files: dict[str, Any], name: str = "invocations") -> Path:
        directory = tmp_path / name
        for file_name, content in files.items():
            write_json(directory / file_name, content)
        return directory
    return make


@pytest.fixture(scope="session")
def docker_host() -> str:
    """A real Docker engine on a private socket with the local busybox image, from scripts/docker-up.sh.

    Started once for the session and stopped at its end by its own pid (only if this session started it).
    """
    if os.geteuid() != 0:
        pytest.skip("starting a Docker engine needs root; this machine runs the tests as a normal user")
    pidfile = Path("/run/clowdr-test-docker.pid")
    already = pidfile.exists()
    done = subprocess.run(["bash", str(SCRIPTS / "docker-up.sh")], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(f"scripts/docker-up.sh failed: {done.stderr[-2000:]}")
    host = done.stdout.strip().splitlines()[-1].split("=", 1)[1]
    yield host
    if not already:
        subprocess.run(["bash", str(SCRIPTS / "docker-down.sh")], capture_output=True, timeout=120)


@pytest.fixture
def docker_env(docker_host: str) -> dict[str, str]:
    return {"DOCKER_HOST": docker_host}


def _daemons(name: str, pidfile: Path) -> Any:
    """A real scheduler started by the project's own scripts/<name>-up.sh, stopped by <name>-down.sh at the end
    of the session if this session started it."""
    if os.geteuid() != 0:
        pytest.skip(f"starting {name} daemons needs root; this machine runs the tests as a normal user")
    already = pidfile.exists()
    done = subprocess.run(["bash", str(SCRIPTS / f"{name}-up.sh")], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(f"scripts/{name}-up.sh failed: {done.stderr[-2000:]}")
    yield
    if not already:
        subprocess.run(["bash", str(SCRIPTS / f"{name}-down.sh")], capture_output=True, timeout=300)


SLURM_CONF = Path("/etc/slurm/slurm.conf")
SLURM_MARK = "# generated by clowdr scripts/slurm-up.sh"     # the first line of the configuration slurm-up.sh writes


def slurm_answers(conf: Path) -> str | None:
    """None when the SLURM that ``conf`` configures answers (``scontrol ping``), else why not."""
    if shutil.which("scontrol") is None:
        return "scontrol is not installed"
    try:
        done = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "SLURM_CONF": str(conf)})
    except subprocess.TimeoutExpired:
        return "scontrol ping did not answer within 30 s"
    if done.returncode == 0 and " UP" in done.stdout:
        return None
    return " ".join((done.stdout + done.stderr).split())[-300:] or f"scontrol ping exited with {done.returncode}"


def slurm_plan(conf: Path, answers: Any = slurm_answers) -> tuple[str, str]:
    """What the SLURM tests do: ("start", why) the project's own single-node SLURM (no configuration yet, or the
    one slurm-up.sh wrote), ("reuse", why) a SLURM configured by someone else (a cluster's login node) that
    answers, or ("skip", why) when someone else's configuration names no SLURM that answers: slurm-up.sh never
    overwrites it, and the tests may not start daemons over it."""
    if not conf.exists():
        return "start", f"no {conf}: scripts/slurm-up.sh writes one and starts a single-node SLURM"
    first = conf.read_text(errors="replace").split("\n", 1)[0].strip()
    if first == SLURM_MARK:
        return "start", f"{conf} is the project's (scripts/slurm-up.sh): its daemons are started or checked"
    problem = answers(conf)
    if problem is None:
        return "reuse", f"{conf} is not the project's and its SLURM answers: the tests use it, start nothing"
    return "skip", (f"{conf} was not written by scripts/slurm-up.sh and the SLURM it configures does not answer "
                    f"({problem}); the tests start no SLURM over someone else's configuration")


@pytest.fixture(scope="session")
def slurm() -> Any:
    """A SLURM to submit to: a real cluster's, already running (when /etc/slurm/slurm.conf is not the project's),
    or a real single-node one on 127.0.0.1 (munge, slurmctld, slurmd) started by scripts/slurm-up.sh."""
    action, why = slurm_plan(SLURM_CONF)
    print(f"slurm: {action}: {why}")
    if action == "skip":
        pytest.skip(why)
    if action == "reuse":
        yield
        return
    yield from _daemons("slurm", Path("/var/lib/clowdr-test-slurm/pid/slurmctld.pid"))


@pytest.fixture(scope="session")
def sge() -> Any:
    """A real single-node Son of Grid Engine on 127.0.0.1 (sge_qmaster, sge_execd)."""
    yield from _daemons("sge", Path("/var/lib/clowdr-test-sge/pid/sge_qmaster.pid"))


#: Everything on loopback: the scheduler and the workers of a batch back-end talk over lo only.
LOOPBACK = {"DASK_JOBQUEUE__SLURM__INTERFACE": "lo", "DASK_JOBQUEUE__SGE__INTERFACE": "lo"}


HIDE = Path(__file__).resolve().parent / "preloads" / "hide_path.py"


def hidden_from_workers(provdir: Path, scratch: Path) -> dict[str, str]:
    """Environment for a local run whose workers share no filesystem with the client and cannot see PROVDIR
    (each worker, a process of its own, mounts an empty tmpfs over it in its own mount namespace; their scratch
    space is SCRATCH)."""
    if os.geteuid() != 0:
        pytest.skip("hiding the provenance directory from workers needs a mount namespace (root)")
    return {"DASK_CLOWDR__LOCAL__SHARED_FILESYSTEM": "false", "DASK_CLOWDR__WORKER__SCRATCH": str(scratch),
            "DASK_CLOWDR__LOCAL__PROCESSES": "true",
            "DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([str(HIDE)]), "CLOWDR_TEST_HIDDEN": str(provdir)}


def have(command: str) -> bool:
    return shutil.which(command) is not None


# -- a real S3 API (moto server) on loopback, and a user pointed at it -------------------------------------------
SECRET = "testing-" + uuid.uuid4().hex            # moto accepts any key: this one is easy to look for
#: Variables that could point the AWS libraries elsewhere than the server started here.
FOREIGN = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3",
           "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ROLE_ARN",
           "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CA_BUNDLE")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint():
    """A moto S3 server on loopback for this module, stopped at its end."""
    moto_server = pytest.importorskip("moto.server")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(endpoint, tmp_path, monkeypatch) -> dict[str, str]:
    """The environment of a user pointed at the loopback server (also for subprocesses); a private temp dir."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    values = {
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-creds"),
        "TMPDIR": str(temp),
    }
    for name in FOREIGN:
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))        # gettempdir() caches its first answer
    return values
