"""The end of a launch in a few lines on stderr: what succeeded, what failed and why, how to run it again.

Written whether stderr is a terminal or not: a batch job's log, or a CI log, is read later by someone who
did not watch the progress line, and the run's path alone says nothing about how it went.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:
    from clowdr.provenance import RunDir

#: failed tasks named one by one; the others are counted
SHOWN = 5


@dataclass
class LaunchReport:
    """How one launch ended, in the words of its task summaries."""

    run_id: str
    succeeded: int
    failed: int
    failures: dict[str, int] = field(default_factory=dict)      # failed tasks by failure class
    shown: list[dict[str, Any]] = field(default_factory=list)   # summaries of the first few failed tasks
    rerun: Sequence[str] | None = None      # the command that runs the failed tasks again (None: none to give)
    setup_only: bool = False

    def lines(self) -> list[str]:
        total = self.succeeded + self.failed
        if self.setup_only:
            return [f"clowdr: run {self.run_id}: recorded, nothing launched (--setup)"]
        if total == 0:
            return [f"clowdr: run {self.run_id}: no task to run"]
        head = f"clowdr: run {self.run_id}: {total} task(s): {self.succeeded} succeeded, {self.failed} failed"
        if not self.failed:
            return [head]
        classes = ", ".join(f"{name}: {count}" for name, count in sorted(self.failures.items()))
        lines = [f"{head} ({classes})" if classes else head]
        lines += [f"  {describe_failure(summary)}" for summary in self.shown[:SHOWN]]
        if self.failed > len(lines) - 1:
            lines.append(f"  ... and {self.failed - (len(lines) - 1)} more failed task(s) (clowdr share shows them all)")
        if self.rerun:
            lines.append("clowdr: to run the failed tasks again: " + " ".join(shlex.quote(str(a)) for a in self.rerun))
        return lines


def first_failures(run: RunDir, tasks: Iterable[int], limit: int = SHOWN) -> list[dict[str, Any]]:
    """The summaries of the first ``limit`` failed tasks among ``tasks`` (in that order), read from the record:
    the monitor keeps nothing of a finished task, and only a run that failed is read, up to its ``limit``-th."""
    from clowdr.provenance import read_json

    found = []
    for index in tasks:
        summary = read_json(run.file(index, "summary.json"))
        if isinstance(summary, dict) and summary.get("status", "failed") != "succeeded":
            found.append(dict(summary, task=summary.get("task", index)))
            if len(found) == limit:
                break
    return found


def describe_failure(summary: dict[str, Any]) -> str:
    """``task N failed (class): exit code C (the descriptor's description); log: <stderr file>``, or the error
    that ended it."""
    detail = []
    if summary.get("exitcode") is not None:
        code = f"exit code {summary['exitcode']}"
        description = summary.get("exit_description")
        detail.append(f"{code} ({description})" if description else code)
    if summary.get("signal"):
        detail.append(f"signal {summary['signal']}")
    if summary.get("missing_outputs"):
        detail.append("missing outputs: " + ", ".join(map(str, summary["missing_outputs"])))
    if summary.get("error"):
        detail.append(str(summary["error"]))
    text = f"task {summary.get('task', '?')} failed ({summary.get('failure') or 'unknown'})"
    text += ": " + ", ".join(detail) if detail else ""
    return text + (f"; log: {summary['stderr']}" if summary.get("stderr") else "")
