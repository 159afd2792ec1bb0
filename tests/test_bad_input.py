"""Bad input, end to end through the real CLI: ``clowdr local DESCRIPTOR INVOCATION PROVDIR ...``.

The contract: ONE line on stderr naming the offending file (or option) and the field where there is
one, exit status 2, nothing on stdout, nothing launched (no Dask cluster started, no tool run), and the
provenance directory untouched (a new run creates no run directory; a rerun leaves every file of the
earlier run byte-for-byte as it was, mtimes included). Never a Python traceback.

"Nothing launched" is observed from outside the CLI: a ``sitecustomize`` put on PYTHONPATH records, at
exit of every Python process, whether ``distributed`` was imported (clowdr imports it only to start a
cluster). The earlier-run fixture checks that this probe does see a real launch.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterable, Sequence

import pytest

from conftest import EXAMPLES, ROOT, Result, run_clowdr, write_json

ECHO = EXAMPLES / "echo-tool.json"
HELLO = EXAMPLES / "invocations" / "hello.json"
SWEEP = EXAMPLES / "sweep.json"

PROBE_SOURCE = textwrap.dedent('''
    """Test probe (tests/test_bad_input.py): record at exit whether this process imported Dask's cluster code."""
    import atexit
    import os
    import sys

    _RECORD = os.environ.get("CLOWDR_TEST_PROBE")
    if _RECORD:
        def _clowdr_test_probe_report():
            launched = "distributed" in sys.modules
            with open(_RECORD, "a") as out:
                out.write(f"{os.getpid()} {'cluster' if launched else 'none'}\\n")
        atexit.register(_clowdr_test_probe_report)
''')


# -- helpers ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("probe")
    (directory / "sitecustomize.py").write_text(PROBE_SOURCE)
    return directory


def probe_env(probe_dir: Path, record: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(probe_dir), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "CLOWDR_TEST_PROBE": str(record)}


def probe_records(record: Path) -> list[str]:
    return record.read_text().split() if record.exists() else []


def snapshot(directory: Path) -> dict[str, Any]:
    """Every entry under ``directory`` (itself included): files by content and mtime, directories by mtime."""
    found: dict[str, Any] = {}
    for path in [directory, *sorted(directory.rglob("*"))]:
        info = path.lstat()
        key = str(path.relative_to(directory))
        if stat.S_ISDIR(info.st_mode):
            found[key] = ("dir", info.st_mtime_ns)
        elif stat.S_ISREG(info.st_mode):
            found[key] = ("file", path.read_bytes(), info.st_mtime_ns)
        else:
            found[key] = ("other", info.st_mtime_ns)
    return found


def describe_change(before: dict[str, Any], after: dict[str, Any]) -> str:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return f"added {added}, removed {removed}, changed {changed}"


Mention = str | tuple[str, ...]


def assert_mentions(line: str, mentions: Iterable[Mention]) -> None:
    for mention in mentions:
        options = (mention,) if isinstance(mention, str) else mention
        assert any(option in line for option in options), f"{' or '.join(map(repr, options))} not named in: {line!r}"


def run_wrapped(wrap: Sequence[str], *args: str | Path, env: dict[str, str], timeout: float) -> Result:
    """``run_clowdr`` inside WRAP (a command that ends by running the rest of its arguments)."""
    if not wrap:
        return run_clowdr(*args, env=env, timeout=timeout)
    done = subprocess.run([*wrap, sys.executable, "-m", "clowdr", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=timeout, cwd=ROOT, check=False)
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def refused(probe_dir: Path, provdir: Path, tmp_path: Path):
    """Run ``clowdr ARGS...`` and check the whole bad-input contract; return the stderr line.

    ``mentions``: strings the line must contain (a tuple: any one of them). ``watch``: the directory
    that must not change (default: the test's provdir). ``wrap``: a command to run clowdr in.
    """
    calls = iter(range(1000))

    def check(*args: str | Path, mentions: Iterable[Mention] = (), watch: Path | None = None,
              wrap: Sequence[str] = ()) -> str:
        watched = provdir if watch is None else watch
        record = tmp_path / f"probe-{next(calls)}.log"
        before = snapshot(watched)
        result = run_wrapped(wrap, *args, env=probe_env(probe_dir, record), timeout=120)
        after = snapshot(watched)
        everything = result.stdout + result.stderr
        if "Traceback" in everything:
            pytest.fail(f"a Python traceback (exit {result.returncode}) ending in: "
                        f"{result.stderr.strip().splitlines()[-1]}", pytrace=False)
        assert result.returncode == 2, f"exit {result.returncode}, expected 2; stderr:\n{result.stderr}"
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].strip(), f"expected exactly one non-empty stderr line, got {lines!r}"
        assert result.stdout == "", f"stdout should be empty, got {result.stdout!r}"
        assert after == before, f"{watched} was touched: {describe_change(before, after)}"
        launched = [r for r in probe_records(record) if r == "cluster"]
        assert probe_records(record), "probe saw no process exit (is sitecustomize loaded?)"
        assert not launched, f"a Dask cluster was started for bad input (stderr: {lines[0]!r})"
        assert_mentions(lines[0], mentions)
        return lines[0]

    return check


def field_named(name: str) -> tuple[str, ...]:
    """A field named in the line, quoted one way or another."""
    return (f"'{name}'", f'"{name}"', f"`{name}`", f"field {name}")


# -- the descriptor ------------------------------------------------------------------------------------------

NOT_JSON = {
    "truncated-text": b'{"name": "echo-tool", "command-line": "echo [MESSAGE]",\n',
    "binary": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\xfd",
}


@pytest.mark.parametrize("content", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_descriptor_not_json(refused, provdir, tmp_path, content):
    descriptor = tmp_path / "tool.json"
    descriptor.write_bytes(content)
    refused("local", descriptor, HELLO, provdir, mentions=[str(descriptor)])


def _echo_descriptor() -> dict[str, Any]:
    return json.loads(ECHO.read_text())


def _without_command_line() -> dict[str, Any]:
    descriptor = _echo_descriptor()
    del descriptor["command-line"]
    return descriptor


def _input_without_type() -> dict[str, Any]:
    descriptor = _echo_descriptor()
    del descriptor["inputs"][1]["type"]      # "repeat"
    return descriptor


@pytest.mark.parametrize("make, field", [(_without_command_line, "command-line"), (_input_without_type, "type")],
                         ids=["missing-command-line", "input-missing-type"])
def test_descriptor_valid_json_but_not_boutiques(refused, provdir, tmp_path, make, field):
    descriptor = write_json(tmp_path / "tool.json", make())
    refused("local", descriptor, HELLO, provdir, mentions=[str(descriptor), field_named(field)])


def test_descriptor_not_an_object(refused, provdir, tmp_path):
    descriptor = write_json(tmp_path / "tool.json", [_echo_descriptor()])
    refused("local", descriptor, HELLO, provdir, mentions=[str(descriptor)])


def test_descriptor_file_missing(refused, provdir, tmp_path):
    descriptor = tmp_path / "no-such-tool.json"
    refused("local", descriptor, HELLO, provdir, mentions=[str(descriptor)])


def test_descriptor_the_boutiques_validator_chokes_on_is_one_line_not_a_traceback(clowdr, provdir, tmp_path):
    """A descriptor the Boutiques schema accepts, but on which boutiques.validator raises KeyError('optional')
    (an output with a conditional-path-template and no "optional" key). Whatever clowdr decides about it
    (refuse it, or accept it), the user must get one line or a run, never a traceback."""
    descriptor = _echo_descriptor()
    descriptor["output-files"].append({"id": "extra", "name": "extra",
                                       "conditional-path-template": [{"repeat == 2": "twice.txt"},
                                                                     {"default": "once.txt"}]})
    path = write_json(tmp_path / "tool.json", descriptor)
    result = clowdr("local", path, HELLO, provdir, "--setup", timeout=120)
    if "Traceback" in result.stderr:
        pytest.fail(f"a Python traceback (exit {result.returncode}) ending in: "
                    f"{result.stderr.strip().splitlines()[-1]}", pytrace=False)
    assert result.returncode in (0, 2), result.stderr
    if result.returncode == 2:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and str(path) in lines[0], lines
        assert list(provdir.iterdir()) == []


# -- the invocation ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_invocation_not_json(refused, provdir, tmp_path, content):
    invocation = tmp_path / "inv.json"
    invocation.write_bytes(content)
    refused("local", ECHO, invocation, provdir, mentions=[str(invocation)])


def test_invocation_file_missing(refused, provdir, tmp_path):
    invocation = tmp_path / "no-such-invocation.json"
    refused("local", ECHO, invocation, provdir, mentions=[str(invocation)])


def test_invocation_missing_a_required_input(refused, provdir, tmp_path):
    invocation = write_json(tmp_path / "inv.json", {"repeat": 2})
    refused("local", ECHO, invocation, provdir, mentions=[str(invocation), field_named("message")])


def test_invocation_string_for_a_number(refused, provdir, tmp_path):
    invocation = write_json(tmp_path / "inv.json", {"message": "hi", "seconds": "ten"})
    refused("local", ECHO, invocation, provdir, mentions=[str(invocation), field_named("seconds")])


def test_invocation_unknown_input_id(refused, provdir, tmp_path):
    invocation = write_json(tmp_path / "inv.json", {"message": "hi", "colour": "red"})
    refused("local", ECHO, invocation, provdir, mentions=[str(invocation), field_named("colour")])


def test_invocation_unknown_input_id_with_a_newline_is_still_one_line(refused, provdir, tmp_path):
    """The message quotes user data; a key holding a line break must not split the one-line report."""
    invocation = write_json(tmp_path / "inv.json", {"message": "hi", "col\nour": "red"})
    refused("local", ECHO, invocation, provdir, mentions=[str(invocation), "our"])


def test_invocation_not_an_object(refused, provdir, tmp_path):
    invocation = write_json(tmp_path / "inv.json", ["message", "hi"])
    refused("local", ECHO, invocation, provdir, mentions=[str(invocation)])


MARKER_TOOL = {
    "name": "marker", "tool-version": "1", "schema-version": "0.5",
    "description": "Creates the file it is given: proof that the task ran.",
    "command-line": "touch [MARKER]; sleep [SECONDS]",
    "inputs": [
        {"id": "marker", "name": "marker", "type": "String", "value-key": "[MARKER]"},
        {"id": "seconds", "name": "seconds", "type": "Number", "value-key": "[SECONDS]", "optional": True,
         "default-value": 0},
    ],
}

BAD_IN_DIRECTORY = {
    "wrong-type": ({"marker": "unused", "seconds": "ten"}, "seconds"),
    "missing-required": ({"seconds": 1}, "marker"),
    "unknown-id": ({"marker": "unused", "colour": "red"}, "colour"),
    "not-json": (None, None),
}


@pytest.mark.parametrize("case", BAD_IN_DIRECTORY.keys())
def test_invalid_invocation_inside_a_directory(refused, provdir, tmp_path, invocations, case):
    """The line names the bad file; the valid ones before and after it are not launched either."""
    tool = write_json(tmp_path / "marker.json", MARKER_TOOL)
    ran = tmp_path / "ran"
    ran.mkdir()
    content, field = BAD_IN_DIRECTORY[case]
    directory = invocations({"a-first.json": {"marker": str(ran / "a")},
                             "c-last.json": {"marker": str(ran / "c")}})
    bad = directory / "b-bad.json"
    if content is None:
        bad.write_text('{"marker": ')
    else:
        write_json(bad, content)
    line = refused("local", tool, directory, provdir,
                   mentions=["b-bad.json", *([field_named(field)] if field else [])])
    assert "a-first.json" not in line and "c-last.json" not in line, line
    assert list(ran.iterdir()) == [], "a valid invocation of the directory was run"


# -- the provenance directory -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["missing", "a-file"])
def test_provdir_missing(refused, provdir, kind):
    """A provenance directory that does not exist (or is a file): refused before any cluster starts."""
    target = provdir / "runs"
    if kind == "a-file":
        target.write_text("not a directory\n")
    refused("local", ECHO, HELLO, target, mentions=[str(target)])
    assert (not target.exists()) if kind == "missing" else target.read_text() == "not a directory\n"


# -- --sweep -----------------------------------------------------------------------------------------------------

def test_sweep_on_a_directory_of_invocations(refused, provdir, invocations):
    directory = invocations({"one.json": {"message": ["a", "b"]}, "two.json": {"message": ["c"]}})
    refused("local", ECHO, directory, provdir, "--sweep", "message", mentions=["--sweep", str(directory)])


def test_sweep_of_a_parameter_not_in_the_descriptor(refused, provdir):
    refused("local", ECHO, SWEEP, provdir, "--sweep", "message", "--sweep", "colour",
            mentions=["--sweep", "colour", str(SWEEP)])


def test_sweep_of_a_parameter_whose_value_is_not_a_list(refused, provdir, tmp_path):
    invocation = write_json(tmp_path / "sweep.json", {"message": ["alpha", "beta"], "repeat": 2})
    refused("local", ECHO, invocation, provdir, "--sweep", "message", "--sweep", "repeat",
            mentions=[str(invocation), field_named("repeat")])


# -- --rerun --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory: pytest.TempPathFactory, probe_dir: Path) -> tuple[Path, str]:
    """A real, complete run of the echo tool in its own provdir (shared: every test checks it is unchanged)."""
    base = tmp_path_factory.mktemp("earlier")
    provdir = base / "prov"
    provdir.mkdir()
    record = base / "probe.log"
    result = run_clowdr("local", ECHO, HELLO, provdir, env=probe_env(probe_dir, record))
    assert result.returncode == 0, result.stderr
    assert "cluster" in probe_records(record), "the probe failed to notice a real launch"
    meta = result.meta
    assert (meta / "task-0-summary.json").is_file()
    return provdir, meta.parent.name


def test_rerun_without_run_id(refused, earlier_run):
    provdir, _ = earlier_run
    refused("local", ECHO, HELLO, provdir, "--rerun", "failed", mentions=[("--rerun", "-R"), "--run_id"],
            watch=provdir)


@pytest.mark.parametrize("run_id", ["2020-01-01_00-00-00-ABCDEFGH", "not-a-run"])
def test_rerun_with_an_unknown_run_id(refused, earlier_run, run_id):
    provdir, _ = earlier_run
    refused("local", ECHO, HELLO, provdir, "-R", "all", "--run_id", run_id, mentions=["--run_id", run_id],
            watch=provdir)


@pytest.mark.parametrize("bad, mention", [(["-g", "0"], ("--groupby", "-g")),
                                          (["-v", "/data"], ("--volumes", "-v")),
                                          (["-a", "time"], ("--clusterargs", "-a"))],
                         ids=["groupby-0", "volumes", "clusterargs"])
def test_rerun_of_a_real_run_with_a_bad_option_leaves_it_untouched(refused, earlier_run, bad, mention):
    provdir, run_id = earlier_run
    refused("local", ECHO, HELLO, provdir, "--rerun", "all", "--run_id", run_id, *bad, mentions=[mention],
            watch=provdir)


# -- other options --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value", [("--groupby", "0"), ("-g", "-3"), ("--groupby", "-3"), ("-g", "0")])
def test_groupby_not_positive(refused, provdir, flag, value):
    refused("local", ECHO, SWEEP, provdir, "--sweep", "message", "--sweep", "repeat", flag, value,
            mentions=[("--groupby", "-g"), value])


@pytest.mark.parametrize("value", ["/data", "/data:", ":/data"])
def test_volume_not_in_a_colon_b_form(refused, provdir, value):
    refused("local", ECHO, HELLO, provdir, "-v", "/tmp:/tmp", "--volumes", value,
            mentions=[("--volumes", "-v"), value])


@pytest.mark.parametrize("value, pair", [("time", "time"), ("time:4:00,mem", "mem")])
def test_clusterargs_pair_without_colon(refused, provdir, value, pair):
    line = refused("local", ECHO, HELLO, provdir, "-a", value, mentions=[("--clusterargs", "-a")])
    assert re.search(rf"['\"]{re.escape(pair)}['\"]", line), line


@pytest.mark.parametrize("scheduler, command", [("lsf", "bsub"), ("htcondor", "condor_submit")])
def test_a_scheduler_that_cannot_be_reached_from_here_is_refused(refused, provdir, scheduler, command):
    """Without its submit command, dask-jobqueue would retry forever; --setup still shows the job script."""
    if shutil.which(command):
        pytest.skip(f"{command} is installed here: the scheduler may well be reachable")
    line = refused("local", ECHO, HELLO, provdir, "-c", scheduler, mentions=[("--cluster", "-c")])
    assert command in line


# -- usage errors (argparse) -------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, mention", [
    (["local", ECHO, HELLO, "PROVDIR", "--no-such-option"], "--no-such-option"),
    (["local", ECHO, HELLO], "provdir"),
    (["local"], "descriptor"),
    (["local", ECHO, HELLO, "PROVDIR", "-g", "two"], ("--groupby", "-g")),
    (["local", ECHO, HELLO, "PROVDIR", "-R", "some"], ("--rerun", "-R")),
    (["local", ECHO, HELLO, "PROVDIR", "-c", "moab"], ("--cluster", "-c")),
    (["launch", ECHO, HELLO, "PROVDIR"], "launch"),
], ids=["unknown-option", "missing-provdir", "missing-everything", "groupby-not-int", "bad-rerun-choice",
        "bad-cluster-choice", "unknown-mode"])
def test_usage_error_exits_2_without_traceback(refused, provdir, args, mention):
    args = [provdir if a == "PROVDIR" else a for a in args]
    refused(*args, mentions=[mention])



# -- values no command line can carry --------------------------------------------------------------------------
#
# Linux limits one argument (and one environment string) to MAX_ARG_STRLEN = 131072 bytes, its NUL included, and
# a host tool's whole command line is ONE argument (``/bin/sh -c LINE``); a NUL byte ends a C string; a lone
# surrogate has no UTF-8 bytes. Such values used to pass validation and fail in the worker (a lone surrogate even
# killed the Dask worker, again and again).

MAX_ARG_STRLEN = 131072

VALUES_TOOL = {
    "name": "values", "tool-version": "1", "schema-version": "0.5",
    "description": "Creates the marker file (proof that it ran), then prints its other inputs.",
    "command-line": "touch [MARKER]; echo [TEXT] [INFILE] [FILES] [COUNT]",
    "inputs": [
        {"id": "marker", "name": "marker", "type": "String", "value-key": "[MARKER]"},
        {"id": "text", "name": "text", "type": "String", "value-key": "[TEXT]", "optional": True},
        {"id": "infile", "name": "infile", "type": "File", "value-key": "[INFILE]", "optional": True},
        {"id": "files", "name": "files", "type": "File", "list": True, "value-key": "[FILES]", "optional": True},
        {"id": "count", "name": "count", "type": "Number", "value-key": "[COUNT]", "optional": True},
    ],
}

#: field -> its value as JSON text (lone surrogates can only be written so), for every kind of value a command
#: line cannot carry, in a String input, a File input and a list element of a File list.
UNREACHABLE = {
    "nul-in-string": ("text", r'"a\u0000b"'),
    "nul-in-file": ("infile", r'"data/a\u0000.txt"'),
    "nul-in-list-element": ("files", r'["ok.txt", "b\u0000.txt"]'),
    "high-surrogate-in-string": ("text", r'"a\ud800b"'),
    "low-surrogate-in-file": ("infile", r'"data/\udc80.txt"'),        # would pass as a raw byte (surrogateescape)
    "surrogate-in-list-element": ("files", r'["ok.txt", "\udfff"]'),
    "over-128KiB-string": ("text", json.dumps("x" * MAX_ARG_STRLEN)),
    "over-128KiB-in-bytes-not-characters": ("text", json.dumps("é" * (MAX_ARG_STRLEN // 2))),
    "over-128KiB-list-element": ("files", json.dumps(["ok.txt", "y" * MAX_ARG_STRLEN])),
}


def _values_case(tmp_path: Path, values: str) -> tuple[Path, Path, Path]:
    """The values tool, an invocation holding VALUES (JSON text of its other fields) and the marker it would create."""
    tool = write_json(tmp_path / "values.json", VALUES_TOOL)
    marker = tmp_path / "ran"
    invocation = tmp_path / "inv.json"
    invocation.write_text(f'{{"marker": {json.dumps(str(marker))}, {values}}}')
    return tool, invocation, marker


@pytest.mark.parametrize("case", UNREACHABLE.keys())
def test_a_value_no_command_line_can_carry_is_refused(refused, provdir, tmp_path, case):
    field, value = UNREACHABLE[case]
    tool, invocation, marker = _values_case(tmp_path, f'"{field}": {value}')
    refused("local", tool, invocation, provdir, mentions=[str(invocation), field_named(field)])
    assert not marker.exists()


def _quotes(size: int) -> str:
    return json.dumps("'" * size)


#: command lines over the limit though every value is under it: shell quoting (a ' becomes 5 bytes), a value
#: the template repeats, many list elements, two fields together (the larger one is named).
TOO_LONG = {
    "quoting": (1, '"text": ' + json.dumps("'" * 30_000), "text"),
    "repeated-key": (4, '"text": ' + json.dumps("t" * 40_000), "text"),
    "many-list-elements": (1, '"files": ' + json.dumps([f"sub-{n:05d}/anat/T1w.nii.gz" for n in range(6000)]),
                           "files"),
    "two-fields": (1, '"text": ' + json.dumps("t" * 50_000) + ', "infile": ' + json.dumps("f" * 90_000), "infile"),
}


@pytest.mark.parametrize("case", TOO_LONG.keys())
def test_a_command_line_over_128KiB_is_refused_naming_the_field(refused, provdir, tmp_path, case):
    repeats, values, field = TOO_LONG[case]
    tool, invocation, marker = _values_case(tmp_path, values)
    line = VALUES_TOOL["command-line"].replace("[TEXT]", " ".join(["[TEXT]"] * repeats))
    write_json(tool, dict(VALUES_TOOL, **{"command-line": line}))
    refused_line = refused("local", tool, invocation, provdir, mentions=[str(invocation), field_named(field)])
    assert str(MAX_ARG_STRLEN - 1) in refused_line, refused_line
    assert not marker.exists()


ECHO_TEXT = {
    "name": "echo-text", "tool-version": "1", "schema-version": "0.5", "description": "Prints its text.",
    "command-line": "echo [TEXT]",
    "inputs": [{"id": "text", "name": "text", "type": "String", "value-key": "[TEXT]"}],
}


def test_the_limit_is_exact_a_command_line_of_131071_bytes_runs(clowdr, refused, provdir, tmp_path):
    """Measured with a real spawn: the longest command line /bin/sh -c accepts runs; one byte more is refused.
    (Letters need no shell quotes: the line is 'echo ' and the text.)"""
    tool = write_json(tmp_path / "echo.json", ECHO_TEXT)
    text = "x" * (MAX_ARG_STRLEN - 1 - len("echo "))
    longest = write_json(tmp_path / "longest.json", {"text": text})
    result = clowdr("local", tool, longest, provdir, timeout=240)
    assert result.returncode == 0, result.stderr
    assert result.summary(0)["exitcode"] == 0
    assert len(result.summary(0)["command"].encode()) == MAX_ARG_STRLEN - 1
    assert (result.meta / "task-0-stdout.txt").read_text() == text + "\n"
    over = write_json(tmp_path / "over.json", {"text": text + "x"})
    refused("local", tool, over, provdir, mentions=[str(over), field_named("text")])


def test_a_container_tool_runs_its_long_command_line_from_a_script(clowdr, provdir, tmp_path):
    """A container tool's command line goes into a script file, not an argument: only its values are limited."""
    docker_tool = Path(__file__).parent / "data" / "docker-tool.json"
    invocation = write_json(tmp_path / "inv.json", {"message": "m" * 70_000})     # twice on the line: 140 KB
    result = clowdr("local", docker_tool, invocation, provdir, "--setup", timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_rerun_checks_its_invocations_too(refused, provdir, tmp_path):
    """An earlier run's invocation copy edited to hold a NUL: the rerun is refused, the run left as it was."""
    tool, invocation, _ = _values_case(tmp_path, '"text": "fine"')
    setup = run_clowdr("local", tool, invocation, provdir, "--setup")
    assert setup.returncode == 0, setup.stderr
    copy = setup.meta / "inv.json"
    copy.write_text(copy.read_text().replace('"fine"', r'"fi\u0000ne"'))
    refused("local", tool, invocation, provdir, "--rerun", "all", "--run_id", setup.meta.parent.name,
            mentions=[str(copy), field_named("text")])


# -- --sweep, once more ----------------------------------------------------------------------------------------------

def test_the_same_sweep_id_twice(refused, provdir, tmp_path):
    """--sweep message --sweep message used to run every value three times (a product of the list with itself)."""
    invocation = write_json(tmp_path / "sweep.json", {"message": ["alpha", "beta", "gamma"]})
    refused("local", ECHO, invocation, provdir, "--sweep", "message", "--sweep", "message",
            mentions=["--sweep", field_named("message")])


# -- clowdr share: what it cannot serve or write ----------------------------------------------------------------

def test_share_export_to_a_directory(refused, earlier_run, tmp_path):
    provdir, _ = earlier_run
    target = tmp_path / "reports"
    target.mkdir()
    refused("share", provdir, "--export", target, mentions=[str(target), "directory"], watch=provdir)
    assert list(target.iterdir()) == []


@pytest.fixture
def read_only(tmp_path: Path):
    """``read_only(DIR)``: a command to run clowdr in so that DIR is read-only for it (root: a read-only bind
    mount in a mount namespace of its own; otherwise DIR loses its write permission for the test)."""
    changed: list[tuple[Path, int]] = []

    def make(directory: Path) -> list[str]:
        if os.geteuid() != 0:
            changed.append((directory, directory.stat().st_mode))
            directory.chmod(0o555)
            return []
        if not shutil.which("unshare") or subprocess.run(["unshare", "--mount", "true"], check=False).returncode:
            pytest.skip("no mount namespace here to make a directory read-only for root")
        script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
        return ["unshare", "--mount", "sh", "-c", script, str(directory)]

    yield make
    for directory, mode in changed:
        directory.chmod(mode)


def test_share_export_into_a_read_only_provdir(refused, earlier_run, read_only):
    provdir, _ = earlier_run
    target = provdir / "report.html"
    refused("share", provdir, "--export", target, mentions=[str(target), "read-only"], watch=provdir,
            wrap=read_only(provdir))


def test_share_on_a_busy_port(refused, earlier_run):
    provdir, _ = earlier_run
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        refused("share", provdir, "--port", port, mentions=["--port", port, "in use"], watch=provdir)


def _not_an_address_here() -> str:
    """An IPv4 address of no interface of this machine (TEST-NET-3): binding it fails here, nothing is sent."""
    import psutil

    own = {a.address for addresses in psutil.net_if_addrs().values() for a in addresses}
    return next(f"203.0.113.{n}" for n in range(1, 255) if f"203.0.113.{n}" not in own)


@pytest.mark.parametrize("port", [[], ["--port", "8050"]], ids=["free-port", "given-port"])
def test_share_on_an_address_that_cannot_be_bound(refused, earlier_run, port):
    provdir, _ = earlier_run
    address = _not_an_address_here()
    refused("share", provdir, "--host", address, *port, mentions=["--host", address], watch=provdir)


def test_a_key_holding_a_line_separator_is_still_one_line(refused, provdir, tmp_path):
    """Not only \\n: str.splitlines() and terminals break at U+2028 and the other separators too."""
    invocation = tmp_path / "inv.json"
    invocation.write_text(r'{"message": "hi", "col\u2028our\u0085s\u000b": "red"}')
    refused("local", ECHO, invocation, provdir, mentions=[str(invocation), "our"])


def test_local_into_a_read_only_provdir(refused, provdir, read_only):
    """A read-only provenance directory is refused before anything starts: one line, nothing launched."""
    line = refused("local", ECHO, HELLO, provdir, mentions=[str(provdir)], wrap=read_only(provdir))
    assert "cannot be written" in line
