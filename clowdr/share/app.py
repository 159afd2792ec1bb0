"""The ``clowdr share`` dashboard: one Panel app per browser session, over the runs of a provenance location.

The page opens on the runs table (tool and version, launch command, back-end, tasks by status, the run's own
wall time, CPU hours, peak memory); picking a run drills into it (no run picked: every run's tasks). Below it:
the run's overview, task table (failed tasks first; Tabulator, sortable, header filters), timeline, CPU/RAM/I-O
of the selected tasks, distributions of duration and peak RAM by the value of a chosen parameter, and the
selected task's facts (command, exit code and its meaning, failure class, container, host, requested against
used resources), attempts and log tails. The table's selection is the one selection: picking rows in the
table, bars in the timeline or points in the distributions selects the same tasks everywhere; a run with a
failed task opens with it selected. ``refresh`` (a periodic callback while served) re-reads only what changed,
so a live run fills the views without a page reload.
"""
from __future__ import annotations

import html
import io
import os
from pathlib import Path
from typing import Any

import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource

from clowdr.errors import ClowdrError
from clowdr.share import runs as run_views
from clowdr.share import views
from clowdr.share.table import find_runs, load_attempts, load_tables, read_log_tail

DEFAULT_PERIOD_MS = 2000
LOG_TAIL_BYTES = 64 * 1024
MAX_USAGE_TASKS = 10
#: The name of the usage plots' data in the page (a browser, or a test, can find what is drawn).
USAGE_SOURCE = "clowdr-usage"
IO_SOURCE = "clowdr-io"
DISTRIBUTION_SOURCE = "clowdr-distribution"
STATUSES = list(run_views.STATUS_ORDER)
RUN_TITLES = {"tool": "tool", "version": "version", "run_id": "run id", "launched": "launched", "command": "command",
              "backend": "back-end", "launches": "launches", "tasks": "tasks", "by_status": "tasks by status",
              "failed": "failed", "wall_time": "wall time", "cpu_hours": "CPU hours",
              "peak_memory_mib": "peak memory (MiB)"}
TASK_TITLES = {"exitcode": "exit code", "exit_description": "exit description", "queue_wait": "queue wait (s)",
               "duration": "duration (s)", "cpu_time": "CPU time (s)", "peak_rss_mib": "peak RAM (MiB)",
               "start_time": "start (UTC)", "run_id": "run id"}
STYLE = """
.clowdr-stat {min-width: 90px}
.clowdr-stat-label {color: #666; font-size: 12px}
.clowdr-stat-value {font-size: 18px; font-weight: 600}
"""
FACTS_STYLE = """
table {border-collapse: collapse; margin: 4px 0 10px 0}
th {text-align: left; color: #555; padding: 3px 12px 3px 0; vertical-align: top; font-weight: 600}
td {padding: 3px 12px 3px 0; vertical-align: top}
pre {margin: 0; white-space: pre-wrap; background: #f7f7f7; padding: 4px}
.clowdr-resources th, .clowdr-resources td {border-bottom: 1px solid #eee}
.clowdr-error {color: #a00}
"""


def header_filters(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Filters for status, exit code and every parameter: a list for status, '=' for numbers, 'contains' for text."""
    filters: dict[str, dict[str, Any]] = {
        "status": {"type": "list", "func": "in", "values": STATUSES, "multiselect": True, "placeholder": "any"},
        "exitcode": {"type": "number", "func": "=", "placeholder": "="},
        "failure": {"type": "input", "func": "like", "placeholder": "contains"},
        "exit_description": {"type": "input", "func": "like", "placeholder": "contains"},
        "command": {"type": "input", "func": "like", "placeholder": "contains"},
    }
    for name in views.param_columns(table):
        if table[name].dtype.kind == "f":
            filters[name] = {"type": "number", "func": "=", "placeholder": "="}
        else:
            filters[name] = {"type": "input", "func": "like", "placeholder": "contains"}
    return filters


def task_table_widget(shown: pd.DataFrame, **options: Any) -> pn.widgets.Tabulator:
    """The task table as both the app and the export show it."""
    return pn.widgets.Tabulator(
        shown, show_index=False, disabled=True, selectable=True, header_filters=header_filters(shown),
        sizing_mode="stretch_width", layout="fit_data_fill", titles=TASK_TITLES,
        formatters={"exitcode": {"type": "plaintext"}, "attempts": {"type": "plaintext"}},
        widths={"command": 360, "exit_description": 220}, **options)


def runs_table_widget(table: pd.DataFrame, **options: Any) -> pn.widgets.Tabulator:
    """The runs table as both the app and the export show it."""
    return pn.widgets.Tabulator(
        table, show_index=False, disabled=True, sizing_mode="stretch_width", layout="fit_data_fill",
        titles=RUN_TITLES, widths={"command": 360}, pagination="local", page_size=10, **options)


class Dashboard:
    """The state of one session: the runs, the run shown, its task table, the selection, and the views."""

    def __init__(self, location: str | Path, period_ms: int = DEFAULT_PERIOD_MS,
                 max_points: int = views.USAGE_POINTS) -> None:
        self.location = str(location)
        self.period_ms = period_ms
        self.max_points = max_points
        self.tasks, self.runs = load_tables(self.location)   # raises InputError on a bad location, before any view
        self._signature = self._stat_signature()
        self._syncing = False
        self.run_id: str | None = None       # the run drilled into; None: every run
        self.frame = self._shown_tasks()
        self.focus: int | None = None        # the task whose facts, logs and attempts are shown: the last one picked
        self._rows: list[int] = []           # the selection as last shown
        self.runs_table = runs_table_widget(run_views.run_table(self.runs, self.tasks), selectable=1,
                                            css_classes=["clowdr-runs"])
        self.timeline_source = ColumnDataSource(views.timeline_data(self.frame))
        usage, io = views.series_data(self.frame, [])
        self.usage_source = ColumnDataSource(usage, name=USAGE_SOURCE)
        self.io_source = ColumnDataSource(io, name=IO_SOURCE)
        params = views.distribution_params(self.frame)
        self.param_select = pn.widgets.Select(label="Parameter", options=self._param_options(params),
                                              value=params[0] if params else None, width=260,
                                              css_classes=["clowdr-param-select"])
        spread = views.distribution_data(self.frame, self.param_select.value)
        self.box_source = ColumnDataSource(spread["boxes"], name=DISTRIBUTION_SOURCE)
        self.point_source = ColumnDataSource(spread["points"])
        self.duration_figure, self.peak_figure = views.distribution_figures(
            self.box_source, self.point_source, spread["factors"], self.param_select.value)
        self.distribution_note = pn.pane.HTML(self._distribution_note(params))
        shown = views.display_table(self.frame)
        self.table = task_table_widget(shown, pagination="remote", page_size=15, css_classes=["clowdr-tasks"])
        self.timeline = views.timeline_figure(self.timeline_source, len(self.frame))
        self.cpu_figure, self.ram_figure = views.usage_figures(self.usage_source)
        self.io_figure = views.io_figure(self.io_source, self.cpu_figure.x_range)
        stats = views.overview(self.frame, self.runs)
        self.overview_pane = pn.pane.HTML(views.overview_html(stats, self._title()), sizing_mode="stretch_width",
                                          stylesheets=[STYLE], css_classes=["clowdr-overview"])
        self.status_pane = pn.pane.Bokeh(views.status_figure(stats))
        self.timeline_pane = pn.pane.Bokeh(self.timeline, sizing_mode="stretch_width")
        self.usage_note = pn.pane.HTML(views.usage_note(self.frame, [], usage, io), css_classes=["clowdr-usage-note"])
        self.usage_pane = pn.Row(pn.pane.Bokeh(self.cpu_figure, sizing_mode="stretch_width"),
                                 pn.pane.Bokeh(self.ram_figure, sizing_mode="stretch_width"),
                                 pn.pane.Bokeh(self.io_figure, sizing_mode="stretch_width"),
                                 sizing_mode="stretch_width", css_classes=["clowdr-usage"])
        self.distribution_pane = pn.Row(pn.pane.Bokeh(self.duration_figure, sizing_mode="stretch_width"),
                                        pn.pane.Bokeh(self.peak_figure, sizing_mode="stretch_width"),
                                        sizing_mode="stretch_width", css_classes=["clowdr-distribution"])
        self.task_title = pn.pane.HTML("<h3>No task selected</h3>", css_classes=["clowdr-task-title"])
        self.facts_pane = pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[FACTS_STYLE],
                                       css_classes=["clowdr-task-facts"])
        self.stdout_pane = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["clowdr-stdout"])
        self.stderr_pane = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["clowdr-stderr"])
        self.attempts_pane = pn.pane.DataFrame(views.attempts_table([]), escape=True, index=False,
                                               sizing_mode="stretch_width", css_classes=["clowdr-attempts"])
        self.downloads = [pn.widgets.FileDownload(callback=self._whole_log(stream), filename=f"{stream}.txt",
                                                  label=f"whole {stream}", disabled=True)
                          for stream in ("stdout", "stderr")]
        self.status_line = pn.pane.HTML("", css_classes=["clowdr-status-line"])
        self.runs_note = pn.pane.HTML(self._runs_note())
        views.fit_series(self.cpu_figure, self.ram_figure, self.io_figure, usage, io)
        self.table.param.watch(self._on_table_selection, "selection")
        self.runs_table.param.watch(self._on_run_selection, "selection")
        self.timeline_source.selected.on_change("indices", self._on_timeline_selection)
        self.point_source.selected.on_change("indices", self._on_timeline_selection)
        self.param_select.param.watch(lambda event: self.update_distribution(), "value")
        self._select_run_row()
        self.select(self._first_look())

    # -- layout ------------------------------------------------------------------------------------------------
    def view(self) -> pn.viewable.Viewable:
        """Everything in one scrolling page (no template: nothing is fetched from outside the server)."""
        logs = pn.Row(pn.Column("**stdout**", self.stdout_pane, self.downloads[0], sizing_mode="stretch_width"),
                      pn.Column("**stderr**", self.stderr_pane, self.downloads[1], sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")
        return pn.Column(
            "## Runs", self.runs_note, self.runs_table,
            pn.Row(self.overview_pane, self.status_pane, sizing_mode="stretch_width"),
            self.status_line,
            "### Tasks (failed first)", self.table,
            self.task_title, self.facts_pane, "**Attempts**", self.attempts_pane, logs,
            "### CPU, RAM and I/O of the selected tasks", self.usage_note, self.usage_pane,
            self.timeline_pane,
            "### Duration and peak RAM by parameter value", pn.Row(self.param_select, self.distribution_note),
            self.distribution_pane,
            sizing_mode="stretch_width", css_classes=["clowdr-share"])

    def _title(self) -> str:
        if self.run_id is not None or len(self.runs) == 1:
            return f"clowdr share: run {self.run_id or self.runs[0].run_id}"
        return f"clowdr share: all {len(self.runs)} runs" if self.runs else "clowdr share: no run yet"

    def _runs_note(self) -> str:
        if len(self.runs) <= 1:
            return ""
        if self.run_id is None:
            return "<i>Pick a run to see only its tasks (now: every run's tasks).</i>"
        return "<i>Click the picked run again to see every run's tasks.</i>"

    # -- runs --------------------------------------------------------------------------------------------------
    def _shown_tasks(self) -> pd.DataFrame:
        tasks = self.tasks if self.run_id is None else self.tasks[self.tasks["run_id"] == self.run_id]
        return views.failed_first(tasks)

    def _select_run_row(self) -> None:
        """Mark the run shown in the runs table (none when every run is shown)."""
        ids = list(self.runs_table.value["run_id"])
        rows = [ids.index(self.run_id)] if self.run_id in ids else []
        if list(self.runs_table.selection) != rows:
            self._syncing = True
            try:
                self.runs_table.selection = rows
            finally:
                self._syncing = False

    def _on_run_selection(self, event: Any) -> None:
        if self._syncing:
            return
        rows = list(event.new)
        ids = list(self.runs_table.value["run_id"])
        run_id = ids[rows[0]] if rows and rows[0] < len(ids) else None
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            # Redrawing every view from inside the table's event is not done under the session's document lock
            # (Bokeh refuses the changes): do it on the next tick, which holds it.
            doc.add_next_tick_callback(lambda: self.show_run(run_id))
        else:
            self.show_run(run_id)

    def show_run(self, run_id: str | None) -> None:
        """Drill into one run (None: every run), its first failed task selected."""
        self.run_id = run_id if any(info.run_id == run_id for info in self.runs) else None
        self._select_run_row()
        self.runs_note.object = self._runs_note()
        self._show(self._shown_tasks(), [], None)
        self.select(self._first_look())

    def _first_look(self) -> list[int]:
        """The task a person looks at first: the first failed (or interrupted) one, if any."""
        return [0] if len(self.frame) and self.frame["status"].iloc[0] in ("failed", "interrupted") else []

    # -- distributions -------------------------------------------------------------------------------------------
    @staticmethod
    def _param_options(params: list[str]) -> dict[str, str]:
        return {name.removeprefix("param."): name for name in params}

    @staticmethod
    def _distribution_note(params: list[str]) -> str:
        if params:
            return "<i>Boxes: quartiles; whiskers: min to max; points: tasks (tap to select).</i>"
        return (f"<i>No parameter takes 2 to {views.MAX_GROUPS} values across these tasks: "
                "nothing to compare.</i>")

    def update_distribution(self) -> None:
        """Redraw the boxes and points for the chosen parameter (its values may have changed with the table)."""
        param = self.param_select.value
        spread = views.distribution_data(self.frame, param)
        syncing, self._syncing = self._syncing, True        # a redraw, not a new selection (may run inside one)
        try:
            views.fit_distribution((self.duration_figure, self.peak_figure), spread)
            self.box_source.data = spread["boxes"]
            self.point_source.data = spread["points"]
            self.point_source.selected.indices = self.selected
        finally:
            self._syncing = syncing
        label = (param or "parameter").removeprefix("param.")
        for fig in (self.duration_figure, self.peak_figure):
            fig.xaxis.axis_label = label

    def _refresh_params(self) -> None:
        """Offer the parameters of the new table, keeping the chosen one while it still qualifies."""
        params = views.distribution_params(self.frame)
        current = self.param_select.value
        self.param_select.options = self._param_options(params)
        self.param_select.value = current if current in params else (params[0] if params else None)
        self.distribution_note.object = self._distribution_note(params)
        self.update_distribution()

    # -- selection ---------------------------------------------------------------------------------------------
    def select(self, rows: list[int], focus: int | None = None) -> None:
        """Select these table rows everywhere (table, timeline, usage, distribution points); facts, logs and
        attempts follow the last picked."""
        rows = [r for r in rows if 0 <= r < len(self.frame)]
        added = [r for r in rows if r not in self._rows]        # the table's selection is already the new one
        self._rows = list(rows)
        if focus is None:
            focus = added[-1] if added else self.focus
        self.focus = focus if focus in rows else (rows[0] if rows else None)
        self._syncing = True
        try:
            if list(self.table.selection) != rows:
                self.table.selection = rows
            if list(self.timeline_source.selected.indices) != rows:
                self.timeline_source.selected.indices = rows
            if list(self.point_source.selected.indices) != rows and len(self.point_source.data["row"]) == len(
                    self.frame):
                self.point_source.selected.indices = rows      # one point per table row, in table order
        finally:
            self._syncing = False
        self.update_details()

    @property
    def selected(self) -> list[int]:
        return [r for r in self.table.selection if 0 <= r < len(self.frame)]

    def _on_table_selection(self, event: Any) -> None:
        if not self._syncing:
            self.select(list(event.new))

    def _on_timeline_selection(self, attr: str, old: list[int], new: list[int]) -> None:
        if not self._syncing:
            self.select(list(new))

    def _info(self, run_id: str) -> run_views.RunInfo | None:
        return next((info for info in self.runs if info.run_id == run_id), None)

    def update_details(self) -> None:
        """Usage of the selected tasks (the first MAX_USAGE_TASKS), facts, logs and attempts of the focused one."""
        rows = self.selected
        usage, io = views.series_data(self.frame, rows[:MAX_USAGE_TASKS], self.max_points)
        self.usage_source.data = usage
        self.io_source.data = io
        views.fit_series(self.cpu_figure, self.ram_figure, self.io_figure, usage, io)
        note = views.usage_note(self.frame, rows[:MAX_USAGE_TASKS], usage, io)
        if len(rows) > MAX_USAGE_TASKS:
            note += f"<i> (the first {MAX_USAGE_TASKS} of {len(rows)} selected)</i>"
        self.usage_note.object = note
        for button in self.downloads:
            button.disabled = not rows
        if not rows:
            self.task_title.object = "<h3>No task selected</h3>"
            self.facts_pane.object = "<i>Pick a task in the table (failed ones are listed first).</i>"
            self.stdout_pane.object = self.stderr_pane.object = ""
            self.attempts_pane.object = views.attempts_table([])
            return
        record = self.frame.iloc[self.focus if self.focus in rows else rows[0]]
        meta, task = Path(record["meta"]), int(record["task"])
        self.task_title.object = views.task_title_html(record)
        self.facts_pane.object = views.task_facts_html(record, self._info(str(record["run_id"])))
        for pane, stream in ((self.stdout_pane, "stdout"), (self.stderr_pane, "stderr")):
            text, truncated = read_log_tail(meta, task, stream, LOG_TAIL_BYTES)
            pane.object = views.log_html(text, truncated, stream)
        for button, stream in zip(self.downloads, ("stdout", "stderr")):
            button.filename = f"{record['run_id']}-task-{task}-{stream}.txt"
        ended = record["status"] == "interrupted"
        self.attempts_pane.object = views.attempts_table(load_attempts(meta, task, ended=ended))

    def _whole_log(self, stream: str) -> Any:
        def whole() -> io.BytesIO:
            rows = self.selected
            if not rows:
                return io.BytesIO(b"")
            record = self.frame.iloc[self.focus if self.focus in rows else rows[0]]
            text, _ = read_log_tail(Path(record["meta"]), int(record["task"]), stream, 1 << 40)
            return io.BytesIO(text.encode())
        return whole

    # -- live --------------------------------------------------------------------------------------------------
    def _stat_signature(self) -> tuple[Any, ...]:
        """What changes when a task starts, ends or is retried: the modification times of the run directories."""
        parts: list[Any] = []
        for meta in [Path(self.location), *find_runs(self.location)]:
            for path in (meta, meta / "attempts"):
                try:
                    parts.append((str(path), os.stat(path).st_mtime_ns))
                except OSError:
                    parts.append((str(path), None))
        return tuple(parts)

    def refresh(self) -> None:
        """Re-read the tables if a run directory changed; redraw running bars and the usage of running tasks."""
        try:
            signature = self._stat_signature()
            if signature != self._signature:
                self._signature = signature
                tasks, runs = load_tables(self.location)
                if not tasks.equals(self.tasks) or [r.launches for r in runs] != [r.launches for r in self.runs]:
                    self.set_tables(tasks, runs)
                    return
            running = self.frame["status"] == "running"
            if running.any():
                self.timeline_source.data = views.timeline_data(self.frame)
                views.fit_timeline(self.timeline, self.timeline_source.data)
                if any(running.iloc[r] for r in self.selected):
                    self.update_details()
            self.status_line.object = ""
        except ClowdrError as exc:
            self.status_line.object = f"<b>cannot read {html.escape(self.location)}:</b> " \
                                      f"{html.escape(str(exc))}"

    def set_tables(self, tasks: pd.DataFrame, runs: list[run_views.RunInfo]) -> None:
        """Show new tables, keeping the run shown and the selected tasks selected (rows may have moved)."""
        def key(row: int) -> str:
            return views.task_key(self.frame.iloc[row]["run_id"], self.frame.iloc[row]["task"])
        keys = [key(r) for r in self.selected]
        focus_key = key(self.focus) if self.focus is not None and self.focus < len(self.frame) else None
        self.tasks, self.runs = tasks, runs
        self._syncing = True
        try:
            self.runs_table.value = run_views.run_table(runs, tasks)
        finally:
            self._syncing = False
        self._select_run_row()
        self.runs_note.object = self._runs_note()
        frame = self._shown_tasks()
        positions = {views.task_key(r, t): n for n, (r, t) in enumerate(zip(frame["run_id"], frame["task"]))}
        self._show(frame, [positions[k] for k in keys if k in positions],
                   positions.get(focus_key) if focus_key else None)

    def _show(self, frame: pd.DataFrame, rows: list[int], focus: int | None) -> None:
        """Put a new task table in every view, then select ROWS of it."""
        self.frame = frame
        self._rows = []
        self._syncing = True
        try:
            shown = views.display_table(frame)
            self.table.header_filters = header_filters(shown)
            self.table.value = shown
            self.table.selection = []
            self.timeline_source.data = views.timeline_data(frame)
            views.fit_timeline(self.timeline, self.timeline_source.data)
        finally:
            self._syncing = False
        stats = views.overview(frame, self.runs)
        self.overview_pane.object = views.overview_html(stats, self._title())
        self.status_pane.object = views.status_figure(stats)
        self._refresh_params()
        self.select(rows, focus=focus)


def build_app(location: str | Path, period_ms: int = DEFAULT_PERIOD_MS, live: bool = True) -> pn.viewable.Viewable:
    """A new dashboard for the current session; with ``live`` it refreshes every ``period_ms`` while served."""
    pn.extension("tabulator")
    dashboard = Dashboard(location, period_ms=period_ms)
    page = dashboard.view()
    if live and period_ms > 0 and pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        pn.state.add_periodic_callback(dashboard.refresh, period=period_ms)
    page.dashboard = dashboard         # type: ignore[attr-defined]   # for tests and notebooks
    return page


def dashboard(location: str | Path, dask_dashboard: str | None = None,
              period_ms: int = DEFAULT_PERIOD_MS) -> pn.viewable.Viewable:
    """The live dashboard for a notebook cell (refreshing itself while the run goes on), with the Dask link.

    A notebook has no server session, so the refresh is scheduled here rather than by ``build_app``.
    """
    page = build_app(location, period_ms=period_ms, live=False)
    board = page.dashboard                                        # type: ignore[attr-defined]
    pn.state.add_periodic_callback(board.refresh, period=period_ms)
    if dask_dashboard:
        page = pn.Column(pn.pane.Markdown(f"Dask dashboard: [{dask_dashboard}]({dask_dashboard})"), page)
        page.dashboard = board         # type: ignore[attr-defined]
    return page
