"""Bokeh figures and display tables built from the task table: shared by the served app and the HTML export.

Pure functions of a DataFrame (no Panel, no server state), so the live app can rebuild the data of a view
without rebuilding the view, and the export draws exactly what the app draws.
"""
from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clowdr.protocol import Failure
from clowdr.share.runs import RunInfo, seconds_text, status_rank, wall_time

if TYPE_CHECKING:
    import pandas
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure as Figure

STATUS_COLORS = {"succeeded": "#2ca02c", "failed": "#d62728", "interrupted": "#ff7f0e", "running": "#1f77b4",
                 "pending": "#9e9e9e", "not launched": "#d9d9d9"}
OTHER_COLOR = "#9467bd"
QUEUE_COLOR = "#d0d0d0"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
MIB = 1024 * 1024
#: Task table columns shown in the dashboard, before the ``param.<id>`` columns.
SHOWN = ("run_id", "task", "status", "exitcode", "exit_description", "failure", "attempts", "start_time",
         "queue_wait", "duration", "cpu_time", "peak_rss_mib", "hostname", "command")
USAGE_POINTS = 400


def task_key(run_id: Any, task: Any) -> str:
    """The label of one task across runs: ``<run id>/task-N``."""
    return f"{run_id}/task-{int(task)}"


def short_keys(frame: pandas.DataFrame) -> list[str]:
    """Each task's label in plots of many tasks: ``task-N`` when they are all of one run (a run id per point
    would be most of an export's size at thousands of tasks), else ``<run id>/task-N``."""
    if frame["run_id"].nunique() <= 1:
        return [f"task-{int(t)}" for t in frame["task"]]
    return [task_key(r, t) for r, t in zip(frame["run_id"], frame["task"])]


def now_utc() -> pandas.Timestamp:
    import pandas as pd

    return pd.Timestamp.now(tz="UTC")


def _naive(series: pandas.Series) -> pandas.Series:
    """UTC tz-aware times as naive datetime64 (what Bokeh's datetime axes take)."""
    return series.dt.tz_convert("UTC").dt.tz_localize(None)


# -- the task table as shown -----------------------------------------------------------------------------------
def param_columns(frame: pandas.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("param.")]


def display_table(frame: pandas.DataFrame) -> pandas.DataFrame:
    """The columns a person filters and sorts on, typed for Tabulator's header filters.

    Parameters become numbers when every value is a number, else text (lists and flags as JSON-like text), so a
    text filter never meets a non-string cell; times become sortable UTC text.
    """
    import pandas as pd

    shown = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for name in SHOWN:
        if name == "peak_rss_mib":
            shown[name] = (frame["peak_rss"].astype("float64") / MIB).round(1).to_numpy()
        elif name == "start_time":
            shown[name] = frame[name].dt.strftime("%Y-%m-%d %H:%M:%S").fillna("").to_numpy()
        elif name == "task":
            shown[name] = frame[name].astype("int64").to_numpy()
        elif name in ("exitcode", "attempts"):
            shown[name] = frame[name].astype("float64").to_numpy()      # NaN while unknown; shown as integers
        elif name in ("queue_wait", "duration", "cpu_time"):
            shown[name] = frame[name].astype("float64").round(3).to_numpy()
        else:
            shown[name] = frame[name].astype("object").where(frame[name].notna(), "").astype(str).to_numpy()
    for name in param_columns(frame):
        shown[name] = _param_values(frame[name]).to_numpy()
    return shown


def _param_values(column: pandas.Series) -> pandas.Series:
    import json

    import pandas as pd

    values = column.dropna()
    if len(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return pd.to_numeric(column, errors="coerce").astype("float64")

    def text(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return value if isinstance(value, str) else json.dumps(value)
    return column.map(text).astype(str)


def failed_first(frame: pandas.DataFrame) -> pandas.DataFrame:
    """The tasks in the order a person wants them: failed, interrupted, running, pending, not launched, succeeded;
    by run and task number within each (a fresh index: row numbers are positions)."""
    rank = frame["status"].map(status_rank).astype("int64")
    order = frame.assign(_rank=rank).sort_values(["_rank", "run_id", "task"], kind="stable").index
    return frame.loc[order].reset_index(drop=True)


# -- overview ----------------------------------------------------------------------------------------------------
def overview(frame: pandas.DataFrame, runs: Sequence[RunInfo]) -> dict[str, Any]:
    """Counts by status and failure class, total CPU time, and wall time: each run's own, summed over the runs
    shown (never one span from the first run to the last)."""
    statuses = {name: int(count) for name, count in frame["status"].value_counts().items()}
    counted = frame.loc[frame["status"] == "failed", "failure"].fillna("unknown").value_counts()
    order = {str(failure): rank for rank, failure in enumerate(Failure)}     # the classes in their own order
    failures = {str(name): int(counted[name]) for name in sorted(counted.index, key=lambda k: (order.get(k, 99), k))}
    shown = set(frame["run_id"])
    wall, going = 0.0, False
    for info in runs:
        if info.run_id in shown:
            seconds, still = wall_time(info, frame[frame["run_id"] == info.run_id])
            wall, going = wall + seconds, going or still
    return {"tasks": len(frame), "runs": len(shown), "statuses": statuses, "failures": failures,
            "cpu_time": float(frame["cpu_time"].sum(skipna=True)), "wall_time": wall, "going": going}


def overview_html(stats: dict[str, Any], title: str) -> str:
    """The overview's numbers as escaped HTML (run ids and failure classes come from files)."""
    ordered = sorted(stats["statuses"].items(), key=lambda item: (status_rank(item[0]), item[0]))
    status_text = ", ".join(f"{html.escape(k)}: {v}" for k, v in ordered) or "none yet"
    failure_text = ", ".join(f"{html.escape(k)}: {v}" for k, v in stats["failures"].items()) or "none"
    cells = [("tasks", str(stats["tasks"])), ("runs", str(stats["runs"])), ("by status", status_text),
             ("failures by class", failure_text), ("total CPU time", seconds_text(stats["cpu_time"])),
             ("wall time" if stats["runs"] <= 1 else f"wall time (sum of {stats['runs']} runs)",
              seconds_text(stats["wall_time"]) + (" so far" if stats["going"] else ""))]
    body = "".join(f"<div class='clowdr-stat'><div class='clowdr-stat-label'>{label}</div>"
                   f"<div class='clowdr-stat-value'>{value}</div></div>" for label, value in cells)
    return (f"<h2 style='margin:4px 0'>{html.escape(title)}</h2>"
            "<div style='display:flex;flex-wrap:wrap;gap:18px'>" + body + "</div>")


def status_figure(stats: dict[str, Any]) -> Figure:
    """Tasks by status and failures by class, as two bar groups of one small chart."""
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    from bokeh.models import Range1d

    statuses = sorted(stats["statuses"], key=lambda k: (status_rank(k), k))
    labels = [f"status: {k}" for k in statuses] + [f"failure: {k}" for k in stats["failures"]]
    counts = [stats["statuses"][k] for k in statuses] + list(stats["failures"].values())
    colors = [STATUS_COLORS.get(k, OTHER_COLOR) for k in statuses] + ["#ff9896"] * len(stats["failures"])
    source = ColumnDataSource({"label": labels, "count": counts, "color": colors})
    fig = figure(y_range=labels[::-1] or ["no tasks yet"], height=max(120, 28 * len(labels) + 50), width=420,
                 x_range=Range1d(0, max(counts, default=1) * 1.05),
                 title="Tasks by status, failures by class", toolbar_location=None, tools="hover",
                 tooltips=[("", "@label"), ("tasks", "@count")])
    fig.hbar(y="label", right="count", height=0.7, color="color", source=source)
    return fig


def span(values: Any, empty: float = 1.0) -> tuple[float, float]:
    """An axis from zero to a little above the largest finite value (to EMPTY with none): explicit ranges, so an
    empty plot has sane axes and the browser never meets a range it cannot compute."""
    finite = [v for v in _flatten(values) if isinstance(v, (int, float)) and math.isfinite(v)]
    top = max(finite, default=0.0)
    return 0.0, float(top if top > 0 else empty) * 1.05


def _flatten(values: Any) -> list[Any]:
    import numpy as np

    flat: list[Any] = []
    for value in values:
        if isinstance(value, (list, tuple, np.ndarray)):
            flat.extend(_flatten(value))
        else:
            flat.append(float(value) if isinstance(value, np.number) else value)
    return flat


# -- timeline ----------------------------------------------------------------------------------------------------
def timeline_data(frame: pandas.DataFrame) -> dict[str, Any]:
    """One row per task in table order: queue wait (submit→start) and run (start→end, or now while running)."""
    import pandas as pd

    now = now_utc()
    end = frame["end_time"].where(frame["end_time"].notna() | (frame["status"] != "running"), now)
    start = frame["start_time"]
    submit = frame["submit_time"].where(frame["submit_time"].notna(), start)
    return {
        "y": list(range(len(frame))),
        "key": short_keys(frame),
        "status": frame["status"].astype(str).tolist(),
        "color": [STATUS_COLORS.get(s, OTHER_COLOR) for s in frame["status"]],
        "submit": _naive(pd.Series(submit)).to_numpy(),
        "start": _naive(start).to_numpy(),
        "end": _naive(pd.Series(end)).to_numpy(),
        "queue_wait": frame["queue_wait"].astype("float64").round(3).to_numpy(),
        "duration": frame["duration"].astype("float64").round(3).to_numpy(),
        "exitcode": frame["exitcode"].astype("float64").to_numpy(),
    }


def timeline_span(data: dict[str, Any]) -> tuple[Any, Any]:
    """The timeline's time axis: first submit to last end, a little wider; the last hour when no task has times."""
    import pandas as pd

    times = pd.Series([*data["submit"], *data["start"], *data["end"]], dtype="datetime64[us]").dropna()
    if times.empty:
        end = now_utc().tz_localize(None)
        return (end - pd.Timedelta(hours=1)).to_pydatetime(), end.to_pydatetime()
    low, high = times.min(), times.max()
    margin = max((high - low) * 0.02, pd.Timedelta(seconds=1))
    return (low - margin).to_pydatetime(), (high + margin).to_pydatetime()


def fit_timeline(fig: Figure, data: dict[str, Any]) -> None:
    start, end = timeline_span(data)
    fig.x_range.update(start=start, end=end, reset_start=start, reset_end=end)
    rows = len(data["y"])
    fig.y_range.update(start=max(rows, 1) - 0.5, end=-0.5, reset_start=max(rows, 1) - 0.5, reset_end=-0.5)


def timeline_figure(source: ColumnDataSource, rows: int) -> Figure:
    """Grey queue wait then a bar coloured by status, one line per task; tap selects tasks."""
    from bokeh.models import DatetimeTickFormatter, HoverTool, Range1d, TapTool
    from bokeh.plotting import figure

    RELATIVE_CONTEXT = DatetimeTickFormatter(milliseconds="%Y-%m-%d", seconds="%Y-%m-%d", minsec="%Y-%m-%d",
                                             minutes="%Y-%m-%d", hourmin="%Y-%m-%d", hours="%Y-%m-%d",
                                             days="%Y", context_which="start")
    height = int(min(600, max(160, 14 * rows + 70)))
    start, end = timeline_span(source.data)
    fig = figure(height=height, sizing_mode="stretch_width", x_axis_type="datetime", title="Timeline (UTC)",
                 tools="xpan,xwheel_zoom,box_zoom,reset,save", y_range=Range1d(max(rows, 1) - 0.5, -0.5),
                 x_range=Range1d(start, end), toolbar_location="above")
    fig.hbar(y="y", left="submit", right="start", height=0.8, color=QUEUE_COLOR, source=source,
             nonselection_alpha=0.3)
    bars = fig.hbar(y="y", left="start", right="end", height=0.8, color="color", source=source,
                    nonselection_alpha=0.25, selection_line_color="black", selection_line_width=2)
    fig.add_tools(TapTool(renderers=[bars]),
                  HoverTool(renderers=[bars], tooltips=[("task", "@key"), ("status", "@status"),
                                                        ("exit code", "@exitcode"), ("queue wait", "@queue_wait s"),
                                                        ("duration", "@duration s")]))
    fig.xaxis.formatter = DatetimeTickFormatter(
        milliseconds="%H:%M:%S.%3N", seconds="%H:%M:%S", minsec="%H:%M:%S", minutes="%H:%M", hourmin="%H:%M",
        hours="%H:%M", days="%b %d", context=RELATIVE_CONTEXT)
    fig.yaxis.axis_label = "task (table order)"
    return fig


# -- usage ----------------------------------------------------------------------------------------------------
def series_data(frame: pandas.DataFrame, rows: Sequence[int],
                max_points: int = USAGE_POINTS) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """CPU/RAM and I/O series of the given table rows (each usage file read once), for overlaid lines.

    Times are seconds since each task started. I/O is cumulative MiB read and written; a task whose usage
    file has no read_bytes/write_bytes columns (the original tool's) has no I/O lines. A task keeps its colour
    in both.
    """
    from clowdr.share.table import load_usage

    usage: dict[str, list[Any]] = {"xs": [], "cpu": [], "ram": [], "color": [], "label": []}
    io: dict[str, list[Any]] = {"xs": [], "read": [], "write": [], "color": [], "label": [], "read_label": [],
                                "write_label": []}
    for n, row in enumerate(rows):
        record = frame.iloc[row]
        series = load_usage(Path(record["meta"]), int(record["task"]), max_points=max_points)
        if series.empty:
            continue
        key, color = task_key(record["run_id"], record["task"]), PALETTE[n % len(PALETTE)]
        usage["xs"].append(series["time"].tolist())
        usage["cpu"].append(series["cpu"].tolist())
        usage["ram"].append(series["ram"].tolist())
        usage["color"].append(color)
        usage["label"].append(key)
        if "read_bytes" not in series.columns or "write_bytes" not in series.columns:
            continue
        counted = series.dropna(subset=["read_bytes", "write_bytes"])
        if counted.empty:
            continue
        io["xs"].append(counted["time"].tolist())
        io["read"].append((counted["read_bytes"] / MIB).round(3).tolist())
        io["write"].append((counted["write_bytes"] / MIB).round(3).tolist())
        io["color"].append(color)
        io["label"].append(key)
        io["read_label"].append(f"{key} read")
        io["write_label"].append(f"{key} write")
    return usage, io


def _series_figure(title: str, x_range: Any = None) -> Figure:
    from bokeh.models import Range1d
    from bokeh.plotting import figure

    fig = figure(height=240, sizing_mode="stretch_width", title=title, tools="pan,wheel_zoom,box_zoom,reset,save",
                 toolbar_location="above", x_range=x_range if x_range is not None else Range1d(0, 1),
                 y_range=Range1d(0, 1))
    fig.xaxis.axis_label = "seconds since the task started"
    return fig


def fit_series(cpu: Figure, ram: Figure, io_fig: Figure, usage: dict[str, list[Any]],
               io: dict[str, list[Any]]) -> None:
    """Axes from zero to the data drawn (CPU 0-100 %, the others 0-1, when nothing is drawn)."""
    start, end = span([*usage["xs"], *io["xs"]])
    cpu.x_range.update(start=start, end=end, reset_start=start, reset_end=end)     # shared by all three
    for fig, values, empty, drawn in ((cpu, usage["cpu"], 100.0, usage["xs"]), (ram, usage["ram"], 1.0, usage["xs"]),
                                      (io_fig, [*io["read"], *io["write"]], 1.0, io["xs"])):
        low, high = span(values, empty=empty)
        fig.y_range.update(start=low, end=high, reset_start=low, reset_end=high)
        fig.legend.visible = bool(len(drawn))            # no empty legend box over an empty plot


def _legend(fig: Figure) -> None:
    fig.legend.location = "top_left"
    fig.legend.label_text_font_size = "8pt"


def usage_figures(source: ColumnDataSource) -> tuple[Figure, Figure]:
    """CPU % and RAM (MiB) against seconds since task start, sharing the time axis."""
    from bokeh.models import HoverTool

    cpu = _series_figure("CPU (%)")
    ram = _series_figure("RAM (MiB)", cpu.x_range)
    for fig, column in ((cpu, "cpu"), (ram, "ram")):
        fig.multi_line(xs="xs", ys=column, color="color", legend_field="label", line_width=2, source=source)
        fig.add_tools(HoverTool(tooltips=[("task", "@label")]))
        _legend(fig)
        fig.legend.location = "top_right"
    return cpu, ram


def io_figure(source: ColumnDataSource, x_range: Any = None) -> Figure:
    """Cumulative MiB read (solid) and written (dashed) against seconds since task start."""
    from bokeh.models import HoverTool

    fig = _series_figure("I/O (MiB, cumulative: read solid, write dashed)", x_range)
    fig.multi_line(xs="xs", ys="read", color="color", legend_field="read_label", line_width=2, source=source)
    fig.multi_line(xs="xs", ys="write", color="color", legend_field="write_label", line_width=2,
                   line_dash="dashed", source=source)
    fig.add_tools(HoverTool(tooltips=[("task", "@label")]))
    _legend(fig)
    return fig


# -- distributions by parameter value --------------------------------------------------------------------------
UNSET = "(unset)"
NOTHING_TO_COMPARE = "(no parameter to compare by)"
MAX_GROUPS = 30
#: The measures whose distribution is drawn per parameter value: (column, title, scale to the unit shown).
MEASURES = (("duration", "Duration (s)", 1.0), ("peak_rss", "Peak RAM (MiB)", 1.0 / MIB))


def _group_labels(column: pandas.Series) -> tuple[list[str], list[str]]:
    """Each task's parameter value as a category label, and the labels in order (numbers numerically)."""
    values = _param_values(column)
    if values.dtype.kind == "f":
        labels = [UNSET if math.isnan(v) else f"{v:g}" for v in values]
        numbers = sorted({float(v) for v in values if not math.isnan(v)})
        order = [f"{v:g}" for v in numbers]
    else:
        labels = [v if v != "" else UNSET for v in values]
        order = sorted({v for v in labels if v != UNSET})
    if UNSET in labels:
        order.append(UNSET)                 # tasks without the parameter are a group too, drawn last
    return labels, list(dict.fromkeys(order))


def distribution_params(frame: pandas.DataFrame, max_groups: int = MAX_GROUPS) -> list[str]:
    """Parameters worth comparing tasks by: 2 to ``max_groups`` distinct values (unset counts as one)."""
    found = []
    for name in param_columns(frame):
        count = len(_group_labels(frame[name])[1])
        if 2 <= count <= max_groups:
            found.append(name)
    return found


def _quartiles(values: list[float]) -> dict[str, float]:
    """Min, quartiles and max (NaN when there is no value: pending or running tasks only)."""
    import numpy as np

    if not values:
        return {key: math.nan for key in ("low", "q1", "median", "q3", "high")}
    low, q1, median, q3, high = np.percentile(values, [0, 25, 50, 75, 100])
    return {"low": float(low), "q1": float(q1), "median": float(median), "q3": float(q3), "high": float(high)}


def distribution_data(frame: pandas.DataFrame, param: str | None) -> dict[str, Any]:
    """Per value of PARAM: a box per measure (``boxes``, one row per value) and the tasks as points.

    ``factors`` is the value order of the categorical axis; ``points`` has one row per task with its table
    row, so a tap on a point can select that task.
    """
    boxes: dict[str, list[Any]] = {"value": [], "tasks": []}
    points: dict[str, list[Any]] = {"value": [], "x": [], "row": [], "key": []}
    for column, _, _ in MEASURES:
        for part in ("low", "q1", "median", "q3", "high"):
            boxes[f"{column}_{part}"] = []
        points[column] = []
    if param is None or param not in frame.columns or frame.empty:
        return {"factors": [], "boxes": boxes, "points": points}
    labels, order = _group_labels(frame[param])
    keys = short_keys(frame)
    measures = {column: (frame[column].astype("float64") * scale).to_numpy() for column, _, scale in MEASURES}
    position = {label: n for n, label in enumerate(order)}
    for row, label in enumerate(labels):
        offset = ((row * 0.618034) % 1.0 - 0.5) * 0.5        # deterministic jitter, so points do not hide each other
        points["value"].append(label)
        points["x"].append(position[label] + 0.5 + offset)
        points["row"].append(row)
        points["key"].append(keys[row])
        for column, values in measures.items():
            points[column].append(None if math.isnan(values[row]) else round(float(values[row]), 3))
    for label in order:
        members = [n for n, value in enumerate(labels) if value == label]
        boxes["value"].append(label)
        boxes["tasks"].append(len(members))
        for column, values in measures.items():
            stats = _quartiles([float(values[n]) for n in members if not math.isnan(values[n])])
            for part, number in stats.items():
                boxes[f"{column}_{part}"].append(number)
    return {"factors": order, "boxes": boxes, "points": points}


def distribution_figures(boxes: ColumnDataSource, points: ColumnDataSource, factors: list[str],
                         param: str | None) -> tuple[Figure, Figure]:
    """Box (quartiles), whiskers (min to max) and median per parameter value, tasks as jittered points."""
    from bokeh.models import FactorRange, HoverTool, TapTool
    from bokeh.plotting import figure

    from bokeh.models import Range1d

    x_range = FactorRange(factors=list(factors) or [NOTHING_TO_COMPARE])
    figures = []
    for column, title, _ in MEASURES:
        fig = figure(height=260, sizing_mode="stretch_width", x_range=x_range, title=title,
                     y_range=Range1d(*span(points.data[column])),
                     tools="pan,wheel_zoom,box_zoom,reset,save", toolbar_location="above")
        fig.segment(x0="value", x1="value", y0=f"{column}_low", y1=f"{column}_high", color="#555555",
                    source=boxes)
        fig.vbar(x="value", width=0.6, bottom=f"{column}_q1", top=f"{column}_q3", fill_color="#aec7e8",
                 fill_alpha=0.6, line_color="#1f77b4", source=boxes)
        fig.rect(x="value", y=f"{column}_median", width=0.6, height=1, height_units="screen", color="#1f77b4",
                 source=boxes)
        dots = fig.scatter(x="x", y=column, size=6, color="#ff7f0e", alpha=0.7, source=points,
                           nonselection_alpha=0.2, selection_color="black")
        fig.add_tools(TapTool(renderers=[dots]),
                      HoverTool(renderers=[dots], tooltips=[("task", "@key"), ("value", "@value"),
                                                            (title, f"@{column}")]))
        fig.xaxis.axis_label = (param or "parameter").removeprefix("param.")
        figures.append(fig)
    return figures[0], figures[1]


def fit_distribution(figures: Sequence[Figure], spread: dict[str, Any]) -> None:
    """The categorical axis (shared) and each measure's axis for new data."""
    figures[0].x_range.factors = list(spread["factors"]) or [NOTHING_TO_COMPARE]
    for fig, (column, _, _) in zip(figures, MEASURES):
        low, high = span(spread["points"][column])
        fig.y_range.update(start=low, end=high, reset_start=low, reset_end=high)


# -- one task ----------------------------------------------------------------------------------------------------
def log_html(text: str, truncated: bool, stream: str) -> str:
    """A log shown as text, never as markup: a tool printing ``<script>`` shows ``<script>``."""
    note = f"<div><i>last {len(text.encode())} bytes of {stream}: the file is longer</i></div>" if truncated else ""
    body = html.escape(text) if text else "<i>(empty)</i>"
    return (f"{note}<pre style='max-height:320px;overflow:auto;white-space:pre-wrap;background:#f7f7f7;"
            f"padding:6px;margin:0'>{body}</pre>")


ATTEMPT_FIELDS = ("attempt", "status", "exitcode", "exit_description", "failure", "start_time", "end_time", "realtime",
                  "hostname", "worker", "backend", "job_id", "error")


def attempts_table(attempts: list[dict[str, Any]]) -> pandas.DataFrame:
    """The attempt history as rows (only the fields that tell why an attempt ended)."""
    import pandas as pd

    rows = [{key: "" if attempt.get(key) is None else str(attempt.get(key)) for key in ATTEMPT_FIELDS}
            for attempt in attempts]                      # as text: no NaN or 0.0 where a summary had null or 0
    return pd.DataFrame(rows, columns=list(ATTEMPT_FIELDS), dtype=object)


# -- what one task ran and what it was given -------------------------------------------------------------------
def _present(value: Any) -> bool:
    """A value a file gave (not None, NaN, NA or empty text)."""
    import pandas as pd

    if value is None or (isinstance(value, str) and value == ""):
        return False
    try:
        return not bool(pd.isna(value))
    except (TypeError, ValueError):          # a list or other container: present
        return True


def exit_text(record: Any) -> str:
    """The exit code and what it means: the descriptor's ``error-codes`` description, a signal, or why none."""
    code, status = record.get("exitcode"), str(record.get("status"))
    signal = record.get("signal")
    if not _present(code):
        return {"running": "none yet (running)", "pending": "none yet (waiting to run)",
                "not launched": "none (never launched)",
                "interrupted": "none (interrupted: its launch ended before it did)"}.get(
            status, "none (the tool did not exit by itself)")
    code = int(code)
    if _present(record.get("exit_description")):
        meaning = str(record.get("exit_description"))
    elif code == 0:
        meaning = "success"
    else:
        meaning = "not described in the descriptor's error-codes"
    if _present(signal):
        meaning += f" (killed by signal {signal})"
    return f"{code}: {meaning}"


def _mib(value: Any) -> str:
    if not _present(value):
        return ""
    mib = float(value) / MIB
    return f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.1f} MiB"


def _requested(record: Any, info: RunInfo | None) -> dict[str, str]:
    """What the back-end was asked for each resource, else what the descriptor suggests (said so), else nothing."""
    suggested = info.suggested if info else {}
    asked = {"cpu": f"{int(record['requested_cpus'])} CPU(s)" if _present(record.get("requested_cpus")) else "",
             "memory": _mib(record.get("requested_memory")),
             "walltime": seconds_text(float(record["requested_walltime"]))
             if _present(record.get("requested_walltime")) else ""}
    hints = {"cpu": (suggested.get("cpu-cores"), lambda v: f"{v} CPU(s)"),
             "memory": (suggested.get("ram"), lambda v: f"{v} GB"),
             "walltime": (suggested.get("walltime-estimate"), lambda v: seconds_text(float(v)))}
    for key, (value, show) in hints.items():
        if not asked[key] and isinstance(value, (int, float)) and not isinstance(value, bool):
            asked[key] = f"{show(value)} (suggested by the descriptor)"
        asked[key] = asked[key] or "nothing requested"
    return asked


def _used(record: Any) -> dict[str, str]:
    cpu = []
    if _present(record.get("cpu_percent")):
        cpu.append(f"{float(record['cpu_percent']):.0f}% of a CPU on average")
    if _present(record.get("peak_cpu")):
        cpu.append(f"{float(record['peak_cpu']):.0f}% at most")
    if _present(record.get("cpu_time")):
        cpu.append(f"{seconds_text(float(record['cpu_time']))} CPU time")
    memory = _mib(record.get("peak_rss"))
    if memory and record.get("peak_rss_upper_bound") is True:     # the tool stayed within its spawner's size
        memory = f"at most {memory}"
    return {"cpu": ", ".join(cpu) or "not measured",
            "memory": f"{memory} peak" if memory else "not measured",
            "walltime": seconds_text(float(record["duration"])) if _present(record.get("duration")) else "not measured"}


def task_facts_html(record: Any, info: RunInfo | None) -> str:
    """One task: command line, exit code and its meaning, failure class, container, where it ran, and requested
    against used CPU, memory and walltime; every value escaped (all of it comes from files)."""
    def cell(value: Any, empty: str = "") -> str:
        return html.escape(str(value)) if _present(value) else f"<i>{html.escape(empty)}</i>"

    failure = cell(record.get("failure"), "none")
    if _present(record.get("error")):
        failure += f"<div class='clowdr-error'>{html.escape(str(record.get('error')))}</div>"
    container = (cell(record.get("container_image")) if _present(record.get("container_image"))
                 else "<i>none: ran on the host</i>")
    where = " &middot; ".join(f"{label} {cell(record.get(key))}" for label, key in (
        ("host", "hostname"), ("worker", "worker"), ("back-end", "backend"), ("job", "job_id"))
        if _present(record.get(key))) or "<i>not run yet</i>"
    command = (f"<pre class='clowdr-command'>{html.escape(str(record.get('command')))}</pre>"
               if _present(record.get("command")) else "<i>not recorded (the original Clowdr did not keep it)</i>"
               if record.get("format") == "original" else "<i>not recorded yet</i>")
    tool = " ".join(str(v) for v in (record.get("tool"), record.get("tool_version")) if _present(v))
    facts = [("tool", cell(tool, "unknown")), ("command", command),
             ("exit code", f"<span class='clowdr-exit'>{html.escape(exit_text(record))}</span>"),
             ("failure class", failure), ("container", container), ("ran on", where)]
    rows = "".join(f"<tr><th>{label}</th><td>{value}</td></tr>" for label, value in facts)
    asked, used = _requested(record, info), _used(record)
    resources = "".join(f"<tr><th>{label}</th><td>{html.escape(asked[key])}</td><td>{html.escape(used[key])}</td></tr>"
                        for label, key in (("CPU", "cpu"), ("memory", "memory"), ("walltime", "walltime")))
    return (f"<table class='clowdr-facts'>{rows}</table>"
            "<table class='clowdr-resources'><tr><th></th><th>requested</th><th>used</th></tr>"
            f"{resources}</table>")


def task_title_html(record: Any) -> str:
    return (f"<h3>{html.escape(task_key(record['run_id'], record['task']))}: "
            f"{html.escape(str(record['status']))}</h3>")


def usage_note(frame: pandas.DataFrame, rows: Sequence[int], usage: dict[str, list[Any]],
               io: dict[str, list[Any]]) -> str:
    """Why the CPU/RAM/I-O plots show what they show, or nothing: per task without samples, the reason."""
    if not rows:
        return "<i>Select tasks in the table or the timeline to plot their CPU, RAM and I/O.</i>"
    drawn = set(usage["label"])
    reasons = []
    for row in rows:
        record = frame.iloc[row]
        key = task_key(record["run_id"], record["task"])
        if key in drawn:
            if key not in io["label"] and record.get("format") == "original":
                reasons.append(f"{key}: no I/O (the original Clowdr recorded CPU and RAM only)")
            continue
        status = str(record["status"])
        if status in ("pending", "not launched"):
            why = "has not run" if status == "pending" else "was never launched"
        elif status == "running":
            why = "no sample yet"
        elif _present(record.get("duration")):
            why = f"ran {seconds_text(float(record['duration']))}: it ended before its first usage sample"
        else:
            why = "no usage samples were recorded"
        reasons.append(f"{key}: {why}")
    text = f"{len(drawn)} of {len(rows)} selected task(s) plotted."
    if reasons:
        text += " " + "; ".join(reasons) + "."
    return f"<i>{html.escape(text)}</i>"
