"""The ``clowdr share`` dashboard: one Panel app per browser session, over the task table of a provenance location.

Views: run overview, task table (Tabulator, sortable, header filters), timeline, CPU/RAM/I-O of the selected
tasks, distributions of duration and peak RAM by the value of a chosen parameter, logs and attempt history of
the selected task. The table's selection is the one selection: picking rows in the table, bars in the timeline
or points in the distributions selects the same tasks everywhere. ``refresh`` (a periodic callback while
served) re-reads only what changed, so a live run fills the views without a page reload.
"""
from __future__ import annotations

import html
import io
import os
from pathlib import Path
from typing import Any, cast

import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource, FactorRange

from clowdr.errors import ClowdrError
from clowdr.share import views
from clowdr.share.table import find_runs, load_attempts, load_tasks, read_log_tail

DEFAULT_PERIOD_MS = 2000
LOG_TAIL_BYTES = 64 * 1024
MAX_USAGE_TASKS = 10
#: The name of the usage plots' data in the page (a browser, or a test, can find what is drawn).
USAGE_SOURCE = "clowdr-usage"
IO_SOURCE = "clowdr-io"
DISTRIBUTION_SOURCE = "clowdr-distribution"
STATUSES = ["succeeded", "failed", "running", "pending"]
STYLE = """
.clowdr-stat {min-width: 90px}
.clowdr-stat-label {color: #666; font-size: 12px}
.clowdr-stat-value {font-size: 18px; font-weight: 600}
"""


def header_filters(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Filters for status, exit code and every parameter: a list for status, '=' for numbers, 'contains' for text."""
    filters: dict[str, dict[str, Any]] = {
        "status": {"type": "list", "func": "in", "values": STATUSES, "multiselect": True, "placeholder": "any"},
        "exitcode": {"type": "number", "func": "=", "placeholder": "="},
        "failure": {"type": "input", "func": "like", "placeholder": "contains"},
    }
    for name in views.param_columns(table):
        if table[name].dtype.kind == "f":
            filters[name] = {"type": "number", "func": "=", "placeholder": "="}
        else:
            filters[name] = {"type": "input", "func": "like", "placeholder": "contains"}
    return filters


class Dashboard:
    """The state of one session: the task table, the selection, and the views drawn from them."""

    def __init__(self, location: str | Path, period_ms: int = DEFAULT_PERIOD_MS,
                 max_points: int = views.USAGE_POINTS) -> None:
        self.location = str(location)
        self.period_ms = period_ms
        self.max_points = max_points
        self.frame = load_tasks(self.location)          # raises InputError on a bad location, before any view
        self._signature = self._stat_signature()
        self._syncing = False
        self.focus: int | None = None        # the task whose logs and attempts are shown: the last one picked
        self._rows: list[int] = []           # the selection as last shown
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
        self.table = pn.widgets.Tabulator(
            shown, pagination="remote", page_size=15, show_index=False, disabled=True, selectable=True,
            header_filters=header_filters(shown), sizing_mode="stretch_width", layout="fit_data_fill",
            formatters={"exitcode": {"type": "plaintext"}, "attempts": {"type": "plaintext"}},
            css_classes=["clowdr-tasks"])
        self.timeline = views.timeline_figure(self.timeline_source, len(self.frame))
        cpu, ram = views.usage_figures(self.usage_source)
        io_fig = views.io_figure(self.io_source, cpu.x_range)
        stats = views.overview(self.frame)
        self.overview_pane = pn.pane.HTML(views.overview_html(stats, self._title()), sizing_mode="stretch_width",
                                          stylesheets=[STYLE])
        self.status_pane = pn.pane.Bokeh(views.status_figure(stats))
        self.timeline_pane = pn.pane.Bokeh(self.timeline, sizing_mode="stretch_width")
        self.usage_note = pn.pane.HTML("<i>Select tasks in the table or the timeline.</i>", css_classes=["clowdr-usage-note"])
        self.usage_pane = pn.Row(pn.pane.Bokeh(cpu, sizing_mode="stretch_width"),
                                 pn.pane.Bokeh(ram, sizing_mode="stretch_width"),
                                 pn.pane.Bokeh(io_fig, sizing_mode="stretch_width"), sizing_mode="stretch_width",
                                 css_classes=["clowdr-usage"])
        self.distribution_pane = pn.Row(pn.pane.Bokeh(self.duration_figure, sizing_mode="stretch_width"),
                                        pn.pane.Bokeh(self.peak_figure, sizing_mode="stretch_width"),
                                        sizing_mode="stretch_width", css_classes=["clowdr-distribution"])
        self.task_title = pn.pane.HTML("<h3>No task selected</h3>")
        self.stdout_pane = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["clowdr-stdout"])
        self.stderr_pane = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["clowdr-stderr"])
        self.attempts_pane = pn.pane.DataFrame(views.attempts_table([]), escape=True, index=False,
                                               sizing_mode="stretch_width")
        self.downloads = [pn.widgets.FileDownload(callback=self._whole_log(stream), filename=f"{stream}.txt",
                                                  label=f"whole {stream}", disabled=True)
                          for stream in ("stdout", "stderr")]
        self.status_line = pn.pane.HTML("", css_classes=["clowdr-status-line"])
        self.table.param.watch(self._on_table_selection, "selection")
        self.timeline_source.selected.on_change("indices", self._on_timeline_selection)
        self.point_source.selected.on_change("indices", self._on_timeline_selection)
        self.param_select.param.watch(lambda event: self.update_distribution(), "value")

    # -- layout ------------------------------------------------------------------------------------------------
    def view(self) -> pn.viewable.Viewable:
        """Everything in one scrolling page (no template: nothing is fetched from outside the server)."""
        logs = pn.Row(pn.Column("**stdout**", self.stdout_pane, self.downloads[0], sizing_mode="stretch_width"),
                      pn.Column("**stderr**", self.stderr_pane, self.downloads[1], sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")
        return pn.Column(
            pn.Row(self.overview_pane, self.status_pane, sizing_mode="stretch_width"),
            self.status_line,
            "### Tasks", self.table,
            self.timeline_pane,
            "### CPU, RAM and I/O of the selected tasks", self.usage_note, self.usage_pane,
            "### Duration and peak RAM by parameter value", pn.Row(self.param_select, self.distribution_note),
            self.distribution_pane,
            self.task_title, logs, "**Attempts**", self.attempts_pane,
            sizing_mode="stretch_width", css_classes=["clowdr-share"])

    def _title(self) -> str:
        runs = sorted(set(self.frame["run_id"]))
        return f"clowdr share: {runs[0]}" if len(runs) == 1 else f"clowdr share: {len(runs)} runs"

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
            cast(FactorRange, self.duration_figure.x_range).factors = spread["factors"]   # shared by both
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
        """Select these table rows everywhere (table, timeline, usage, distribution points); logs and attempts follow
        the last picked."""
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

    def update_details(self) -> None:
        """Usage of the selected tasks (the first MAX_USAGE_TASKS), logs and attempts of the first one."""
        rows = self.selected
        usage, io = views.series_data(self.frame, rows[:MAX_USAGE_TASKS], self.max_points)
        self.usage_source.data = usage
        self.io_source.data = io
        drawn = len(self.usage_source.data["xs"])
        if not rows:
            self.usage_note.object = "<i>Select tasks in the table or the timeline.</i>"
        elif not drawn:
            self.usage_note.object = "<i>No usage samples for the selected tasks (too short to sample).</i>"
        else:
            more = f" (first {MAX_USAGE_TASKS} of {len(rows)} selected)" if len(rows) > MAX_USAGE_TASKS else ""
            self.usage_note.object = f"<i>{drawn} task(s) with usage samples{more}.</i>"
        for button in self.downloads:
            button.disabled = not rows
        if not rows:
            self.task_title.object = "<h3>No task selected</h3>"
            self.stdout_pane.object = self.stderr_pane.object = ""
            self.attempts_pane.object = views.attempts_table([])
            return
        record = self.frame.iloc[self.focus if self.focus in rows else rows[0]]
        meta, task = Path(record["meta"]), int(record["task"])
        key = views.task_key(record["run_id"], task)
        self.task_title.object = (f"<h3>{html.escape(key)}: {html.escape(str(record['status']))}</h3>")
        for pane, stream in ((self.stdout_pane, "stdout"), (self.stderr_pane, "stderr")):
            text, truncated = read_log_tail(meta, task, stream, LOG_TAIL_BYTES)
            pane.object = views.log_html(text, truncated, stream)
        for button, stream in zip(self.downloads, ("stdout", "stderr")):
            button.filename = f"{record['run_id']}-task-{task}-{stream}.txt"
        self.attempts_pane.object = views.attempts_table(load_attempts(meta, task))

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
        """Re-read the table if a run directory changed; redraw running bars and the usage of running tasks."""
        try:
            signature = self._stat_signature()
            if signature != self._signature:
                self._signature = signature
                frame = load_tasks(self.location)
                if not frame.equals(self.frame):
                    self.set_frame(frame)
                    return
            running = self.frame["status"] == "running"
            if running.any():
                self.timeline_source.data = views.timeline_data(self.frame)
                if any(running.iloc[r] for r in self.selected):
                    self.update_details()
            self.status_line.object = ""
        except ClowdrError as exc:
            self.status_line.object = f"<b>cannot read {html.escape(self.location)}:</b> " \
                                      f"{html.escape(str(exc))}"

    def set_frame(self, frame: pd.DataFrame) -> None:
        """Show a new task table, keeping the selected tasks selected (rows may have moved)."""
        def key(row: int) -> str:
            return views.task_key(self.frame.iloc[row]["run_id"], self.frame.iloc[row]["task"])
        keys = [key(r) for r in self.selected]
        focus_key = key(self.focus) if self.focus is not None and self.focus < len(self.frame) else None
        self.frame = frame
        positions = {views.task_key(r, t): n for n, (r, t) in enumerate(zip(frame["run_id"], frame["task"]))}
        rows = [positions[k] for k in keys if k in positions]
        focus = positions.get(focus_key) if focus_key else None
        self._syncing = True
        try:
            shown = views.display_table(frame)
            self.table.header_filters = header_filters(shown)
            self.table.value = shown
            self.timeline_source.data = views.timeline_data(frame)
            self.timeline.y_range.start = len(frame) - 0.5
        finally:
            self._syncing = False
        stats = views.overview(frame)
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
