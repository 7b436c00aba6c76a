"""Learning curves: each trial's per-epoch metric, labelled by its parameters and coloured by a cost."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from speq_search import schema
from speq_search.analysis.figures.common import axis_title, percent_axis
from speq_search.analysis.load import LoadError, learning_curves

if TYPE_CHECKING:
    from speq_search.analysis.figures import FigureRequest


class CurvesData(NamedTuple):
    """What a curves figure draws: one line per trial."""

    curves: pd.DataFrame  # run, trial_id, epoch, <metric> (see speq_search.analysis.load.learning_curves)
    metric: str
    labels: dict  # (run, trial_id) -> the trial's parameters, short (hover and legend)
    color_by: tuple[str, dict] | None  # (cost, {(run, trial_id): value}): lines coloured on its scale


def curves_data(runs, metric: str = "val_acc") -> CurvesData:
    """Every trial's per-epoch ``metric``, labelled by up to six of its run's parameters (prefixed
    by the run's name when several) and coloured by the first cost objective, where known."""
    curves = pd.concat([learning_curves(r, metric) for r in runs], ignore_index=True)
    labels, colors = {}, {}
    cost = next((m for r in runs for m, _ in r.objectives if not schema.is_score(m)), None)
    prefix = len(runs) > 1
    for r in runs:
        params = [p for p in r.params if p in r.trials][:6]
        for _, t in r.trials.iterrows():
            text = " ".join(f"{p}={t[p]:g}" if isinstance(t[p], float) else f"{p}={t[p]}" for p in params)
            labels[(r.name, t["trial_id"])] = (f"{r.name}: " if prefix else "") + (text or str(t["trial_id"]))
            if cost and cost in t and pd.notna(t[cost]):
                colors[(r.name, t["trial_id"])] = float(t[cost])
    return CurvesData(curves, metric, labels, (cost, colors) if colors else None)


def render_curves(curves: pd.DataFrame, metric: str = "val_acc", title: str = "Learning curves",
                  labels: dict | None = None, color_by: tuple[str, dict] | None = None):
    """One line per trial. ``labels`` maps ``(run, trial_id)`` to a short text (the trial's
    parameters) shown on hover; ``color_by = (column, {(run, trial_id): value})`` colours the
    lines on a scale (with a titled colour bar) instead of giving each its own legend entry."""
    import plotly.graph_objects as go
    from plotly.colors import sample_colorscale

    fig = go.Figure()
    labels = labels or {}
    values = color_by[1] if color_by else {}
    finite = [float(v) for v in values.values() if v is not None and np.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    groups = list(curves.groupby(["run", "trial_id"], sort=False))
    legend = not finite and len(groups) <= 8  # a legend of many ids helps nobody
    for (run, trial), rows in groups:
        label = labels.get((run, trial)) or f"{run} {trial}"
        line = {"width": 1.2}
        v = values.get((run, trial))
        if finite and v is not None and np.isfinite(v):
            line["color"] = sample_colorscale("Viridis", [(float(v) - lo) / (hi - lo) if hi > lo else 0.5])[0]
        fig.add_trace(go.Scatter(x=rows["epoch"], y=rows[metric], mode="lines", name=label, line=line, opacity=0.8,
                                 showlegend=legend, hovertemplate=f"{label}<br>epoch %{{x}}: %{{y}}<extra></extra>"))
    if finite:  # the colour bar, on an invisible marker trace
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
                                 marker={"color": [lo, hi], "colorscale": "Viridis", "cmin": lo, "cmax": hi,
                                         "showscale": True, "colorbar": {"title": {"text": axis_title(color_by[0])}}}))
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=axis_title(metric), template="plotly_white")
    fig.update_yaxes(**percent_axis(metric))
    epochs = int(curves["epoch"].max()) if len(curves) else 1
    fig.update_xaxes(tick0=1, dtick=max(1, round(epochs / 10)))  # whole epochs
    return fig


def figure_data(runs, df: pd.DataFrame, request: FigureRequest) -> CurvesData:
    """The curves of ``request.y`` (each epoch's own value; see :func:`curves_data`)."""
    data = curves_data(runs, request.y or "val_acc")
    if data.curves.empty:
        raise LoadError("run", runs[0].source, "a run with a Ray experiment folder (per-epoch results)")
    return data


def render(data: CurvesData):
    """See :func:`render_curves`."""
    return render_curves(data.curves, data.metric, labels=data.labels, color_by=data.color_by)


__all__ = ["CurvesData", "curves_data", "render_curves"]
