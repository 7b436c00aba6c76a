"""Per-layer sensitivity: each layer's validation-accuracy drop when it alone goes to few bits."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import pandas as pd

from speq_search.analysis.figures.common import PALETTE
from speq_search.analysis.load import LoadError

if TYPE_CHECKING:
    from speq_search.analysis.figures import FigureRequest


class SensitivityData(NamedTuple):
    """A run's ``sensitivity.csv`` (columns ``layer, drop, probe_bits, shape_class, params, macs``) and its title."""

    table: pd.DataFrame
    title: str


def render_sensitivity(table: pd.DataFrame, title: str = "Per-layer sensitivity"):
    """Bars of each layer's validation-accuracy drop when it alone goes to few bits."""
    import plotly.graph_objects as go

    bits = int(table["probe_bits"].iloc[0]) if "probe_bits" in table else None
    # In accuracy points, as every accuracy is shown in percent.
    fig = go.Figure(go.Bar(x=table["layer"], y=100 * table["drop"].astype(float), marker_color=PALETTE[0],
                           hovertext=[f"{r.shape_class}, {r.params} weights, {r.macs} MACs" for r in table.itertuples()]))
    fig.update_layout(title=title + (f" (one layer at {bits} bits, the rest at 8)" if bits else ""),
                      xaxis_title="layer", yaxis_title="validation accuracy drop (points)", template="plotly_white")
    return fig


def figure_data(runs, df: pd.DataFrame, request: FigureRequest) -> SensitivityData:
    """The scores of the first run that has them."""
    run = next((r for r in runs if r.sensitivity is not None), None)
    if run is None:
        raise LoadError("run", runs[0].source, "a run folder with sensitivity.csv (per_layer: {sensitivity: true})")
    return SensitivityData(run.sensitivity, f"{run.name}: per-layer sensitivity")


def render(data: SensitivityData):
    """See :func:`render_sensitivity`."""
    return render_sensitivity(data.table, data.title)


__all__ = ["SensitivityData", "render_sensitivity"]
