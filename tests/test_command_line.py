"""Differential test: clowdr's command lines against Boutiques' own (``bosh exec simulate``).

``clowdr.command.CommandBuilder`` reuses Boutiques' substitution code on a prebuilt executor so that
building a command costs microseconds instead of a full ``bosh exec`` start-up. Its contract is to
produce *exactly* what Boutiques produces. This file checks that contract against Boutiques itself,
on a corpus of (descriptor, invocation) pairs:

* ``boutiques:``    descriptors shipped inside the installed boutiques package (``schema/examples/*``
                    and ``tests/*``), each paired with the invocation files next to it that
                    ``bosh invocation`` accepts for it;
* ``bosh-example:`` for every valid shipped descriptor, the invocations ``bosh example`` (minimal and
                    ``--complete``) generates with a fixed random seed: this reaches descriptors that
                    ship without an invocation (configuration files, conditional outputs, ...);
* ``clowdr:``       the project's ``examples/echo-tool.json`` with ``examples/invocations/*.json``, and
                    ``tests/data/*.json`` with the small invocations written below;
* ``synthetic:``    two small descriptors written below for what the shipped corpus does not reach
                    (``uses-absolute-path``, awkward shell quoting).

The expected command is always what ``bosh exec simulate DESCRIPTOR -i INVOCATION`` prints, run
in-process in a temporary working directory (simulate writes configuration files into its cwd).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

import boutiques
import pytest
from boutiques.localExec import LocalExecutor

from clowdr.command import CommandBuilder

BOUTIQUES = Path(boutiques.__file__).resolve().parent
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
EXAMPLES = ROOT / "examples"
SEED = 20240601

# Small invocations for the project's own test descriptors (tests/data/*.json) and example tool.
DATA_INVOCATIONS: dict[str, list[dict[str, Any]]] = {
    "alloc.json": [{"mib": 0, "seconds": 0}, {"mib": 64, "seconds": 1.5}],
    "bidsapp.json": [
        {"bids_dir": "/data/ds001", "output_dir": "/out", "analysis_level": "participant",
         "participant_label": ["01", "02"], "session_label": ["pre", "post op"]},
        {"bids_dir": "ds with space", "output_dir": "out", "analysis_level": "group"},
    ],
    "bigout.json": [{"bytes": 1048576}],
    "docker-tool.json": [
        {"message": "hello"},
        {"message": "it's $HOME", "infile": "in put.txt", "mib": 8, "seconds": 0.25},
    ],
    "singularity-tool.json": [
        {"message": "hello"},
        {"message": "semi; colon", "infile": "data/in.txt", "mib": 2, "seconds": 3},
    ],
    "sleep.json": [{"seconds": 0}, {"seconds": 2.5, "code": 7}],
}
ECHO_INVOCATIONS: list[dict[str, Any]] = [
    {"message": "multi word; echo injected", "repeat": 2, "seconds": 0.1, "fail": False, "outname": "sub dir/out"},
    {"message": "\u00fcn\u00efc\u00f8d\u00e9 \"quotes\" `tick`", "fail": True},
]

# Descriptors for what the shipped corpus lacks.
SYNTHETIC: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    "abs-paths": (
        {
            "name": "abs-paths", "tool-version": "1", "schema-version": "0.5",
            "description": "An absolute configuration file path, stripped extensions, flagged lists.",
            "command-line": "tool [IN] [CONF] [OUT] [NUMS] [VERBOSE]",
            "inputs": [
                {"id": "infile", "name": "in", "type": "File", "value-key": "[IN]"},
                {"id": "nums", "name": "nums", "type": "Number", "list": True, "optional": True,
                 "command-line-flag": "--nums", "command-line-flag-separator": "=", "list-separator": ",",
                 "value-key": "[NUMS]"},
                {"id": "verbose", "name": "verbose", "type": "Flag", "optional": True,
                 "command-line-flag": "-v", "value-key": "[VERBOSE]"},
            ],
            "output-files": [
                {"id": "conf", "name": "conf", "path-template": "conf/[IN].cfg", "value-key": "[CONF]",
                 "uses-absolute-path": True, "path-template-stripped-extensions": [".nii.gz"],
                 "file-template": ["in=[IN]", "nums=[NUMS]"]},
                {"id": "out", "name": "out", "path-template": "[IN]-result.txt", "value-key": "[OUT]",
                 "path-template-stripped-extensions": [".nii.gz"]},
            ],
        },
        [{"infile": "data/sub 1.nii.gz", "nums": [1, 2.5], "verbose": True}, {"infile": "x.nii.gz"}],
    ),
    "quoting": (
        {
            "name": "quoting", "tool-version": "1", "schema-version": "0.5",
            "description": "Values that need shell quoting, in the command line and in a configuration file.",
            "command-line": "printf '%s\\n' [TEXT] [NAMES] [EMPTY] [N] > [LOG]; cat [CFG]",
            "inputs": [
                {"id": "text", "name": "text", "type": "String", "value-key": "[TEXT]"},
                {"id": "names", "name": "names", "type": "String", "list": True, "optional": True,
                 "command-line-flag": "-n", "value-key": "[NAMES]"},
                {"id": "empty", "name": "empty", "type": "String", "optional": True, "value-key": "[EMPTY]"},
                {"id": "n", "name": "n", "type": "Number", "optional": True, "default-value": 3,
                 "command-line-flag": "-N", "command-line-flag-separator": "", "value-key": "[N]"},
            ],
            "output-files": [
                {"id": "log", "name": "log", "path-template": "logs/[TEXT].log", "value-key": "[LOG]"},
                {"id": "cfg", "name": "cfg", "path-template": "quoting.cfg", "value-key": "[CFG]",
                 "file-template": ["text = [TEXT]", "names = [NAMES]", "n = [N]"]},
            ],
        },
        [
            {"text": "it's a \"test\" $HOME `id`; rm -rf / && echo *", "names": ["a b", "", "\u00e9t\u00e9"],
             "empty": "", "n": 0},
            {"text": "plain", "n": 1e-07},
            {"text": "tab\there\nnewline"},
        ],
    ),
}


# --------------------------------------------------------------------------------------------------
# Running Boutiques quietly
# --------------------------------------------------------------------------------------------------

def _bosh(*args: str) -> tuple[Any, str]:
    """Run ``bosh ARGS`` in-process: (its return value, its stdout); stderr is discarded. Raises what bosh raises."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        value = boutiques.bosh(list(args))
    return value, out.getvalue()


def _accepts(descriptor: str, invocation: str) -> bool:
    """Whether ``bosh invocation DESCRIPTOR -i INVOCATION`` accepts the pair (the pairing rule)."""
    try:
        _bosh("invocation", descriptor, "-i", invocation)
    except (Exception, SystemExit):
        return False
    return True


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _simulate_in(desc: Path, inv: Path, cwd: Path) -> tuple[str, dict[str, str]]:
    """What ``bosh exec simulate DESC -i INV`` prints when run in ``cwd`` (the command), and the output
    paths of the executor that printed it (``out_dict``, seen on the way through ``printCmdLine``)."""
    seen: dict[str, str] = {}
    original = LocalExecutor.printCmdLine

    def spy(executor: LocalExecutor) -> None:
        seen.update(executor.out_dict)
        original(executor)

    with _cwd(cwd), mock.patch.object(LocalExecutor, "printCmdLine", spy):
        _, out = _bosh("exec", "simulate", str(desc), "-i", str(inv))
    _, header, command = out.partition("Generated Command:\n")
    assert header and command.endswith("\n"), f"unexpected bosh exec simulate output: {out!r}"
    return command[:-1], seen


def _files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative path -> content)."""
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _clear(directory: Path) -> None:
    for child in directory.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


# --------------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One (descriptor, invocation) pair: each side is a file, or a dict written to a file when needed."""

    id: str
    source: str
    descriptor_path: Path | None
    invocation_path: Path | None
    descriptor_data: str | None = None      # JSON text, for inline descriptors
    invocation_data: str | None = None      # JSON text, for inline invocations

    def descriptor(self) -> dict[str, Any]:
        if self.descriptor_path is not None:
            with open(self.descriptor_path) as f:
                return json.load(f)
        return json.loads(self.descriptor_data)

    def invocation(self) -> dict[str, Any]:
        if self.invocation_path is not None:
            with open(self.invocation_path) as f:
                return json.load(f)
        return json.loads(self.invocation_data)

    def files(self, directory: Path) -> tuple[Path, Path]:
        """Paths of the descriptor and invocation files, writing inline ones into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        desc, inv = self.descriptor_path, self.invocation_path
        if desc is None:
            desc = directory / "descriptor.json"
            desc.write_text(self.descriptor_data)
        if inv is None:
            inv = directory / "invocation.json"
            inv.write_text(self.invocation_data)
        return desc, inv


def _load(path: Path) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError):
        return None


def _is_descriptor(data: Any) -> bool:
    return isinstance(data, dict) and "command-line" in data and "inputs" in data


def _generated(descriptor: Path) -> list[tuple[str, str]]:
    """``bosh example`` invocations (minimal, complete) for a descriptor, with a fixed seed; [] if invalid."""
    found = []
    state = random.getstate()
    try:
        for label, extra in (("example", []), ("complete", ["--complete"])):
            random.seed(SEED)
            try:
                text = str(_bosh("example", str(descriptor), *extra)[0] or "").strip() or None
            except (Exception, SystemExit):
                return []                       # the descriptor itself is invalid
            if text and _accepts(str(descriptor), text):
                found.append((label, text))
    finally:
        random.setstate(state)
    return found


def _may_accept(descriptor: dict[str, Any], invocation: Any) -> bool:
    """Cheap pre-filter: an invocation naming something that is not an input can never validate
    (Boutiques' invocation schema forbids additional properties), so bosh is not asked about it."""
    return isinstance(invocation, dict) and set(invocation) <= {i["id"] for i in descriptor["inputs"]}


def _shape(descriptor: dict[str, Any]) -> str:
    """What substitution depends on: descriptors that differ only in name, container, ... are one shape."""
    return json.dumps([descriptor.get(k) for k in ("command-line", "inputs", "output-files", "groups")],
                      sort_keys=True)


def _shipped_cases() -> tuple[list[Case], list[Case]]:
    """Boutiques' own descriptors with the invocations next to them, and generated invocations."""
    shipped, generated, shapes = [], [], set()
    folders = sorted({p.parent for top in ("schema/examples", "tests") for p in (BOUTIQUES / top).rglob("*.json")})
    for folder in folders:
        documents = [(p, _load(p)) for p in sorted(folder.glob("*.json"))]
        descriptors = [(p, data) for p, data in documents if _is_descriptor(data)]
        invocations = [(p, data) for p, data in documents if isinstance(data, dict) and not _is_descriptor(data)]
        for desc, desc_data in descriptors:
            rel = desc.relative_to(BOUTIQUES).as_posix()
            for inv, inv_data in invocations:
                if _may_accept(desc_data, inv_data) and _accepts(str(desc), str(inv)):
                    shipped.append(Case(f"boutiques:{rel}@{inv.name}", "boutiques", desc, inv))
            if _shape(desc_data) not in shapes:
                shapes.add(_shape(desc_data))
                for label, text in _generated(desc):
                    generated.append(Case(f"bosh-example:{rel}@{label}", "bosh-example", desc, None, None, text))
    return shipped, generated


def _project_cases() -> list[Case]:
    cases = []
    echo = EXAMPLES / "echo-tool.json"
    for inv in sorted((EXAMPLES / "invocations").glob("*.json")):
        if _accepts(str(echo), str(inv)):
            cases.append(Case(f"clowdr:examples/echo-tool.json@{inv.name}", "clowdr", echo, inv))
    for n, inv_data in enumerate(ECHO_INVOCATIONS, 1):
        cases.append(Case(f"clowdr:examples/echo-tool.json@inline-{n}", "clowdr", echo, None, None,
                          json.dumps(inv_data)))
    for desc in sorted(DATA.glob("*.json")):
        if not _is_descriptor(_load(desc)):
            continue
        if desc.name in DATA_INVOCATIONS:
            for n, inv_data in enumerate(DATA_INVOCATIONS[desc.name], 1):
                cases.append(Case(f"clowdr:tests/data/{desc.name}@inline-{n}", "clowdr", desc, None, None,
                                  json.dumps(inv_data)))
        else:                                   # a descriptor added after this file was written
            for label, text in _generated(desc):
                cases.append(Case(f"clowdr:tests/data/{desc.name}@{label}", "clowdr", desc, None, None, text))
    return cases


def _synthetic_cases() -> list[Case]:
    return [Case(f"synthetic:{name}@inline-{n}", "synthetic", None, None, json.dumps(desc), json.dumps(inv))
            for name, (desc, invocations) in SYNTHETIC.items() for n, inv in enumerate(invocations, 1)]


SHIPPED, GENERATED = _shipped_cases()
CASES = SHIPPED + GENERATED + _project_cases() + _synthetic_cases()
BY_ID = {case.id: case for case in CASES}
assert len(BY_ID) == len(CASES), "duplicate case ids"


def _has(desc: dict[str, Any], feature: str) -> bool:
    inputs, outputs = desc.get("inputs", []), desc.get("output-files") or []
    return {
        "list": any(i.get("list") for i in inputs),
        "list-separator": any("list-separator" in i for i in inputs),
        "flag": any(i.get("type") == "Flag" for i in inputs),
        "command-line-flag-separator": any("command-line-flag-separator" in i for i in inputs),
        "number": any(i.get("type") == "Number" for i in inputs),
        "default-value": any("default-value" in i for i in inputs),
        "path-template-stripped-extensions": any(o.get("path-template-stripped-extensions") for o in outputs),
        "conditional-path-template": any("conditional-path-template" in o for o in outputs),
        "file-template": any("file-template" in o for o in outputs),
        "output-value-key": any("value-key" in o for o in outputs),
    }[feature]


CONFIG_CASES = [case for case in CASES if _has(case.descriptor(), "file-template")]


def _without_container(desc: dict[str, Any]) -> dict[str, Any]:
    """The descriptor run on the host: prepare() then needs no container engine and no input files.

    Command lines, output paths and configuration files do not depend on the container.
    """
    desc = copy.deepcopy(desc)
    desc.pop("container-image", None)
    return desc


_SIMULATION_DIRS: list[Path] = []


@dataclass(frozen=True)
class Expected:
    """What ``bosh exec simulate`` did for a case, run once in its own directory ``ran_in``."""

    command: str                    # the command it printed
    outputs: dict[str, str]         # its executor's output paths
    files: dict[str, bytes]         # the (configuration) files it wrote into ran_in
    ran_in: Path                    # kept for the session: absolute output paths point into it


@functools.lru_cache(maxsize=None)
def _expected(case_id: str) -> Expected:
    case = BY_ID[case_id]
    base = Path(tempfile.mkdtemp(prefix="clowdr-cmdline-"))
    _SIMULATION_DIRS.append(base)
    desc, inv = case.files(base / "input")
    ran_in = base / "simulate"
    ran_in.mkdir()
    command, outputs = _simulate_in(desc, inv, ran_in)
    return Expected(command, outputs, _files(ran_in), ran_in)


@pytest.fixture(scope="module", autouse=True)
def _remove_simulation_dirs() -> Iterator[None]:
    yield
    _expected.cache_clear()
    while _SIMULATION_DIRS:
        shutil.rmtree(_SIMULATION_DIRS.pop(), ignore_errors=True)


def _ids(cases: list[Case]) -> list[str]:
    return [case.id for case in cases]


# --------------------------------------------------------------------------------------------------
# The corpus itself
# --------------------------------------------------------------------------------------------------

def test_corpus_is_large_and_covers_the_substitution_features():
    sources = {source: sum(c.source == source for c in CASES) for source in ("boutiques", "bosh-example",
                                                                            "clowdr", "synthetic")}
    assert sources["boutiques"] >= 24, sources
    assert sources["bosh-example"] >= 24, sources
    assert sources["clowdr"] >= 10, sources
    shipped = [c.descriptor() for c in SHIPPED + GENERATED]
    features = ["list", "list-separator", "flag", "command-line-flag-separator", "number", "default-value",
                "path-template-stripped-extensions", "conditional-path-template", "file-template",
                "output-value-key"]
    missing = [f for f in features if not any(_has(d, f) for d in shipped)]
    assert not missing, f"the Boutiques corpus no longer exercises: {missing}"
    assert len(CONFIG_CASES) >= 5


# --------------------------------------------------------------------------------------------------
# 1-2. The command line is exactly bosh exec simulate's
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_command_line_matches_bosh_simulate(case: Case, monkeypatch: pytest.MonkeyPatch):
    expected = _expected(case.id)
    # The cwd simulate ran in (it matters only for uses-absolute-path): command_line's default workdir is ".".
    monkeypatch.chdir(expected.ran_in)
    got = CommandBuilder(case.descriptor()).command_line(case.invocation())
    assert got == expected.command


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_command_line_in_a_workdir_matches_bosh_simulate_run_there(case: Case, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch):
    """``command_line(inv, workdir=W)`` called from elsewhere is what bosh prints when run in W."""
    expected = _expected(case.id)
    monkeypatch.chdir(tmp_path)
    got = CommandBuilder(case.descriptor()).command_line(case.invocation(), workdir=str(expected.ran_in))
    assert got == expected.command
    assert _files(tmp_path) == {}, "command_line wrote into the process cwd instead of the workdir"


def _groups() -> dict[str, list[Case]]:
    groups: dict[str, list[Case]] = {}
    for case in CASES:
        groups.setdefault(case.id.split("@")[0], []).append(case)
    return {key: cases for key, cases in groups.items() if len(cases) > 1}


@pytest.mark.parametrize("group", list(_groups().values()), ids=list(_groups()))
def test_one_builder_serves_many_invocations(group: list[Case], monkeypatch: pytest.MonkeyPatch):
    """One builder serves every task of a run: nothing may leak from one invocation into the next."""
    builder = CommandBuilder(group[0].descriptor())
    for case in group + group[::-1] + group:
        expected = _expected(case.id)
        monkeypatch.chdir(expected.ran_in)
        assert builder.command_line(case.invocation()) == expected.command, case.id


def test_builder_mutates_neither_descriptor_nor_invocation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    for case in CASES:
        desc, inv = _without_container(case.descriptor()), case.invocation()
        desc_before, inv_before = copy.deepcopy(desc), copy.deepcopy(inv)
        builder = CommandBuilder(desc)
        builder.command_line(inv, workdir=str(tmp_path))
        builder.prepare(inv, str(tmp_path), str(tmp_path))
        assert desc == desc_before, case.id
        assert inv == inv_before, case.id


# --------------------------------------------------------------------------------------------------
# 3. prepare(): outputs and configuration files in the task's workdir
# --------------------------------------------------------------------------------------------------

def _prepare_in(case: Case, workdir: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch):
    """prepare() for the task directory ``workdir`` (emptied first), called with the process in ``cwd``."""
    _clear(workdir)
    private = cwd.parent / f"{cwd.name}-private"
    private.mkdir()
    monkeypatch.chdir(cwd)
    return CommandBuilder(_without_container(case.descriptor())).prepare(case.invocation(), str(workdir),
                                                                        str(private))


@pytest.mark.parametrize("case", CONFIG_CASES, ids=_ids(CONFIG_CASES))
def test_prepare_writes_configuration_files_into_workdir(case: Case, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    """The configuration files land in the workdir, not in the process cwd, with the content bosh writes."""
    expected = _expected(case.id)
    assert expected.files, "bosh wrote no configuration file"
    prepared = _prepare_in(case, expected.ran_in, tmp_path, monkeypatch)
    problems = []
    if _files(expected.ran_in) != expected.files:
        problems.append(f"workdir files: expected {expected.files!r}, got {_files(expected.ran_in)!r}")
    if _files(tmp_path):
        problems.append(f"written into the process cwd instead: {_files(tmp_path)!r}")
    if prepared.command != expected.command:
        problems.append(f"command: expected {expected.command!r}, got {prepared.command!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_prepare_matches_bosh_simulate_run_in_workdir(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """prepare(inv, W) has the command and output paths of bosh run in W, and leaves the process cwd alone."""
    expected = _expected(case.id)
    prepared = _prepare_in(case, expected.ran_in, tmp_path, monkeypatch)
    descriptor = case.descriptor()
    required = {o["id"] for o in descriptor.get("output-files") or [] if not o.get("optional")}
    problems = []
    if prepared.command != expected.command:
        problems.append(f"command: expected {expected.command!r}, got {prepared.command!r}")
    if prepared.launch != prepared.command:
        problems.append(f"launch differs from the command without a container: {prepared.launch!r}")
    if prepared.outputs != expected.outputs:
        problems.append(f"outputs: expected {expected.outputs!r}, got {prepared.outputs!r}")
    if prepared.required_outputs != required:
        problems.append(f"required outputs: expected {required!r}, got {prepared.required_outputs!r}")
    if _files(tmp_path):
        problems.append(f"written into the process cwd: {_files(tmp_path)!r}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------------
# 4. No process-wide side effects, and cheap
# --------------------------------------------------------------------------------------------------

def test_building_100_commands_changes_neither_cwd_nor_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Boutiques' launcher chdirs and exports environment variables; the builder must do neither."""
    monkeypatch.chdir(tmp_path)
    cwd, environ = os.getcwd(), dict(os.environ)
    # Descriptors with environment variables and containers first; prepare() runs them on the host.
    ordered = sorted(CASES, key=lambda c: not any(k in c.descriptor() for k in ("environment-variables",
                                                                                "container-image")))
    assert any("environment-variables" in c.descriptor() for c in ordered[:10])
    for n in range(100):
        case = ordered[n % len(ordered)]
        builder = CommandBuilder(_without_container(case.descriptor()))
        workdir = tmp_path / f"task-{n}"
        workdir.mkdir()
        builder.command_line(case.invocation(), workdir=str(workdir))
        builder.prepare(case.invocation(), str(workdir), str(workdir))
        assert os.getcwd() == cwd, case.id
        assert dict(os.environ) == environ, case.id


def test_a_thousand_command_lines_cost_milliseconds_each(tmp_path: Path):
    """The point of the prebuilt executor: no re-validation, no sleep (bosh takes 20-70 ms per command here)."""
    case = BY_ID["clowdr:examples/echo-tool.json@inline-1"]
    builder = CommandBuilder(case.descriptor())
    invocation = case.invocation()
    start = time.perf_counter()
    for n in range(1000):
        builder.command_line({**invocation, "repeat": n + 1}, workdir=str(tmp_path))
    elapsed = time.perf_counter() - start
    assert elapsed < 5, f"{elapsed:.2f} s for 1000 command lines"
