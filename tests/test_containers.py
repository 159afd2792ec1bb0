"""Containerised tools end to end, with real containers: Docker (a real dockerd) and the Singularity path.

Every test runs the real CLI (``python -m clowdr local ...``) against the test engine that
``scripts/docker-up.sh`` starts (the ``docker_env`` fixture points DOCKER_HOST at it) and the local
busybox image ``localhost/bbox:latest``. The Singularity path uses the bwrap-based stand-in in
``tests/fakebin`` over the rootfs that docker-up.sh builds.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any


from conftest import DATA, ROOT, Result, write_json

DOCKER_TOOL = DATA / "docker-tool.json"
SINGULARITY_TOOL = DATA / "singularity-tool.json"
FAKEBIN = ROOT / "tests" / "fakebin"
IMAGE = "localhost/bbox:latest"
MIB = 1024 * 1024


# -- helpers --------------------------------------------------------------------------------------

def derived(tmp_path: Path, name: str, command_line: str, base: Path = DOCKER_TOOL, **changes: Any) -> Path:
    """A descriptor in tmp_path: ``base`` with another command line (and any other top-level changes)."""
    descriptor = json.loads(base.read_text())
    descriptor["command-line"] = command_line
    descriptor.update(changes)
    return write_json(tmp_path / "descriptors" / f"{name}.json", descriptor)


def bosh_simulate(descriptor: Path, invocation: Path) -> str:
    """The command line ``bosh exec simulate`` prints: the line after "Generated Command:"."""
    done = subprocess.run(["bosh", "exec", "simulate", str(descriptor), "-i", str(invocation)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    return lines[lines.index("Generated Command:") + 1]


def path_without_engines() -> str:
    """This PATH minus tests/fakebin and any directory holding a singularity or apptainer binary."""
    keep = []
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if not entry or Path(entry).resolve() == FAKEBIN.resolve():
            continue
        if any(Path(entry, b).exists() for b in ("singularity", "apptainer")):
            continue
        keep.append(entry)
    return os.pathsep.join(keep)


def run_clowdr_in(cwd: Path, *args: str | Path, env: dict[str, str] | None = None) -> Result:
    """The real CLI started from ``cwd`` (a user's own directory), for options given as relative paths."""
    done = subprocess.run([sys.executable, "-m", "clowdr", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=300, cwd=cwd)
    return Result(done.returncode, done.stdout, done.stderr)


def usage_rows(meta: Path, n: int) -> list[dict[str, str]]:
    with open(meta / f"task-{n}-usage.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def check_docker_launch(summary: dict[str, Any]) -> list[str]:
    """The launch command is a well-formed ``docker run`` of the image in the task's working directory."""
    launch, workdir = summary["launch_command"], summary["workdir"]
    assert launch.startswith("docker run "), launch
    tokens = shlex.split(launch)
    assert "--entrypoint=/bin/sh" in tokens and "--rm" in tokens, launch
    assert f" -w {workdir} " in launch, launch
    assert f" -v {workdir}:{workdir} " in launch, launch
    assert IMAGE in tokens, launch
    # the script the container runs comes right after the image, inside the working directory
    script = tokens[tokens.index(IMAGE) + 1]
    assert Path(script).parent == Path(workdir) and script.endswith(".localExec.boshjob.sh")
    assert not Path(script).exists(), "the container script is removed after the task"
    assert summary["container_image"] == IMAGE and summary["container_engine"] == "docker"
    return tokens


# -- 1. a docker tool runs ------------------------------------------------------------------------

def test_docker_tool_runs_with_boutiques_command(clowdr, provdir, invocations, docker_env):
    inv = invocations({"hello.json": {"message": "hello"}}) / "hello.json"
    result = clowdr("local", DOCKER_TOOL, inv, provdir, env=docker_env)
    assert result.returncode == 0, result.stderr
    summary = result.summary(0)
    assert summary["status"] == "succeeded" and summary["exitcode"] == 0 and summary["failure"] is None

    # the output file is written in the task's working directory, with the descriptor's environment
    workdir = Path(summary["workdir"])
    out = workdir / "hello.txt"
    assert out.is_file() and summary["outputs"] == [str(out)]
    assert out.read_text().split() == ["hello", "from-the-descriptor"]
    # stdout holds what the tool printed (`cat` of nothing, then `id -u`: root in the container)
    stdout = Path(summary["stdout"]).read_text()
    assert stdout.split() == ["0"], stdout

    check_docker_launch(summary)
    assert "-e GREETING='from-the-descriptor'" in summary["launch_command"]
    # the command is exactly Boutiques' own
    assert summary["command"] == bosh_simulate(DOCKER_TOOL, inv)


# -- 2. File inputs are mounted at their own path ---------------------------------------------------

def test_file_input_is_automounted(clowdr, provdir, invocations, docker_env, tmp_path):
    data = tmp_path / "inputs" / "in.txt"
    data.parent.mkdir()
    data.write_text("content-of-the-input-file\n")
    inv = invocations({"cat.json": {"message": "cat", "infile": str(data)}}) / "cat.json"
    result = clowdr("local", DOCKER_TOOL, inv, provdir, env=docker_env)
    assert result.returncode == 0, result.stderr
    summary = result.summary(0)
    assert summary["status"] == "succeeded", summary
    assert f" -v {data}:{data} " in summary["launch_command"]
    stdout = Path(summary["stdout"]).read_text()
    assert "content-of-the-input-file" in stdout, (stdout, Path(summary["stderr"]).read_text())
    assert summary["command"] == bosh_simulate(DOCKER_TOOL, inv)


# -- 3. --volumes / -v ------------------------------------------------------------------------------

def test_volumes_are_mounted(clowdr, provdir, invocations, docker_env, tmp_path):
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "file").write_text("from-the-volume\n")
    original = json.loads(DOCKER_TOOL.read_text())["command-line"]
    desc = derived(tmp_path, "volume-tool", original + "; cat /mnt/x/file")
    inv = invocations({"v.json": {"message": "vol"}}) / "v.json"
    result = clowdr("local", desc, inv, provdir, "-v", f"{host}:/mnt/x", env=docker_env)
    assert result.returncode == 0, result.stderr
    summary = result.summary(0)
    assert summary["status"] == "succeeded", summary
    check_docker_launch(summary)
    assert f" -v {host}:/mnt/x " in summary["launch_command"]
    stdout = Path(summary["stdout"]).read_text()
    assert "from-the-volume" in stdout, (stdout, Path(summary["stderr"]).read_text())


def test_relative_volume_is_relative_to_the_callers_directory(provdir, invocations, docker_env, tmp_path):
    (tmp_path / "hostdir").mkdir()
    (tmp_path / "hostdir" / "file").write_text("relative-volume\n")
    original = json.loads(DOCKER_TOOL.read_text())["command-line"]
    desc = derived(tmp_path, "volume-tool", original + "; cat /mnt/x/file")
    inv = invocations({"v.json": {"message": "rel"}}) / "v.json"
    result = run_clowdr_in(tmp_path, "local", desc, inv, provdir, "-v", "hostdir:/mnt/x", env=docker_env)
    assert result.returncode == 0, result.stderr
    summary = result.summary(0)
    assert f" -v {tmp_path / 'hostdir'}:/mnt/x " in summary["launch_command"], summary["launch_command"]
    assert "relative-volume" in Path(summary["stdout"]).read_text()


# -- 4. --user / -u ---------------------------------------------------------------------------------

def test_user_runs_container_as_calling_user(clowdr, provdir, invocations, docker_env):
    inv = invocations({"u.json": {"message": "mine"}}) / "u.json"
    result = clowdr("local", DOCKER_TOOL, inv, provdir, "--user", env=docker_env)
    assert result.returncode == 0, result.stderr
    summary = result.summary(0)
    assert summary["status"] == "succeeded", summary
    assert summary["launch_command"].startswith("docker run -u $(id -u):$(id -g) "), summary["launch_command"]
    check_docker_launch(summary)
    # `id -u` inside the container prints the calling user's id; the output file belongs to that user
    assert Path(summary["stdout"]).read_text().split() == [str(os.getuid())]
    out = Path(summary["workdir"]) / "mine.txt"
    assert out.stat().st_uid == os.getuid() and out.stat().st_gid == os.getgid()


def test_without_user_no_user_option(clowdr, provdir, invocations, docker_env):
    """Without --user the container's own user is kept (Boutiques adds -u only when asked)."""
    inv = invocations({"n.json": {"message": "n"}}) / "n.json"
    result = clowdr("local", DOCKER_TOOL, inv, provdir, env=docker_env)
    assert result.returncode == 0, result.stderr
    assert " -u " not in result.summary(0)["launch_command"]


# -- 5. the container is measured, not the docker client ---------------------------------------------

def test_container_is_measured_through_its_cgroup(clowdr, provdir, invocations, docker_env):
    folder = invocations({"a-big.json": {"message": "big", "mib": 100, "seconds": 3},
                          "b-small.json": {"message": "small", "mib": 1, "seconds": 2}})
    result = clowdr("local", DOCKER_TOOL, folder, provdir, env=docker_env)
    assert result.returncode == 0, result.stderr
    big, small = result.summary(0), result.summary(1)
    print(f"\nbig: peak_rss={big['peak_rss']} ({big['peak_rss'] / MIB:.2f} MiB) samples={big['samples']} "
          f"cpu_time={big['cpu_time']} duration={big['duration']}")
    print(f"small: peak_rss={small['peak_rss']} ({small['peak_rss'] / MIB:.2f} MiB) samples={small['samples']} "
          f"cpu_time={small['cpu_time']} duration={small['duration']}")

    for summary in (big, small):
        assert summary["status"] == "succeeded", summary
        assert summary["measured"] == "container-cgroup"
        assert summary["samples"] > 0
        assert re.fullmatch(r"[0-9a-f]{64}", summary["container_id"] or ""), summary["container_id"]
        assert summary["cpu_time"] is not None and summary["cpu_time"] >= 0
        rows = usage_rows(result.meta, summary["task"])
        assert rows and list(rows[0])[:3] == ["time", "cpu", "ram"]
        assert len(rows) == summary["samples"]
        # peak_rss is the highest sampled container RSS (the usage file is in MiB)
        assert abs(max(float(r["ram"]) for r in rows) * MIB - summary["peak_rss"]) <= 0.01 * MIB
    assert big["container_id"] != small["container_id"]

    # 100 MiB held by dd (+ a little busybox) -- not the docker client's own memory
    assert 95 * MIB <= big["peak_rss"] <= 125 * MIB, big["peak_rss"]
    assert big["duration"] >= 3
    # a 1 MiB tool: far below what the docker client alone uses
    assert small["peak_rss"] < 15 * MIB, small["peak_rss"]
    assert small["duration"] >= 2


# -- 6. a failing container command -----------------------------------------------------------------

def test_failing_container_command(clowdr, provdir, invocations, docker_env, tmp_path):
    original = json.loads(DOCKER_TOOL.read_text())["command-line"]
    desc = derived(tmp_path, "exit5-tool", original + "; exit 5")
    inv = invocations({"f.json": {"message": "fails"}}) / "f.json"
    result = clowdr("local", desc, inv, provdir, env=docker_env)
    assert result.returncode == 1, result.stderr
    summary = result.summary(0)
    assert summary["status"] == "failed" and summary["exitcode"] == 5, summary
    assert summary["failure"] == "tool-error"
    assert summary["measured"] == "container-cgroup"
    assert (Path(summary["workdir"]) / "fails.txt").is_file()


# -- 7. Singularity with --simg ---------------------------------------------------------------------

def test_singularity_with_simg(clowdr, provdir, invocations, docker_host, tmp_path):
    # docker_host: docker-up.sh also builds the rootfs the stand-in singularity runs over
    image = tmp_path / "image.sif"
    image.touch()
    data = tmp_path / "in.txt"
    data.write_text("singularity-input\n")
    inv = invocations({"s.json": {"message": "sing", "infile": str(data)}}) / "s.json"
    env = {"PATH": f"{FAKEBIN}{os.pathsep}{os.environ['PATH']}"}
    result = clowdr("local", SINGULARITY_TOOL, inv, provdir, "--simg", image, env=env)
    assert result.returncode == 0, result.stderr
    summary = result.summary(0)
    assert summary["status"] == "succeeded", (summary, Path(summary["stderr"]).read_text())
    launch, workdir = summary["launch_command"], summary["workdir"]
    # Boutiques puts the environment first: SINGULARITYENV_X='v' singularity exec ...
    assert launch.startswith("SINGULARITYENV_GREETING='from-the-descriptor' "), launch
    bare = re.sub(r"^(SINGULARITYENV_\w+='[^']*' )+", "", launch)
    assert bare.startswith("singularity exec --cleanenv -B "), launch
    tokens = shlex.split(bare)
    assert str(image) in tokens and f"{workdir}:{workdir}" in tokens and f"{data}:{data}" in tokens
    assert tokens[tokens.index("-W") + 1] == workdir
    assert summary["container_image"] == str(image) and summary["container_engine"] == "singularity"

    out = Path(workdir) / "sing.txt"
    assert out.is_file() and out.read_text().split() == ["sing", "from-the-descriptor"]
    stdout = Path(summary["stdout"]).read_text()
    assert "singularity-input" in stdout and stdout.split()[-1] == "0", stdout
    assert summary["command"] == bosh_simulate(SINGULARITY_TOOL, inv)


# -- 8. no container engine -------------------------------------------------------------------------

def test_no_container_engine_is_a_container_error(clowdr, provdir, invocations, tmp_path):
    folder = invocations({"a.json": {"message": "a"}, "b.json": {"message": "b"}, "c.json": {"message": "c"}})
    env = {"PATH": path_without_engines(), "DASK_CLOWDR__CONTAINER__DOCKER": "/nonexistent/docker"}
    result = clowdr("local", DOCKER_TOOL, folder, provdir, env=env)
    assert result.returncode == 1, result.stderr
    summaries = result.summaries()
    assert sorted(summaries) == [0, 1, 2], "every task is attempted and recorded"
    for n, summary in summaries.items():
        assert summary["status"] == "failed" and summary["failure"] == "container-error", summary
        assert "Could not find any container engine" in summary["error"]
        assert summary["exitcode"] is None
        assert (result.meta / f"task-{n}-stdout.txt").is_file() and (result.meta / f"task-{n}-stderr.txt").is_file()
    run = json.loads((result.meta / "run.json").read_text())
    assert run["launches"][-1]["status"] == "finished" and run["launches"][-1]["failed"] == 3


def test_an_image_the_engine_cannot_find_is_a_container_error(clowdr, provdir, invocations, docker_env, tmp_path):
    """docker run exits 125 before any container exists: the engine failed, not the tool."""
    descriptor = derived(tmp_path, "no-image", "echo [MESSAGE] > [OUT]; cat [INFILE] [MIB] [SECONDS]",
                         **{"container-image": {"type": "docker", "image": "localhost/no-such-image:1"}})
    result = clowdr("local", descriptor, invocations({"a.json": {"message": "a"}}), provdir,
                    env={**docker_env, "DASK_CLOWDR__CONTAINER__PULL": "never"})
    assert result.returncode == 1, result.stderr
    summary = result.summary(0)
    assert (summary["failure"], summary["exitcode"], summary["container_id"]) == ("container-error", 125, None)
    assert "no-such-image" in (result.meta / "task-0-stderr.txt").read_text()
    assert "container-error: 1" in result.stderr                   # the terminal summary counts it


def test_a_tool_exiting_125_in_its_container_is_a_tool_error(clowdr, provdir, invocations, docker_env, tmp_path):
    descriptor = derived(tmp_path, "exit-125", "echo [MESSAGE] > [OUT]; echo [INFILE] [MIB] [SECONDS]; exit 125")
    result = clowdr("local", descriptor, invocations({"a.json": {"message": "a"}}), provdir, env=docker_env)
    summary = result.summary(0)
    assert (summary["failure"], summary["exitcode"]) == ("tool-error", 125) and summary["container_id"]


def test_missing_file_input_fails_only_its_task(clowdr, provdir, invocations, docker_env, tmp_path):
    """A setup error (missing automount source) fails its own task; the other tasks of the run still run."""
    missing = tmp_path / "nowhere" / "in.txt"
    folder = invocations({"a.json": {"message": "good"}, "b.json": {"message": "bad", "infile": str(missing)},
                          "c.json": {"message": "alsogood"}})
    result = clowdr("local", DOCKER_TOOL, folder, provdir, env=docker_env)
    assert result.returncode == 1, result.stderr
    summaries = result.summaries()
    assert [summaries[n]["status"] for n in range(3)] == ["succeeded", "failed", "succeeded"]
    assert summaries[1]["failure"] == "setup-error"
    assert "Missing local mount location" in summaries[1]["error"] and str(missing) in summaries[1]["error"]
    assert (Path(summaries[2]["workdir"]) / "alsogood.txt").is_file()


# -- environment variables that name an input ------------------------------------------------------

def test_environment_variable_from_input_default(clowdr, provdir, invocations, docker_env, tmp_path):
    """An environment variable whose value is an input's value-key takes that input's value, defaults included.

    ``bosh exec launch`` fills defaults first (addDefaultValues) and so exports TAG=the-default; the
    command line gets the default for the same reason. Checked here with the value given and omitted.
    """
    base = json.loads(DOCKER_TOOL.read_text())
    inputs = base["inputs"] + [{"id": "tag", "name": "tag", "type": "String", "value-key": "[TAG]",
                                "optional": True, "default-value": "the-default"}]
    desc = derived(tmp_path, "env-tool", "echo [MESSAGE] tag=$TAG > [OUT]; cat [INFILE]; id -u; "
                                         "dd if=/dev/zero bs=[MIB]M count=1 2>/dev/null | sleep [SECONDS]",
                   inputs=inputs, **{"environment-variables": [{"name": "TAG", "value": "[TAG]"}]})
    folder = invocations({"a.json": {"message": "given", "tag": "chosen"}, "b.json": {"message": "omitted"}})
    result = clowdr("local", desc, folder, provdir, env=docker_env)
    assert result.returncode == 0, result.stderr
    given, omitted = result.summary(0), result.summary(1)
    assert (Path(given["workdir"]) / "given.txt").read_text().split() == ["given", "tag=chosen"]
    assert "-e TAG='the-default'" in omitted["launch_command"], omitted["launch_command"]
    assert (Path(omitted["workdir"]) / "omitted.txt").read_text().split() == ["omitted", "tag=the-default"]


# -- relative --simg ---------------------------------------------------------------------------------

def test_relative_simg_is_relative_to_the_callers_directory(provdir, invocations, docker_host, tmp_path):
    """``--simg image.sif`` names a file in the user's directory (Boutiques makes --imagepath absolute
    against the cwd), not a file in each task's working directory."""
    (tmp_path / "image.sif").touch()
    inv = invocations({"s.json": {"message": "relsimg"}}) / "s.json"
    env = {"PATH": f"{FAKEBIN}{os.pathsep}{os.environ['PATH']}"}
    result = run_clowdr_in(tmp_path, "local", SINGULARITY_TOOL, inv, provdir, "--simg", "image.sif", env=env)
    summary = result.summary(0)
    assert summary["status"] == "succeeded", (summary["launch_command"], Path(summary["stderr"]).read_text())
    assert result.returncode == 0, result.stderr
    assert (Path(summary["workdir"]) / "relsimg.txt").is_file()


# -- setup errors leave the working directory clean -------------------------------------------------

def test_setup_error_leaves_no_container_script(clowdr, provdir, invocations, docker_env, tmp_path):
    """A task that never started (missing File input) must not leave clowdr's container script behind:
    after a run the script is removed, and a setup error should not differ."""
    missing = tmp_path / "nowhere" / "in.txt"
    inv = invocations({"b.json": {"message": "bad", "infile": str(missing)}}) / "b.json"
    result = clowdr("local", DOCKER_TOOL, inv, provdir, env=docker_env)
    assert result.returncode == 1, result.stderr
    summary = result.summary(0)
    assert summary["failure"] == "setup-error"
    left = sorted(p.name for p in Path(summary["workdir"]).glob("temp-*.localExec.boshjob.sh"))
    assert left == [], f"container script left in the task's working directory: {left}"
