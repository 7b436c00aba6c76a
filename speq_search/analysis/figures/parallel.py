"""Parallel coordinates: each completed trial a line across one axis per parameter and objective."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import pandas as pd

from speq_search import schema
from speq_search.analysis.figures.common import axis_title
from speq_search.analysis.load import completed_trials

if TYPE_CHECKING:
    from speq_search.analysis.figures import FigureRequest


class ParallelData(NamedTuple):
    """Axes of a parallel-coordinates figure: per column, numeric values and tick labels."""

    columns: list[str]
    values: list[list[float]]
    ticks: list[tuple[list[float], list[str]] | None]  # categorical axes: codes and labels
    color: list[float]
    color_label: str


def parallel_data(df: pd.DataFrame, params: Sequence[str], objectives: Sequence[str]) -> ParallelData:
    """Completed trials on one axis per parameter and objective; categories become codes."""
    done = completed_trials(df)
    cols = [c for c in [*params, *objectives] if c in done and done[c].notna().any()]
    values, ticks = [], []
    discrete = set(params)
    for c in cols:
        col = done[c]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            values.append(col.astype(float).tolist())
            levels = sorted(col.dropna().unique().tolist())
            # A choice among a few numbers (bits 2, 3, 4, 8): ticks at those values alone, not at 7.5.
            ticks.append(([float(v) for v in levels], [f"{v:g}" for v in levels])
                         if c in discrete and len(levels) <= 8 else None)
        else:
            cats = sorted(col.astype(str).unique())
            values.append([float(cats.index(str(v))) for v in col])
            ticks.append(([float(i) for i in range(len(cats))], cats))
    color_col = objectives[0] if objectives and objectives[0] in done else (cols[-1] if cols else "")
    return ParallelData(cols, values, ticks, done[color_col].astype(float).tolist() if color_col else [], color_col)


def render_parallel(data: ParallelData, title: str = "Parameters and objectives"):
    import plotly.graph_objects as go

    dims = []
    for c, v, t in zip(data.columns, data.values, data.ticks):
        dim = {"label": c, "values": v}
        if t:
            dim.update(tickvals=t[0], ticktext=t[1])
        elif schema.is_score(c):
            dim["tickformat"] = ".1%"
        dims.append(dim)
    color = {"color": data.color, "colorscale": "Viridis", "showscale": True,
             "colorbar": {"title": {"text": axis_title(data.color_label)}}}
    if schema.is_score(data.color_label):
        color["colorbar"]["tickformat"] = ".1%"
    fig = go.Figure(go.Parcoords(dimensions=dims, line=color))
    fig.update_layout(title=title, template="plotly_white")
    return fig


def figure_data(runs, df: pd.DataFrame, request: FigureRequest) -> ParallelData:
    """Every run's parameters, then ``request.y`` and the runs' objectives (the first colours the lines)."""
    params = list(dict.fromkeys(p for r in runs for p in r.params))
    objectives = list(dict.fromkeys([request.y] + [m for r in runs for m, _ in r.objectives]))
    return parallel_data(df, params, objectives)


def render(data: ParallelData):
    """See :func:`render_parallel`."""
    return render_parallel(data)


__all__ = ["ParallelData", "parallel_data", "render_parallel"]
