"""The dashboard as a static page (for ``export``): the same views as the app, with no Python behind them.

The runs table, then every task (failed first) with its command and exit description, the timeline, and a few
chosen tasks in detail (failed ones first, then the longest): their facts, attempts, usage and log tails. Usage
series are resampled (``load_usage(max_points=...)``) and logs cut to their tail, so the file stays small enough
to mail at thousands of tasks.
"""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource

from clowdr.share import runs as run_views
from clowdr.share import views
from clowdr.share.app import FACTS_STYLE, STYLE, runs_table_widget, task_table_widget
from clowdr.share.table import load_attempts, load_tables, read_log_tail

EXPORT_POINTS = 200
ATTEMPTS_STYLE = """
.clowdr-attempts th, .clowdr-attempts td {border-bottom: 1px solid #ddd; padding: 3px 8px 3px 0; font-size: 13px}
"""


def heading(text: str, level: int = 3) -> pn.pane.HTML:
    """A heading as plain HTML (a Markdown pane would inline its code-highlighting stylesheet each time)."""
    return pn.pane.HTML(f"<h{level} style='margin:8px 0 2px 0'>{html.escape(text)}</h{level}>")


def chosen_rows(frame: pd.DataFrame, count: int) -> list[int]:
    """Rows worth detailing in a static file, in the order shown: failed (and interrupted) tasks first, then the
    longest-running others. FRAME is in failed-first order already."""
    wrong = [n for n in range(len(frame)) if frame["status"].iloc[n] in ("failed", "interrupted")]
    picked = wrong[: max(1, count // 2)]
    others = frame.index[~frame["status"].isin(["failed", "interrupted"])]
    longest = frame.loc[others, "duration"].astype("float64").fillna(-1.0).sort_values(ascending=False, kind="stable")
    picked += [int(frame.index.get_loc(i)) for i in longest.index[: count - len(picked)]]
    return picked[:count]


def task_detail(frame: pd.DataFrame, row: int, info: run_views.RunInfo | None, log_bytes: int) -> pn.pane.HTML:
    """One task's facts, attempts and log tails, as the app shows them for the task picked (one pane: each
    pane of a static page carries its own copy of Panel's stylesheets)."""
    record = frame.iloc[row]
    meta, task = Path(record["meta"]), int(record["task"])
    attempts = views.attempts_table(load_attempts(meta, task, ended=record["status"] == "interrupted"))
    logs = "".join(f"<div style='flex:1;min-width:0'><b>{stream}</b>"
                   f"{views.log_html(*read_log_tail(meta, task, stream, log_bytes), stream)}</div>"
                   for stream in ("stdout", "stderr"))
    body = (views.task_title_html(record) + views.task_facts_html(record, info)
            + f"<b>Attempts ({len(attempts)})</b>"
            + attempts.to_html(index=False, escape=True, classes="clowdr-attempts", border=0)
            + f"<div style='display:flex;gap:12px;margin-top:8px'>{logs}</div>")
    return pn.pane.HTML(body, sizing_mode="stretch_width", stylesheets=[FACTS_STYLE + ATTEMPTS_STYLE],
                        css_classes=["clowdr-task-detail"])


def static_view(location: str | Path, usage_tasks: int = 6, log_bytes: int = 8 * 1024) -> pn.viewable.Viewable:
    """Runs, overview, task table, timeline, the chosen tasks' usage and details, and the distributions by the
    first parameter worth comparing by, as one Panel layout."""
    pn.extension("tabulator")
    tasks, runs = load_tables(location)
    frame = views.failed_first(tasks)
    stats = views.overview(frame, runs)
    title = f"clowdr share: run {runs[0].run_id}" if len(runs) == 1 else f"clowdr share: {len(runs)} runs"
    table = task_table_widget(views.display_table(frame), pagination="local", page_size=20,
                              css_classes=["clowdr-tasks"])
    timeline = views.timeline_figure(ColumnDataSource(views.timeline_data(frame)), len(frame))
    rows = chosen_rows(frame, usage_tasks)
    usage, io = views.series_data(frame, rows, EXPORT_POINTS)
    cpu, ram = views.usage_figures(ColumnDataSource(usage))
    io_fig = views.io_figure(ColumnDataSource(io), cpu.x_range)
    views.fit_series(cpu, ram, io_fig, usage, io)
    params = views.distribution_params(frame)
    param = params[0] if params else None           # no Python to redraw for another: the first one that fits
    spread = views.distribution_data(frame, param)
    duration_fig, peak_fig = views.distribution_figures(ColumnDataSource(spread["boxes"]),
                                                        ColumnDataSource(spread["points"]), spread["factors"], param)
    spread_note = (f"<i>By the value of <b>{html.escape(param.removeprefix('param.'))}</b> (boxes: quartiles; "
                   "whiskers: min to max; points: tasks).</i>" if param else
                   f"<i>No parameter takes 2 to {views.MAX_GROUPS} values across these tasks: nothing to "
                   "compare.</i>")
    infos = {info.run_id: info for info in runs}
    details = [(views.task_key(frame["run_id"].iloc[row], frame["task"].iloc[row]) + f": {frame['status'].iloc[row]}",
                task_detail(frame, row, infos.get(str(frame["run_id"].iloc[row])), log_bytes)) for row in rows]
    chosen = ("<i>A static export details a few tasks: failed ones first, then the longest. In this order: "
              + ", ".join(html.escape(key) for key, _ in details) + ".</i>") if details else "<i>No task yet.</i>"
    return pn.Column(
        heading("Runs", 2), runs_table_widget(run_views.run_table(runs, tasks), css_classes=["clowdr-runs"]),
        pn.Row(pn.pane.HTML(views.overview_html(stats, title), sizing_mode="stretch_width", stylesheets=[STYLE]),
               pn.pane.Bokeh(views.status_figure(stats)), sizing_mode="stretch_width"),
        heading("Tasks (failed first)"), table,
        pn.pane.Bokeh(timeline, sizing_mode="stretch_width"),
        heading("Tasks in detail"), pn.pane.HTML(chosen, css_classes=["clowdr-chosen"]),
        pn.Tabs(*details, sizing_mode="stretch_width", css_classes=["clowdr-details"]) if details
        else pn.pane.HTML(""),
        heading("CPU, RAM and I/O of these tasks"),
        pn.pane.HTML(views.usage_note(frame, rows, usage, io), css_classes=["clowdr-usage-note"]),
        pn.Row(pn.pane.Bokeh(cpu, sizing_mode="stretch_width"), pn.pane.Bokeh(ram, sizing_mode="stretch_width"),
               pn.pane.Bokeh(io_fig, sizing_mode="stretch_width"), sizing_mode="stretch_width"),
        heading("Duration and peak RAM by parameter value"), pn.pane.HTML(spread_note),
        pn.Row(pn.pane.Bokeh(duration_fig, sizing_mode="stretch_width"),
               pn.pane.Bokeh(peak_fig, sizing_mode="stretch_width"), sizing_mode="stretch_width"),
        sizing_mode="stretch_width")
