"""From a descriptor, invocation(s) and options to validated tasks, before anything is written or launched.

The descriptor is validated once with Boutiques; every invocation is checked against one prebuilt
jsonschema validator (Boutiques' own invocation schema), so a thousand invocations cost milliseconds.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

from clowdr.errors import InputError, ScratchError

Item = TypeVar("Item")

#: Linux's MAX_ARG_STRLEN (32 pages of 4 KiB, the smallest page Linux has): the most bytes one argument or one
#: environment string can hold, its terminating NUL included. A host tool's whole command line is ONE argument
#: (``/bin/sh -c LINE``), so neither a value nor a command line may be longer than this, less the NUL.
MAX_ARG_STRLEN = 131072
ARG_BYTES = MAX_ARG_STRLEN - 1
#: The task's working directory, counted at its longest (PATH_MAX) where an output path is made absolute:
#: validation runs before the directory exists, and what fits here fits wherever the task runs.
WORKDIR_STAND_IN = "/" + "w" * 4094


@dataclass
class Tool:
    """A validated Boutiques descriptor and the validator for its invocations."""

    path: Path
    descriptor: dict[str, Any]
    _validator: Any = field(repr=False)

    @classmethod
    def recorded(cls, path: Path) -> "Tool":
        """The descriptor of an earlier run, read, not validated again: enough to record a launch that runs
        nothing (its invocations cannot be checked with it)."""
        descriptor = load_json(path, "descriptor")
        if not isinstance(descriptor, dict):
            raise InputError(str(path), "a descriptor must be a JSON object")
        return cls(path=path, descriptor=descriptor, _validator=None)

    @property
    def name(self) -> str:
        return str(self.descriptor.get("name", self.path.stem))

    @property
    def input_ids(self) -> dict[str, dict[str, Any]]:
        return {inp["id"]: inp for inp in self.descriptor.get("inputs", [])}

    def check_invocation(self, invocation: Any, where: str) -> dict[str, Any]:
        """Validate one invocation (defaults filled in as Boutiques does); raise InputError on the first fault."""
        if not isinstance(invocation, dict):
            raise InputError(where, "an invocation must be a JSON object")
        unknown = sorted(set(invocation) - set(self.input_ids))
        if unknown:
            raise InputError(where, f"field '{unknown[0]}': no input with this id in {self.path.name}")
        fault = _unreachable(invocation)
        if fault is not None:
            raise InputError(where, fault)
        from boutiques.localExec import addDefaultValues

        filled = addDefaultValues(self.descriptor, copy.deepcopy(invocation))
        error = _first_error(self._validator, filled)
        if error is not None:
            raise InputError(where, error + self._sweep_hint(invocation))
        fault = self._too_long(filled)
        if fault is not None:
            raise InputError(where, fault)
        return invocation

    def _sweep_hint(self, invocation: dict[str, Any]) -> str:
        """A list where an input takes one value (a list of lists for a list input) is most often a sweep whose
        ``--sweep`` was left out: say so, naming each such input."""
        swept = [key for key, value in invocation.items() if isinstance(value, list) and value
                 and (not self.input_ids[key].get("list") or all(isinstance(v, list) for v in value))]
        if not swept:
            return ""
        return f" (one task per value? add {' '.join(f'--sweep {key}' for key in swept)})"

    def _too_long(self, filled: dict[str, Any]) -> str | None:
        """Why this invocation's command line cannot be spawned (too long for one argument), naming the field
        that makes it so; None when it fits. A container tool runs its command line from a script file: only its
        values are limited (``_unreachable``)."""
        if (self.descriptor.get("container-image") or {}).get("image"):
            return None
        bound = self._room.bound(filled)
        if bound is not None and bound <= ARG_BYTES:
            return None                                   # the common case: no command line built here
        size = self._command_bytes(filled)
        if size is None or size <= ARG_BYTES:
            return None
        growth = {key: size - (self._command_bytes(dict(filled, **{key: _blank(value)})) or size)
                  for key, value in filled.items()}
        culprit = max(growth, key=lambda key: growth[key])
        return (f"field '{culprit}': makes the command line {size} bytes, but it is passed to /bin/sh -c as one "
                f"argument, which holds at most {ARG_BYTES} bytes (Linux MAX_ARG_STRLEN)")

    def _command_bytes(self, filled: dict[str, Any]) -> int | None:
        """The command line's length in bytes, built by Boutiques' own substitution as the worker builds it;
        None when Boutiques cannot build it (the worker then reports that, as for any invocation)."""
        try:
            line = self._measurer.command_line(filled, WORKDIR_STAND_IN)
        except Exception:  # noqa: BLE001 - Boutiques' substitution raises anything on odd descriptors
            return None
        return len(line.encode("utf-8"))

    @cached_property
    def _room(self) -> CommandRoom:
        return CommandRoom.of(self.descriptor)

    @cached_property
    def _measurer(self) -> Any:
        """A command builder that writes nothing and evaluates nothing: configuration-file contents are left out
        (Boutiques would write them), and so are conditional output paths (Boutiques evaluates their conditions
        with ``eval()`` of the invocation's text, which validation must not run): a line holding those is
        measured a few path lengths short."""
        from clowdr.command import CommandBuilder

        outputs = [{k: v for k, v in o.items() if k != "file-template"}
                   for o in self.descriptor.get("output-files") or [] if "conditional-path-template" not in o]
        return CommandBuilder({**self.descriptor, "output-files": outputs})


@dataclass(frozen=True)
class CommandRoom:
    """An upper bound on a host tool's command-line length, read once from its descriptor, so that only an
    invocation that might not fit pays for building its command line (Boutiques' substitution costs about three
    times the rest of the check).

    Boutiques replaces each value-key of the command line with its value (flag, separator and shell quotes
    added: a quote ' becomes 5 bytes), and each output's key with its path, whose template holds input and
    output keys in turn (two passes). So each input's value appears at most ``copies[id]`` times, and the rest
    of the line is at most ``fixed`` bytes.
    """

    fixed: int
    copies: dict[str, int]
    separators: dict[str, int]                  # input id -> bytes added per list element besides the element
    keys: re.Pattern[str] | None                # any value-key: a value holding one is substituted again

    @classmethod
    def of(cls, descriptor: dict[str, Any]) -> CommandRoom:
        template = str(descriptor.get("command-line", ""))
        inputs = [i for i in descriptor.get("inputs", []) if i.get("value-key")]
        outputs = [o for o in descriptor.get("output-files") or [] if o.get("value-key")]
        paths = {o["id"]: _path_templates(o) for o in outputs}

        def most(output: dict[str, Any], key: str) -> int:       # occurrences in its fullest alternative
            return max((path.count(key) for path in paths[output["id"]]), default=0)

        def own_text(output: dict[str, Any]) -> int:
            absolute = len(WORKDIR_STAND_IN) + 1 if output.get("uses-absolute-path") else 0
            return max((len(path.encode("utf-8")) for path in paths[output["id"]]), default=0) + absolute

        def in_output(output: dict[str, Any], key: str) -> int:  # directly, and through another output's path
            return most(output, key) + sum(most(output, other["value-key"]) * most(other, key) for other in outputs)

        def flagged(item: dict[str, Any]) -> int:
            flag = item.get("command-line-flag")
            return len(f"{flag}{item.get('command-line-flag-separator', ' ')}".encode("utf-8")) if flag else 0

        in_line = {o["id"]: template.count(o["value-key"]) for o in outputs}
        output_text = {o["id"]: own_text(o) + sum(most(o, p["value-key"]) * own_text(p) for p in outputs)
                       for o in outputs}
        fixed = (len(template.encode("utf-8"))
                 + sum(template.count(i["value-key"]) * flagged(i) for i in inputs)
                 + sum(in_line[o["id"]] * (flagged(o) + 5 * output_text[o["id"]] + 2) for o in outputs))
        copies = {i["id"]: template.count(i["value-key"]) + sum(in_line[o["id"]] * in_output(o, i["value-key"])
                                                                for o in outputs)
                  for i in inputs}
        separators = {i["id"]: 2 + len(str(i.get("list-separator", " ")).encode("utf-8")) for i in inputs}
        keys = [i["value-key"] for i in inputs] + [o["value-key"] for o in outputs]
        pattern = re.compile("|".join(map(re.escape, keys))) if keys else None
        return cls(fixed, copies, separators, pattern)

    def bound(self, filled: dict[str, Any]) -> int | None:
        """No fewer bytes than the command line holds; None when no bound holds (a value holds a value-key)."""
        total = self.fixed
        for key, value in filled.items():
            times = self.copies.get(key, 0)
            if not times:
                continue
            for element in value if isinstance(value, list) else [value]:
                text = str(element)
                if self.keys is not None and isinstance(element, str) and self.keys.search(text):
                    return None
                total += times * (len(text.encode("utf-8")) + 4 * text.count("'") + self.separators[key])
        return total


def _path_templates(output: dict[str, Any]) -> list[str]:
    """Every path an output can take: its path template, or each alternative of a conditional one."""
    if "path-template" in output:
        return [str(output["path-template"])]
    return [str(path) for choice in output.get("conditional-path-template") or [] for path in choice.values()]


def _blank(value: Any) -> Any:
    """The shortest value of the same kind: what a field adds to a command line is measured against it."""
    if isinstance(value, bool):
        return False
    if isinstance(value, list):
        return []
    return 0 if isinstance(value, (int, float)) else ""


def _value_fault(value: Any) -> str | None:
    """Why one value cannot reach a command line, or None: a NUL byte (C strings end there), a lone surrogate
    (not Unicode text: it has no UTF-8 bytes), or more bytes than one argument can hold."""
    if not isinstance(value, str):
        return None
    if "\x00" in value:
        return "holds a NUL byte (\\u0000), which no command line can carry"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        return (f"holds a lone surrogate (\\u{ord(value[exc.start]):04x} at character {exc.start}), which is "
                "not Unicode text: no command line can carry it")
    if size > ARG_BYTES:
        return (f"is {size} bytes, but one command-line argument holds at most {ARG_BYTES} bytes "
                "(Linux MAX_ARG_STRLEN)")
    return None


def _unreachable(invocation: dict[str, Any]) -> str | None:
    """The first value (of any type, list elements included) that no command line can carry: 'field ...: why'."""
    for key, value in invocation.items():
        elements = value if isinstance(value, list) else [value]
        for number, element in enumerate(elements):
            fault = _value_fault(element)
            if fault is not None:
                where = f" (element {number})" if isinstance(value, list) else ""
                return f"field '{key}'{where}: {fault}"
    return None


def _first_error(validator: Any, instance: dict[str, Any], noun: str = "input") -> str | None:
    """One readable line for the most relevant schema violation, naming the field."""
    import jsonschema

    best = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if best is None:
        return None
    path = "/".join(str(p) for p in best.absolute_path)
    message = best.message
    if best.validator == "required" and not path:
        return f"missing required {noun}: {message}"
    return f"field '{path}': {message}" if path else message


def read_file(path: str | Path) -> bytes:
    """A whole file, through the os module: half the time of ``open().read()`` for the small files that --setup
    (100,000 invocations) and --rerun (10,000 summaries) read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pieces = []
        while piece := os.read(fd, 1 << 20):
            pieces.append(piece)
        return b"".join(pieces)
    finally:
        os.close(fd)


def load_json(path: Path, what: str) -> Any:
    """Read a JSON file, turning every failure into one line naming the file."""
    try:
        text = read_file(path)
    except FileNotFoundError:
        raise InputError(str(path), f"{what} not found") from None
    except IsADirectoryError:
        raise InputError(str(path), f"{what} is a directory, expected a JSON file") from None
    except OSError as exc:
        raise InputError(str(path), f"cannot read {what}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(str(path), f"{what} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except ValueError:   # not UTF-8/16/32 text at all
        raise InputError(str(path), f"{what} is not valid JSON (not a text file)") from None


def load_tool(path: str | Path) -> Tool:
    """Load and validate a Boutiques descriptor once; build the invocation validator."""
    import jsonschema
    from boutiques.invocationSchemaHandler import generateInvocationSchema
    from boutiques.validator import DescriptorValidationError, validate_descriptor

    path = Path(path)
    descriptor = load_json(path, "descriptor")
    if not isinstance(descriptor, dict):
        raise InputError(str(path), "a descriptor must be a JSON object")
    schema_error = _first_error(_descriptor_schema_validator(), descriptor, noun="field")
    if schema_error is not None:
        raise InputError(str(path), f"not a valid Boutiques descriptor: {schema_error}")
    try:
        validate_descriptor(copy.deepcopy(descriptor))
    except (DescriptorValidationError, jsonschema.ValidationError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(str(path), f"not a valid Boutiques descriptor: {first}") from None
    except Exception as exc:  # Boutiques' validator itself fails on some schema-valid descriptors
        raise InputError(str(path), f"Boutiques cannot validate this descriptor ({type(exc).__name__}: {exc})") from None
    schema = descriptor.get("invocation-schema") or generateInvocationSchema(descriptor)
    validator_class = jsonschema.validators.validator_for(schema)
    return Tool(path=path, descriptor=descriptor, _validator=validator_class(schema))


def _descriptor_schema_validator() -> Any:
    """Boutiques' own descriptor schema, for a first error that names its field."""
    import boutiques
    import jsonschema

    schema = json.loads((Path(boutiques.__file__).parent / "schema" / "descriptor.schema.json").read_text())
    return jsonschema.validators.validator_for(schema)(schema)


@dataclass
class TaskPlan:
    """One task to run: its invocation and where it came from."""

    index: int
    invocation: dict[str, Any]
    invocation_name: str          # file name of the invocation copy in the provenance directory
    dataloc: list[str]

    def line(self) -> str:
        """The task as one line of JSON (no newline in it): a line of plan.json."""
        return _encode([self.index, self.invocation_name, self.invocation, self.dataloc])

    @classmethod
    def of_line(cls, line: str) -> "TaskPlan":
        return cls.of_entry(json.loads(line.rstrip().rstrip(",")))

    @classmethod
    def of_entry(cls, entry: list[Any]) -> "TaskPlan":
        """The task of one entry of plan.json's ``tasks``: [index, invocation copy's name, invocation, dataloc]."""
        index, name, invocation, dataloc = entry
        return cls(int(index), invocation, str(name), list(dataloc or []))


#: the C encoder, ASCII only: a task's line holds no raw newline (nor U+2028) whatever its invocation holds
_encode = json.JSONEncoder().encode


class TaskList:
    """Validated tasks, in order, taken one at a time and kept as lines of text in a temporary file (in memory up
    to a few MiB), not as objects: a 100,000-task --setup holds one invocation at a time, not all of them.

    Read again as often as wanted; ``indices`` are the task numbers, in order."""

    def __init__(self, tasks: Iterable[TaskPlan]) -> None:
        self._spool = tempfile.SpooledTemporaryFile(max_size=1 << 23, mode="w+", encoding="utf-8")
        self.indices: list[int] = []
        for task in tasks:
            try:
                self._spool.write(task.line() + "\n")
            except OSError as exc:      # beyond the first MiBs the lines go to a file: a full disk stops the plan
                with contextlib.suppress(OSError):
                    self._spool.close()
                raise ScratchError(f"the plan of {len(self.indices) + 1} validated tasks", exc) from None
            self.indices.append(task.index)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[TaskPlan]:
        return map(TaskPlan.of_line, self.lines())

    def lines(self) -> Iterator[str]:
        """Each task as its line of JSON (``TaskPlan.line``), undecoded."""
        self._spool.seek(0)
        for line in iter(self._spool.readline, ""):
            yield line.rstrip("\n")


@dataclass
class Options:
    """Expansion options shared by the CLI and the Python API."""

    bids: bool = False
    sweep: list[str] = field(default_factory=list)
    s3: str | None = None


def expand(tool: Tool, invocation_path: str | Path, options: Options) -> Iterator[TaskPlan]:
    """The tasks of the user's invocation argument (ids follow sorted file names), each read and validated as it
    is taken: the first fault raises InputError."""
    path = Path(invocation_path)
    base_loc = options.s3 or "localhost"
    if path.is_dir():
        if options.sweep:
            raise InputError(str(path), "--sweep needs a single invocation file, not a directory")
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise InputError(str(path), "the invocation directory holds no invocation files")
        from clowdr import spread

        if spread.worth_spreading(len(files)):
            yield from spread.validated(tool, files, [base_loc])
            return
        derived: Iterable[tuple[dict[str, Any], str, str, list[str]]] = (
            (load_json(f, "invocation"), f.name, str(f), [base_loc]) for f in files)
    else:
        invocation = load_json(path, "invocation")
        if not isinstance(invocation, dict):
            raise InputError(str(path), "an invocation must be a JSON object")
        if options.bids:
            derived = ((inv, name, str(path), loc) for inv, name, loc in _bids_tasks(invocation, path, base_loc))
        else:
            derived = [(invocation, path.name, str(path), [base_loc])]
        if options.sweep:
            derived = (
                (inv, name, where, loc)
                for base, stem, where, loc in derived
                for inv, name in _sweep(tool, base, Path(stem).stem, options.sweep, where)
            )
    rest = iter(derived)
    first = list(itertools.islice(rest, 2))
    for index, (invocation, name, where, dataloc) in enumerate(itertools.chain(first, rest)):
        tool.check_invocation(invocation, fault_location(where, name, alone=len(first) == 1))
        yield TaskPlan(index, invocation, name, dataloc)


def fault_location(where: str, name: str, alone: bool) -> str:
    """How a task's fault names it: its file, and its name there unless it is the run's only task."""
    return where if alone else f"{where} ({name})"


def _bids_tasks(invocation: dict[str, Any], path: Path, dataloc: str) -> Iterable[tuple[dict[str, Any], str, list[str]]]:
    """The five BIDS cases of the original tool: group, none, participants, participants x sessions, sessions."""
    data = invocation.get("bids_dir", dataloc) if dataloc == "localhost" else dataloc
    participants = invocation.get("participant_label") or []
    sessions = invocation.get("session_label") or []
    for key, value in (("participant_label", participants), ("session_label", sessions)):
        if not isinstance(value, list):
            raise InputError(str(path), f"field '{key}': must be a list for --bids")
    if invocation.get("analysis_level") == "group" or (not participants and not sessions):
        yield invocation, path.name, [str(data)]
        return
    if participants and sessions:
        for part, sess in itertools.product(participants, sessions):
            derived = dict(invocation, participant_label=[part], session_label=[sess])
            yield derived, f"invocation_sub-{part}_ses-{sess}.json", [f"{data}/sub-{part}/ses-{sess}"]
    elif participants:
        for part in participants:
            derived = dict(invocation, participant_label=[part])
            yield derived, f"invocation_sub-{part}.json", [f"{data}/sub-{part}"]
    else:
        for sess in sessions:
            derived = dict(invocation, session_label=[sess])
            yield derived, f"invocation_ses-{sess}.json", [str(data)]


def _sweep(tool: Tool, invocation: dict[str, Any], stem: str, params: list[str], where: str) -> Iterable[tuple[dict[str, Any], str]]:
    """Cartesian product over the listed values of every swept parameter."""
    inputs = tool.input_ids
    axes = []
    for param in params:
        if param not in inputs:
            raise InputError(where, f"--sweep {param}: no input with this id in {tool.path.name}")
        if param not in invocation:
            raise InputError(where, f"--sweep {param}: the invocation has no value for it to sweep")
        values = invocation[param]
        if not isinstance(values, list) or not values:
            raise InputError(where, f"field '{param}': --sweep needs a non-empty list of values, got {json.dumps(values)}")
        if inputs[param].get("list") and not all(isinstance(v, list) for v in values):
            raise InputError(where, f"field '{param}': a list input is swept over a list of lists")
        axes.append(values)
    for number, combo in enumerate(itertools.product(*axes)):
        derived = dict(invocation)
        derived.update(zip(params, combo))
        yield derived, f"{stem}_sweep-{number}.json"


def group(tasks: Iterable[Item], groupby: int | None) -> Iterator[list[Item]]:
    """Batches of ``groupby`` consecutive tasks, or any items (the last batch the remainder)."""
    size = groupby or 1
    iterator = iter(tasks)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
