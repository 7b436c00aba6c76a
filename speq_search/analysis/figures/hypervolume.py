"""The front's hypervolume as completed trials accumulate, one line per run."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import pandas as pd

from speq_search.analysis.figures.common import PALETTE
from speq_search.analysis.load import LoadError
from speq_search.analysis.pareto import hypervolume_history

if TYPE_CHECKING:
    from speq_search.analysis.figures import FigureRequest


class HypervolumeData(NamedTuple):
    """Columns ``run, trial, hypervolume``: the hypervolume after each completed trial of each run."""

    table: pd.DataFrame


def hypervolume_data(run) -> pd.DataFrame:
    """Hypervolume of the front after each completed trial, in the order trials finished.

    Uses the same reference rule as ``summary.json`` (see :mod:`speq_search.analysis.pareto`),
    so the last value equals the summary's hypervolume.
    """
    done = run.completed.dropna(subset=[m for m, _ in run.objectives])
    metrics, modes = [m for m, _ in run.objectives], [d for _, d in run.objectives]
    if done.empty or not metrics:
        return pd.DataFrame(columns=["run", "trial", "hypervolume"])
    hv = hypervolume_history(done[metrics].to_numpy(dtype=float), metrics, modes, run.full_precision)
    return pd.DataFrame({"run": run.name, "trial": range(1, len(hv) + 1), "hypervolume": hv})


def render_hypervolume(table: pd.DataFrame, title: str = "Hypervolume as trials accumulate"):
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (run, rows) in enumerate(table.groupby("run", sort=False)):
        fig.add_trace(go.Scatter(x=rows["trial"], y=rows["hypervolume"], mode="lines+markers", name=str(run),
                                 line={"shape": "hv", "color": PALETTE[i % len(PALETTE)]}))
    fig.update_layout(title=title, xaxis_title="completed trials", yaxis_title="hypervolume", template="plotly_white")
    return fig


def figure_data(runs, df: pd.DataFrame, request: FigureRequest) -> HypervolumeData:
    """Every run's hypervolume history (:func:`hypervolume_data`)."""
    table = pd.concat([hypervolume_data(r) for r in runs], ignore_index=True)
    if table.empty:
        raise LoadError("run", runs[0].source, "completed trials and known objectives (a run folder or an "
                        "Optuna storage)")
    return HypervolumeData(table)


def render(data: HypervolumeData):
    """See :func:`render_hypervolume`."""
    return render_hypervolume(data.table)


__all__ = ["HypervolumeData", "hypervolume_data", "render_hypervolume"]
