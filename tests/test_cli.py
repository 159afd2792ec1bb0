"""The command line and the Python API keep the original tool's interface (clowdr 0.1.2), and stay light.

Parsing is checked on ``clowdr.driver.makeparser()`` directly; speed, imports and the not-yet-available
modes are checked in fresh processes, as a user meets them.
"""
from __future__ import annotations

import inspect
import json
import subprocess
import sys
import time
from typing import Any

import pytest

import clowdr.driver as driver
from conftest import ROOT

HEAVY = ["dask", "distributed", "panel", "bokeh", "boto3", "s3fs", "dask_cloudprovider", "boutiques"]


def parse(*argv: str) -> dict[str, Any]:
    namespace = driver.makeparser().parse_args(list(argv))
    return {k: v for k, v in vars(namespace).items() if k != "func"}


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        driver.makeparser().parse_args(list(argv))
    assert exc.value.code == 2
    return capsys.readouterr().err


def python(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


# -- clowdr local --------------------------------------------------------------------------------------------------

LOCAL_POSITIONALS = ["tool.json", "invocations/", "prov/"]

LOCAL_DEFAULTS = {
    "mode": "local", "descriptor": "tool.json", "invocation": "invocations/", "provdir": "prov/",
    "verbose": False, "dev": False, "workdir": None, "volumes": None, "groupby": None, "sweep": None,
    "setup": False, "cluster": None, "clusterargs": None, "jobname": None, "simg": None, "user": False,
    "rerun": None, "run_id": None, "s3": None, "bids": False, "retries": None,
}


def test_local_positionals_and_defaults():
    assert parse("local", *LOCAL_POSITIONALS) == LOCAL_DEFAULTS


LOCAL_OPTIONS = [
    # (long form, short form or None, expected values)
    (["--verbose"], ["-V"], {"verbose": True}),
    (["--dev"], ["-d"], {"dev": True}),
    (["--workdir", "/scratch/w"], ["-w", "/scratch/w"], {"workdir": "/scratch/w"}),
    (["--volumes", "/data:/data"], ["-v", "/data:/data"], {"volumes": ["/data:/data"]}),
    (["--volumes", "/a:/b", "--volumes", "/c:/d:ro"], ["-v", "/a:/b", "-v", "/c:/d:ro"],
     {"volumes": ["/a:/b", "/c:/d:ro"]}),
    (["--groupby", "4"], ["-g", "4"], {"groupby": 4}),
    (["--sweep", "message"], None, {"sweep": ["message"]}),
    (["--sweep", "message", "--sweep", "repeat"], None, {"sweep": ["message", "repeat"]}),
    (["--setup"], None, {"setup": True}),
    (["--cluster", "slurm"], ["-c", "slurm"], {"cluster": "slurm"}),
    (["--clusterargs", "time:4:00,mem:2048,account:ABC"], ["-a", "time:4:00,mem:2048,account:ABC"],
     {"clusterargs": "time:4:00,mem:2048,account:ABC"}),
    (["--jobname", "myjob"], ["-n", "myjob"], {"jobname": "myjob"}),
    (["--simg", "tool.simg"], ["-s", "tool.simg"], {"simg": "tool.simg"}),
    (["--user"], ["-u"], {"user": True}),
    (["--rerun", "all", "--run_id", "2024-01-02_03-04-05-ABCD1234"],
     ["-R", "all", "--run_id", "2024-01-02_03-04-05-ABCD1234"],
     {"rerun": "all", "run_id": "2024-01-02_03-04-05-ABCD1234"}),
    (["--rerun", "failed"], ["-R", "failed"], {"rerun": "failed"}),
    (["--rerun", "incomplete"], ["-R", "incomplete"], {"rerun": "incomplete"}),
    (["--s3", "s3://bucket/data"], None, {"s3": "s3://bucket/data"}),
    (["--bids"], ["-b"], {"bids": True}),
]


@pytest.mark.parametrize("long, short, values", LOCAL_OPTIONS, ids=[" ".join(o[0]) for o in LOCAL_OPTIONS])
def test_local_option_long_and_short(long, short, values):
    expected = {**LOCAL_DEFAULTS, **values}
    assert parse("local", *LOCAL_POSITIONALS, *long) == expected
    if short is not None:
        assert parse("local", *LOCAL_POSITIONALS, *short) == expected
    # options may also come before the positionals, as in the original tool
    assert parse("local", *(short or long), *LOCAL_POSITIONALS) == expected


def test_local_everything_at_once_in_short_forms():
    got = parse("local", *LOCAL_POSITIONALS, "-V", "-d", "-w", "w", "-v", "a:b", "-v", "c:d", "-g", "2",
                "--sweep", "x", "--sweep", "y", "--setup", "-c", "slurm", "-a", "time:1:00", "-n", "j", "-s", "i.simg",
                "-u", "-R", "failed", "--run_id", "RID", "--s3", "s3://b/p", "-b")
    assert got == {**LOCAL_DEFAULTS, "verbose": True, "dev": True, "workdir": "w", "volumes": ["a:b", "c:d"],
                   "groupby": 2, "sweep": ["x", "y"], "setup": True, "cluster": "slurm", "clusterargs": "time:1:00",
                   "jobname": "j", "simg": "i.simg", "user": True, "rerun": "failed", "run_id": "RID",
                   "s3": "s3://b/p", "bids": True}


@pytest.mark.parametrize("argv, option", [
    (["-c", "moab"], "--cluster"),
    (["--cluster", "local"], "--cluster"),
    (["-R", "some"], "--rerun"),
    (["--rerun", "ALL"], "--rerun"),
    (["-g", "two"], "--groupby"),
    (["-g", "1.5"], "--groupby"),
], ids=["cluster-moab", "cluster-local", "rerun-some", "rerun-ALL", "groupby-word", "groupby-float"])
def test_local_choices_and_types_are_enforced(capsys, argv, option):
    err = refused(capsys, "local", *LOCAL_POSITIONALS, *argv)
    assert option in err and len(err.splitlines()) == 1, err


def test_local_needs_its_three_positionals(capsys):
    assert "provdir" in refused(capsys, "local", "tool.json", "inv.json")
    assert "descriptor" in refused(capsys, "local")


def test_local_help_lists_every_option():
    done = python("-m", "clowdr", "local", "--help")
    assert done.returncode == 0, done.stderr
    for flag in ["--verbose", "-V", "--dev", "-d", "--workdir", "-w", "--volumes", "-v", "--groupby", "-g",
                 "--sweep", "--setup", "--cluster", "-c", "slurm", "--clusterargs", "-a", "--jobname", "-n",
                 "--simg", "-s", "--user", "-u", "--rerun", "-R", "all", "failed", "incomplete", "--run_id", "--s3",
                 "--bids", "-b", "descriptor", "invocation", "provdir"]:
        assert flag in done.stdout, flag


# -- clowdr cloud ----------------------------------------------------------------------------------------------------

CLOUD_POSITIONALS = ["tool.json", "inv.json", "s3://bucket/prov", "s3://bucket/data", "aws", "creds.csv"]
CLOUD_DEFAULTS = {"mode": "cloud", "descriptor": "tool.json", "invocation": "inv.json", "provdir": "s3://bucket/prov",
                  "s3": "s3://bucket/data", "cloud": "aws", "credentials": "creds.csv", "verbose": False,
                  "dev": False, "region": "us-east-1", "sweep": None, "bids": False, "setup": False}

CLOUD_OPTIONS = [
    (["--verbose"], ["-V"], {"verbose": True}),
    (["--dev"], ["-d"], {"dev": True}),
    (["--region", "eu-west-1"], ["-r", "eu-west-1"], {"region": "eu-west-1"}),
    (["--region", "ca-central-1"], ["-r", "ca-central-1"], {"region": "ca-central-1"}),
    (["--sweep", "a", "--sweep", "b"], None, {"sweep": ["a", "b"]}),
    (["--bids"], ["-b"], {"bids": True}),
]


def test_cloud_positionals_and_defaults():
    assert parse("cloud", *CLOUD_POSITIONALS) == CLOUD_DEFAULTS


@pytest.mark.parametrize("long, short, values", CLOUD_OPTIONS, ids=[" ".join(o[0]) for o in CLOUD_OPTIONS])
def test_cloud_option_long_and_short(long, short, values):
    expected = {**CLOUD_DEFAULTS, **values}
    assert parse("cloud", *CLOUD_POSITIONALS, *long) == expected
    if short is not None:
        assert parse("cloud", *CLOUD_POSITIONALS, *short) == expected


def test_cloud_accepts_only_aws(capsys):
    positionals = list(CLOUD_POSITIONALS)
    positionals[4] = "gcp"
    assert "cloud" in refused(capsys, "cloud", *positionals)
    assert "credentials" in refused(capsys, "cloud", *CLOUD_POSITIONALS[:5])


# -- clowdr share and clowdr task ------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, values", [
    ([], {}),
    (["--debug"], {"debug": True}), (["-d"], {"debug": True}),
    (["--verbose"], {"verbose": True}), (["-V"], {"verbose": True}),
    (["-d", "-V"], {"debug": True, "verbose": True}),
])
def test_share_options(argv, values):
    assert parse("share", "prov/", *argv) == {"mode": "share", "provdir": "prov/", "debug": False, "verbose": False,
                                              "host": "127.0.0.1", "port": 0, "export": None, **values}


def test_share_serving_options():
    assert parse("share", "prov/", "--host", "0.0.0.0", "--port", "8080", "--export", "out.html") == {
        "mode": "share", "provdir": "prov/", "debug": False, "verbose": False, "host": "0.0.0.0", "port": 8080,
        "export": "out.html"}


TASK_DEFAULTS = {"mode": "task", "verbose": False, "provdir": None, "local": False, "workdir": None, "volumes": None}


@pytest.mark.parametrize("long, short, values", [
    (["--verbose"], ["-V"], {"verbose": True}),
    (["--provdir", "out/"], ["-p", "out/"], {"provdir": "out/"}),
    (["--local"], ["-l"], {"local": True}),
    (["--workdir", "w/"], ["-w", "w/"], {"workdir": "w/"}),
    (["--volumes", "/a:/b", "--volumes", "/c:/d"], ["-v", "/a:/b", "-v", "/c:/d"], {"volumes": ["/a:/b", "/c:/d"]}),
], ids=["verbose", "provdir", "local", "workdir", "volumes"])
def test_task_options_long_and_short(long, short, values):
    for form in (long, short):
        assert parse("task", "run/clowdr/task-0.json", *form) == {**TASK_DEFAULTS, "tasklist": ["run/clowdr/task-0.json"],
                                                                  **values}


def test_task_takes_one_or_more_task_files(capsys):
    assert parse("task", "a/task-0.json", "a/task-3.json", "-l")["tasklist"] == ["a/task-0.json", "a/task-3.json"]
    assert "tasklist" in refused(capsys, "task")


def test_the_four_modes_and_nothing_else(capsys):
    assert "launch" in refused(capsys, "launch", "x")
    done = python("-m", "clowdr", "--help")
    for mode in ("local", "cloud", "share", "task"):
        assert mode in done.stdout


# -- fresh processes: help, speed, imports, not-yet-available modes ------------------------------------------------------

@pytest.mark.parametrize("argv", [["--help"], ["local", "--help"]], ids=["clowdr --help", "clowdr local --help"])
def test_help_is_fast(argv):
    """Defect 9 of the original tool: --help took 0.8 s because every command imported the dashboard stack."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        done = python("-m", "clowdr", *argv)
        times.append(time.perf_counter() - started)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage: clowdr") and done.stderr == ""
    assert min(times) < 0.5, f"best of 3: {min(times):.3f} s ({', '.join(f'{t:.3f}' for t in times)})"


@pytest.mark.parametrize("module", ["clowdr.cli", "clowdr.driver"])
def test_parser_imports_nothing_heavy(module):
    code = (f"import json, sys, {module} as m; m.makeparser(); "
            f"print(json.dumps(sorted({{n.split('.')[0] for n in sys.modules}} & set({HEAVY!r}))))")
    done = python("-c", code)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_python_m_clowdr_help_works():
    done = python("-m", "clowdr", "--help")
    assert done.returncode == 0 and "usage: clowdr" in done.stdout and "Traceback" not in done.stderr


def test_no_arguments_prints_help():
    done = python("-m", "clowdr")
    assert "Traceback" not in done.stderr
    assert done.stdout.startswith("usage: clowdr")
    for mode in ("local", "cloud", "share", "task"):
        assert mode in done.stdout


@pytest.mark.parametrize("argv", [
    ["cloud", "tool.json", "inv.json", "s3://bucket/prov", "s3://bucket/data", "aws", "creds.csv"],
    ["cloud", "tool.json", "inv.json", "s3://b/p", "s3://b/d", "aws", "creds.csv", "-r", "eu-west-2", "-V", "-d"],
])
def test_cloud_with_a_missing_credentials_file_is_one_line(argv):
    done = python("-m", "clowdr", *argv)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "clowdr cloud" in lines[0] and "creds.csv" in lines[0], lines


@pytest.mark.parametrize("argv", [["share", "somedir"], ["share", "somedir", "-d", "-V"]])
def test_share_of_a_missing_directory_is_one_line(argv):
    done = python("-m", "clowdr", *argv)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "somedir" in lines[0], lines


def test_main_returns_the_exit_status(capsys):
    assert driver.main(["cloud", "t.json", "i.json", "s3://b/p", "s3://b/d", "aws", "c.csv"]) == 2
    err = capsys.readouterr().err
    assert "c.csv" in err and len(err.splitlines()) == 1


# -- the Python API --------------------------------------------------------------------------------------------------

P = inspect.Parameter
EMPTY = P.empty
SIGNATURES = {
    "local": [("descriptor", EMPTY), ("invocation", EMPTY), ("provdir", EMPTY), ("backoff_time", 36000),
              ("sweep", "any"), ("verbose", False), ("workdir", None), ("simg", None), ("rerun", None),
              ("run_id", None), ("volumes", None), ("s3", None), ("cluster", None), ("jobname", None),
              ("clusterargs", None), ("dev", False), ("groupby", 1), ("user", False), ("setup", False),
              ("bids", False), ("**kwargs", None)],
    "cloud": [("descriptor", EMPTY), ("invocation", EMPTY), ("provdir", EMPTY), ("s3", EMPTY), ("cloud", EMPTY),
              ("credentials", EMPTY), ("**kwargs", None)],
    "share": [("provdir", EMPTY), ("**kwargs", None)],
    "runtask": [("tasklist", EMPTY), ("**kwargs", None)],
    "main": [("args", None)],
    "makeparser": [],
}


@pytest.mark.parametrize("name", SIGNATURES)
def test_python_api_keeps_the_original_signatures(name):
    function = getattr(driver, name, None)
    assert callable(function), f"clowdr.driver.{name} is missing"
    params = list(inspect.signature(function).parameters.values())
    expected = SIGNATURES[name]
    got = [f"**{p.name}" if p.kind is P.VAR_KEYWORD else p.name for p in params]
    assert got == [n for n, _ in expected]
    for param, (_, default) in zip(params, expected):
        if param.kind is P.VAR_KEYWORD:
            continue
        assert param.kind is P.POSITIONAL_OR_KEYWORD, param
        if default == "any":
            assert param.default is not EMPTY and not param.default, param   # optional, empty by default
        elif default is EMPTY:
            assert param.default is EMPTY, param
        else:
            assert param.default == default and type(param.default) is type(default), param


def test_makeparser_returns_the_parser():
    parser = driver.makeparser()
    assert parser.prog == "clowdr"
    assert parser.parse_args(["share", "p"]).mode == "share"


def test_commands_read_every_configuration_file_the_same_through_libyaml():
    """clowdr's commands parse YAML with libyaml (clowdr.lean): Dask's, distributed's, the back-ends' and clowdr's
    defaults and ~/.config/dask must come out exactly as PyYAML's own parser reads them."""
    script = ("import json, sys\n"
              "from clowdr.lean import parse_yaml_in_c\n"
              "if sys.argv[1] == 'c':\n"
              "    parse_yaml_in_c()\n"
              "import yaml, dask.config, distributed, dask_jobqueue, dask_cloudprovider, clowdr.config\n"
              "clowdr.config.get('monitor')\n"
              "print(yaml.safe_load.__module__)\n"
              "print(json.dumps(dask.config.config, sort_keys=True, default=repr))\n")
    read = {how: subprocess.run([sys.executable, "-c", script, how], capture_output=True, text=True, check=True,
                                cwd=ROOT).stdout.split("\n", 1) for how in ("c", "python")}
    assert read["c"][0] == "clowdr.lean" and read["python"][0] == "yaml"
    assert read["c"][1] == read["python"][1] and "clowdr" in json.loads(read["c"][1])


def test_a_setting_made_before_clowdrs_defaults_were_read_does_not_take_them_away():
    """``dask.config.set`` removes, as it ends, a key it made: made before clowdr read its defaults (a notebook
    setting one clowdr key before anything of clowdr ran), that took every default under it for good."""
    script = ("import dask.config, clowdr.config\n"
              "with dask.config.set({'clowdr.setup.spread-from': 2}):\n"
              "    assert clowdr.config.get('setup.spread-from') == 2\n"
              "print(clowdr.config.get('setup.spread-from'), clowdr.config.get('worker.log-chunk'))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["10000", "65536"]
