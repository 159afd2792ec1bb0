"""A large run is validated and (with --setup) recorded by worker processes, one per core (clowdr.spread): the
same files, the same first fault, the same one line for a full disk, as when one process does it all. The
threshold (``setup.spread-from``, 10,000 tasks) is lowered here so that a small run takes that path."""
from __future__ import annotations

import json
from pathlib import Path

import dask.config
import pytest

import clowdr.spread as spread
from clowdr.cli import main
from conftest import EXAMPLES

TASKS = 60


@pytest.fixture
def invocations(tmp_path: Path) -> Path:
    directory = tmp_path / "invocations"
    directory.mkdir()
    for n in range(TASKS):
        (directory / f"i{n:03d}.json").write_text(json.dumps({"message": f"hello {n}", "repeat": 1 + n % 3}))
    return directory


@pytest.fixture
def spreads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Lower the threshold; each step that really went through the worker processes is named in the list."""
    steps: list[str] = []
    real = spread._in_order

    def counted(work, chunks, *common):
        steps.append(work.__name__)
        return real(work, chunks, *common)

    monkeypatch.setattr(spread, "_in_order", counted)
    with dask.config.set({"clowdr.setup.spread-from": 2}):
        yield steps


def setup(invocations: Path, provdir: Path) -> tuple[int, Path | None]:
    provdir.mkdir()
    status = main(["local", str(EXAMPLES / "echo-tool.json"), str(invocations), str(provdir), "--setup"])
    runs = list(provdir.iterdir())
    return status, runs[0] if runs else None


def contents(run: Path) -> dict[str, str]:
    """Every file of the run but run.json (its times), with the run's own path made neutral."""
    return {str(p.relative_to(run)): p.read_text().replace(str(run), "RUN")
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != "run.json"}


def test_worker_processes_record_exactly_what_one_process_records(invocations, tmp_path, spreads, capsys):
    status, spread_run = setup(invocations, tmp_path / "spread")
    assert status == 0 and spreads == ["_validate_chunk", "_record_chunk"]
    with dask.config.set({"clowdr.setup.spread-from": 10 ** 9}):
        status, alone_run = setup(invocations, tmp_path / "alone")
    assert status == 0 and spreads == ["_validate_chunk", "_record_chunk"]      # not again
    assert spread_run is not None and alone_run is not None
    spread_files, alone_files = contents(spread_run), contents(alone_run)
    assert len(spread_files) == 2 * TASKS + 2                      # task files, copies, descriptor, plan
    assert spread_files == alone_files


def test_the_first_invalid_invocation_in_order_is_the_one_reported(invocations, tmp_path, spreads, capsys):
    for n in (17, 45):
        (invocations / f"i{n:03d}.json").write_text(json.dumps({"message": "x", "repeat": "three"}))
    status, run = setup(invocations, tmp_path / "spread")
    spread_error = capsys.readouterr().err.strip()
    assert status == 2 and run is None and spreads == ["_validate_chunk"]
    with dask.config.set({"clowdr.setup.spread-from": 10 ** 9}):
        status, run = setup(invocations, tmp_path / "alone")
    assert status == 2 and run is None
    assert spread_error == capsys.readouterr().err.strip()
    assert len(spread_error.splitlines()) == 1 and "i017.json" in spread_error and "repeat" in spread_error
