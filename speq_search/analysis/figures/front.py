"""The front figure: accuracy against a cost, one Pareto front per run or per value of a column.

:func:`front_data` computes what to draw, as Optuna's ``_get_pareto_front_info`` separates best,
other and infeasible trials; :func:`render_fronts` draws it: each front a step line, dominated
trials faded, infeasible ones (over a budget, never trained: a cost but no accuracy) greyed on a
strip of their own below the accuracy axis, failed ones left out, the float model's accuracy a
dashed line, hovering shows the whole configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from speq_search import schema
from speq_search.analysis.figures.common import GROUP_SYMBOLS, PALETTE, SKIP_HOVER, axis_title, hover_texts, percent_axis
from speq_search.analysis.load import LoadError, completed_trials, objective_mode, require_columns
from speq_search.analysis.pareto import pareto_mask

if TYPE_CHECKING:
    from speq_search.analysis.figures import FigureRequest

INFEASIBLE_LABEL = "infeasible (over budget)"
INFEASIBLE_GREY = "#b0b0b0"


class FrontInfo(NamedTuple):
    """One front of a front figure: its points, the dominated ones, and what hovering shows."""

    label: str
    x: str
    y: str
    x_front: list[float]
    y_front: list[float]
    x_dominated: list[float]
    y_dominated: list[float]
    hover_front: list[str]
    hover_dominated: list[str]
    color_front: list  # values of the colour column (empty: the group's colour)
    color_dominated: list
    # The accuracy's 95 % interval as (below, above) distances from each point; empty where unknown.
    error_front: tuple[list[float], list[float]] = ([], [])
    error_dominated: tuple[list[float], list[float]] = ([], [])


class InfeasibleInfo(NamedTuple):
    """Trials over a budget (status INFEASIBLE, never trained): their cost and what hovering shows."""

    x: list[float]
    hover: list[str]


class FrontFigureData(NamedTuple):
    """Everything a front figure shows."""

    x: str
    y: str
    fronts: list[FrontInfo]
    reference: dict[str, float]  # label -> full-precision accuracy line
    color: str | None
    log_x: bool
    group: str | None = None  # the column the fronts are split by (the legend's title)
    infeasible: InfeasibleInfo = InfeasibleInfo([], [])
    title: str = ""


def front_data(df: pd.DataFrame, x: str, y: str, x_mode: str = "min", y_mode: str = "max", group: str | None = None,
               color: str | None = None, hover: Sequence[str] | None = None) -> FrontFigureData:
    """Split completed trials into fronts (one per value of ``group``) and dominated points, and
    gather the infeasible ones.

    Only rows with status COMPLETED (and full fidelity, where the column exists) are on a front
    or dominated; rows with status INFEASIBLE and an ``x`` are the infeasible trials; failed,
    stopped and unfinished trials are left out. The reference line of a group is the mean of
    ``fp_<y>`` (``fp_val_acc`` for ``val_acc``) over its rows, when that column exists.
    """
    # Grouped by fidelity (a one-shot search), each group is a front of its own: every fidelity shown.
    done = completed_trials(df, fidelity=None if group == "fidelity" else "highest").dropna(subset=[x, y])
    cols = list(hover) if hover else [c for c in df.columns if c not in SKIP_HOVER]
    # Runs keep their order (and so their colour in every figure); other columns' values are sorted.
    groups = [(str(k), g) for k, g in done.groupby(group, sort=group != "run")] if group else [("", done)]
    fronts, reference = [], {}
    for label, rows in groups:
        fronts.append(_front_info(rows, label, x, y, [x_mode, y_mode], color, cols))
        fp_col = f"fp_{y}"
        if fp_col in rows and rows[fp_col].notna().any():
            reference[label or "full precision"] = float(rows[fp_col].mean())
    infeasible = _infeasible_info(df, x, group, cols)
    xs = np.r_[done[x].to_numpy(dtype=float), infeasible.x]  # the axis holds the infeasible trials too
    log_x = bool(len(xs) and xs.min() > 0 and xs.max() / xs.min() > 50)
    if len(set(np.round(list(reference.values()), 6))) == 1:  # one line when every group shares the FP model
        reference = {"full precision": next(iter(reference.values()))}
    return FrontFigureData(x, y, fronts, reference, color, log_x, group, infeasible)


def _front_info(rows: pd.DataFrame, label: str, x: str, y: str, modes: list[str], color: str | None,
                cols: list[str]) -> FrontInfo:
    mask = pareto_mask(rows[[x, y]].to_numpy(dtype=float), modes)
    front, dominated = rows[mask].sort_values([x, y]), rows[~mask]
    return FrontInfo(
        label, x, y, front[x].astype(float).tolist(), front[y].astype(float).tolist(),
        dominated[x].astype(float).tolist(), dominated[y].astype(float).tolist(), hover_texts(front, cols),
        hover_texts(dominated, cols), front[color].tolist() if color else [], dominated[color].tolist() if color else [],
        _errors(front, y), _errors(dominated, y))


def _errors(rows: pd.DataFrame, y: str) -> tuple[list[float], list[float]]:
    """The distances from ``y`` down and up to its interval (``<y>_lo``, ``<y>_hi``; see
    :mod:`speq_search.analysis.stats`), or empty lists where the rows have none."""
    lo, hi = f"{y}_lo", f"{y}_hi"
    if lo not in rows or hi not in rows or rows[[lo, hi]].isna().all().all():
        return [], []
    value = rows[y].astype(float)
    return (value - rows[lo].astype(float)).fillna(0).tolist(), (rows[hi].astype(float) - value).fillna(0).tolist()


def _infeasible_info(df: pd.DataFrame, x: str, group: str | None, cols: list[str]) -> InfeasibleInfo:
    if "status" not in df:
        return InfeasibleInfo([], [])
    rows = df[df["status"] == schema.INFEASIBLE].dropna(subset=[x])
    hover = hover_texts(rows, list(dict.fromkeys([*cols, "constraint_violation"])))  # how far over budget
    if group and group not in cols:
        hover = [f"{group}: {g}<br>{h}" for g, h in zip(rows[group], hover)]
    return InfeasibleInfo(rows[x].astype(float).tolist(), hover)


class _Colors(NamedTuple):
    """How points are coloured by the colour column: by category, or on one scale for every trace."""

    categorical: bool
    categories: list[str]
    scale: tuple[float, float] | None

    @classmethod
    def of(cls, data: FrontFigureData) -> _Colors:
        values = [v for f in data.fronts for v in f.color_front + f.color_dominated]
        categorical = bool(values) and not all(isinstance(v, (int, float, np.number)) for v in values)
        return cls(categorical, sorted({str(v) for v in values}) if categorical else [],
                   (float(min(values)), float(max(values))) if values and not categorical else None)

    def marker(self, values: list, base: dict, label: str | None) -> dict:
        """Marker settings: one colour per category, or the shared scale (with its bar when ``label``)."""
        if not values:
            return base
        if self.categorical:
            return {**base, "color": [PALETTE[self.categories.index(str(v)) % len(PALETTE)] for v in values]}
        return {**base, "color": values, "colorscale": "Viridis", "cmin": self.scale[0], "cmax": self.scale[1],
                "showscale": label is not None, "colorbar": {"title": {"text": label or ""}}}


def render_fronts(data: FrontFigureData, title: str = ""):
    """A plotly figure of :class:`FrontFigureData`: fronts as step lines, dominated points faded,
    infeasible trials greyed below the accuracy axis."""
    import plotly.graph_objects as go

    fig = go.Figure()
    colors = _Colors.of(data)
    single = len(data.fronts) == 1
    for i, f in enumerate(data.fronts):
        _add_front(fig, f, i, single, colors, axis_title(data.color) if i == 0 and data.color else None)
    for j, cat in enumerate(colors.categories):  # legend entries of a categorical colour column
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{data.color}={cat}",
                                 marker={"color": PALETTE[j % len(PALETTE)], "size": 9}))
    _add_reference_lines(fig, data)
    _add_infeasible(fig, data.infeasible)
    legend = {"title": {"text": data.group or ("" if single else "run")}}  # beside the plot
    if colors.scale is not None:  # a colour bar stands beside the plot: the legend goes below it
        legend.update(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0)
    fig.update_layout(title=title or data.title or f"{axis_title(data.y)} against {axis_title(data.x)}",
                      xaxis_title=axis_title(data.x), yaxis_title=axis_title(data.y), template="plotly_white",
                      legend=legend)
    fig.update_yaxes(**percent_axis(data.y))
    fig.update_xaxes(**percent_axis(data.x))
    if data.log_x:
        fig.update_xaxes(type="log")
    return fig


def _add_front(fig, f: FrontInfo, i: int, single: bool, colors: _Colors, bar_label: str | None) -> None:
    """A front's dominated points (faded) and the front itself (a step line)."""
    import plotly.graph_objects as go

    base = PALETTE[i % len(PALETTE)]
    symbol = GROUP_SYMBOLS[i % len(GROUP_SYMBOLS)]  # groups differ in shape too, not in colour alone
    name = f.label or "Pareto front"
    fig.add_trace(go.Scatter(
        x=f.x_dominated, y=f.y_dominated, mode="markers", name=f"{f.label} dominated" if f.label else "dominated",
        legendgroup=name, opacity=0.45, hovertext=f.hover_dominated, hoverinfo="text",
        error_y=_error_bars(f.error_dominated, base if not single else "rgb(120,120,120)"),
        marker=colors.marker(f.color_dominated, {"color": base if not single else "rgb(120,120,120)", "size": 7,
                                                 "symbol": symbol}, None)))
    fig.add_trace(go.Scatter(
        x=f.x_front, y=f.y_front, mode="lines+markers", name=name, legendgroup=name,
        line={"shape": "hv", "color": base}, hovertext=f.hover_front, hoverinfo="text",
        error_y=_error_bars(f.error_front, base),
        marker=colors.marker(f.color_front, {"color": base, "size": 10, "symbol": symbol,
                                             "line": {"width": 1, "color": "white"}}, bar_label)))


def _error_bars(errors: tuple[list[float], list[float]], color: str) -> dict:
    """Plotly's error bars of a trace: each point's 95 % interval (none when unknown)."""
    below, above = errors
    if not below:
        return {"visible": False}
    return {"type": "data", "symmetric": False, "array": above, "arrayminus": below, "color": color,
            "thickness": 1, "width": 3}


def _add_reference_lines(fig, data: FrontFigureData) -> None:
    """The float model's accuracy, dashed, drawn below the points (trials above it stay visible)."""
    for k, (label, acc) in enumerate(data.reference.items()):
        fig.add_hline(y=acc, layer="below", line={"dash": "dash", "color": "black" if len(data.reference) == 1
                                                  else PALETTE[k]},
                      annotation_text=f"{label}: {100 * acc:.2f} %" if schema.is_score(data.y) else f"{label}: {acc:.4g}",
                      annotation_position="bottom right")


def _add_infeasible(fig, info: InfeasibleInfo) -> None:
    """Over-budget trials as grey ticks at their cost, on a strip below the accuracy axis (they have
    no accuracy), the x axis under the strip."""
    if not info.x:
        return
    import plotly.graph_objects as go

    fig.add_trace(go.Scatter(x=info.x, y=[0.0] * len(info.x), yaxis="y2", mode="markers", name=INFEASIBLE_LABEL,
                             hovertext=info.hover, hoverinfo="text",
                             marker={"color": INFEASIBLE_GREY, "symbol": "line-ns-open", "size": 14,
                                     "line": {"width": 2}}))
    fig.update_layout(yaxis={"domain": [0.1, 1.0]}, xaxis={"anchor": "y2"},
                      yaxis2={"domain": [0.0, 0.06], "range": [-1, 1], "showticklabels": False, "showgrid": False,
                              "zeroline": False})


def front_figure(df: pd.DataFrame, spec, x: str, y: str, name: str | None = None):
    """The run's front figure: x and y modes from the space's objectives; ``name``: the run's (default: the space's)."""
    modes = {o.metric: o.mode for o in spec.objectives}
    hover = [p.name for p in spec.params] + [o.metric for o in spec.objectives] + ["test_acc", "trial_id"]
    group = None
    if "fidelity" in df and df["fidelity"].nunique() > 1:  # a one-shot search: the evaluated front beside the fine-tuned one
        group, hover = "fidelity", hover + ["supernet_val_acc"]
    data = front_data(df, x, y, modes.get(x, "min"), modes.get(y, "max"), group=group, hover=hover)
    return render_fronts(data, f"{name or spec.name}: {axis_title(y)} against {axis_title(x)}")


def figure_data(runs, df: pd.DataFrame, request: FigureRequest) -> FrontFigureData:
    """The front of ``runs`` (one per run when several, else per value of ``request.group``), its
    modes from their objectives."""
    x, y = request.x, request.y
    for column, option, plottable in ((x, "x", True), (y, "y", True), (request.color, "color", False),
                                      (request.group, "group", False)):
        require_columns(df, [column], option, plottable=plottable)
    group = request.group or ("run" if len(runs) > 1 else None)
    data = front_data(df, x, y, objective_mode(runs, x), objective_mode(runs, y), group=group, color=request.color)
    if not any(f.x_front for f in data.fronts):
        raise LoadError("run", ", ".join(r.source for r in runs), f"completed trials with {x} and {y} to draw")
    names = " vs ".join(r.name for r in runs) if len(runs) > 1 else runs[0].name
    return data._replace(title=f"{names}: {axis_title(y)} against {axis_title(x)}")


def render(data: FrontFigureData):
    """See :func:`render_fronts`."""
    return render_fronts(data)


__all__ = ["FrontFigureData", "FrontInfo", "InfeasibleInfo", "front_data", "front_figure", "render_fronts"]
