"""From a descriptor, invocation(s) and options to validated tasks, before anything is written or launched.

The descriptor is validated once with Boutiques; every invocation is checked against one prebuilt
jsonschema validator (Boutiques' own invocation schema), so a thousand invocations cost milliseconds.
"""
from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from clowdr.errors import InputError


@dataclass
class Tool:
    """A validated Boutiques descriptor and the validator for its invocations."""

    path: Path
    descriptor: dict[str, Any]
    _validator: Any = field(repr=False)

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
        from boutiques.localExec import addDefaultValues

        filled = addDefaultValues(self.descriptor, copy.deepcopy(invocation))
        error = _first_error(self._validator, filled)
        if error is not None:
            raise InputError(where, error)
        return invocation


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


def load_json(path: Path, what: str) -> Any:
    """Read a JSON file, turning every failure into one line naming the file."""
    try:
        text = path.read_bytes()
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


@dataclass
class Options:
    """Expansion options shared by the CLI and the Python API."""

    bids: bool = False
    sweep: list[str] = field(default_factory=list)
    s3: str | None = None


def expand(tool: Tool, invocation_path: str | Path, options: Options) -> list[TaskPlan]:
    """Expand the user's invocation argument into validated tasks (ids follow sorted file names)."""
    path = Path(invocation_path)
    base_loc = options.s3 or "localhost"
    if path.is_dir():
        if options.sweep:
            raise InputError(str(path), "--sweep needs a single invocation file, not a directory")
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise InputError(str(path), "the invocation directory holds no invocation files")
        raw = [(load_json(f, "invocation"), f.name, str(f)) for f in files]
        derived = [(inv, name, where, [base_loc]) for inv, name, where in raw]
    else:
        invocation = load_json(path, "invocation")
        if not isinstance(invocation, dict):
            raise InputError(str(path), "an invocation must be a JSON object")
        if options.bids:
            derived = [(inv, name, str(path), loc) for inv, name, loc in _bids_tasks(invocation, path, base_loc)]
        else:
            derived = [(invocation, path.name, str(path), [base_loc])]
        if options.sweep:
            derived = [
                (inv, name, where, loc)
                for base, stem, where, loc in derived
                for inv, name in _sweep(tool, base, Path(stem).stem, options.sweep, where)
            ]
    tasks = []
    for index, (invocation, name, where, dataloc) in enumerate(derived):
        tool.check_invocation(invocation, where if len(derived) == 1 else f"{where} ({name})")
        tasks.append(TaskPlan(index, invocation, name, dataloc))
    return tasks


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


def group(tasks: list[TaskPlan], groupby: int | None) -> list[list[TaskPlan]]:
    """Batches of ``groupby`` consecutive tasks (the last one the remainder)."""
    size = groupby or 1
    return [tasks[i:i + size] for i in range(0, len(tasks), size)]
