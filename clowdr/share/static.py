"""The dashboard as a static page (for ``export``): the same views as the app, with no Python behind them.

Usage series are resampled (``load_usage(max_points=...)``) and logs cut to their tail, so the file stays small
enough to mail at thousands of tasks.
"""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource

from clowdr.share import views
from clowdr.share.app import STYLE, header_filters
from clowdr.share.table import load_tasks, read_log_tail

EXPORT_POINTS = 200


def chosen_rows(frame: pd.DataFrame, count: int) -> list[int]:
    """Rows worth a usage plot in a static file: failed tasks first, then the longest-running others."""
    failed = [int(n) for n in range(len(frame)) if frame["status"].iloc[n] == "failed"]
    others = frame.index[frame["status"] != "failed"]
    longest = frame.loc[others, "duration"].astype("float64").fillna(-1.0).sort_values(ascending=False, kind="stable")
    picked = failed[: max(1, count // 2)] if failed else []
    picked += [int(frame.index.get_loc(i)) for i in longest.index[: count - len(picked)]]
    return sorted(set(picked))[:count]


def static_view(location: str | Path, usage_tasks: int = 6, log_bytes: int = 8 * 1024) -> pn.viewable.Viewable:
    """Overview, task table, timeline, CPU/RAM/I-O and log tails of a few chosen tasks, and the distributions by
    the first parameter worth comparing by, as one Panel layout."""
    pn.extension("tabulator")
    frame = load_tasks(location)
    stats = views.overview(frame)
    runs = sorted(set(frame["run_id"]))
    title = f"clowdr share: {runs[0]}" if len(runs) == 1 else f"clowdr share: {len(runs)} runs"
    shown = views.display_table(frame)
    table = pn.widgets.Tabulator(
        shown, pagination="local", page_size=20, show_index=False, disabled=True, selectable=True,
        header_filters=header_filters(shown), sizing_mode="stretch_width", layout="fit_data_fill",
        formatters={"exitcode": {"type": "plaintext"}, "attempts": {"type": "plaintext"}})
    timeline_source = ColumnDataSource(views.timeline_data(frame))
    timeline = views.timeline_figure(timeline_source, len(frame))
    rows = chosen_rows(frame, usage_tasks)
    usage, io = views.series_data(frame, rows, EXPORT_POINTS)
    cpu, ram = views.usage_figures(ColumnDataSource(usage))
    io_fig = views.io_figure(ColumnDataSource(io), cpu.x_range)
    params = views.distribution_params(frame)
    param = params[0] if params else None           # no Python to redraw for another: the first one that fits
    spread = views.distribution_data(frame, param)
    duration_fig, peak_fig = views.distribution_figures(ColumnDataSource(spread["boxes"]),
                                                        ColumnDataSource(spread["points"]), spread["factors"], param)
    spread_note = (f"<i>By the value of <b>{html.escape(param.removeprefix('param.'))}</b> (boxes: quartiles; "
                   "whiskers: min to max; points: tasks).</i>" if param else
                   f"<i>No parameter takes 2 to {views.MAX_GROUPS} values across these tasks.</i>")
    logs = []
    for row in rows:
        record = frame.iloc[row]
        meta, task = Path(record["meta"]), int(record["task"])
        panes = [pn.pane.HTML(views.log_html(*read_log_tail(meta, task, stream, log_bytes), stream),
                              sizing_mode="stretch_width") for stream in ("stdout", "stderr")]
        logs.append((views.task_key(record["run_id"], task),
                     pn.Row(pn.Column("**stdout**", panes[0], sizing_mode="stretch_width"),
                            pn.Column("**stderr**", panes[1], sizing_mode="stretch_width"),
                            sizing_mode="stretch_width")))
    note = ("<i>Usage and logs of " + ", ".join(html.escape(key) for key, _ in logs) +
            " (a static export keeps a few tasks: failed ones first, then the longest).</i>") if logs else \
        "<i>No task to show.</i>"
    return pn.Column(
        pn.Row(pn.pane.HTML(views.overview_html(stats, title), sizing_mode="stretch_width", stylesheets=[STYLE]),
               pn.pane.Bokeh(views.status_figure(stats)), sizing_mode="stretch_width"),
        "### Tasks", table,
        pn.pane.Bokeh(timeline, sizing_mode="stretch_width"),
        "### CPU, RAM and I/O", pn.pane.HTML(note),
        pn.Row(pn.pane.Bokeh(cpu, sizing_mode="stretch_width"), pn.pane.Bokeh(ram, sizing_mode="stretch_width"),
               pn.pane.Bokeh(io_fig, sizing_mode="stretch_width"), sizing_mode="stretch_width"),
        "### Duration and peak RAM by parameter value", pn.pane.HTML(spread_note),
        pn.Row(pn.pane.Bokeh(duration_fig, sizing_mode="stretch_width"),
               pn.pane.Bokeh(peak_fig, sizing_mode="stretch_width"), sizing_mode="stretch_width"),
        "### Logs", pn.Tabs(*logs, sizing_mode="stretch_width") if logs else pn.pane.HTML(""),
        sizing_mode="stretch_width")
