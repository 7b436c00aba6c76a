"""Bits per layer along the front: a heatmap of each front trial's weight (and activation) bits per layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import pandas as pd

from speq_search.analysis.load import LoadError, completed_trials, expand_layer_bits
from speq_search.analysis.pareto import front_rows

if TYPE_CHECKING:
    from speq_search.analysis.figures import FigureRequest


class LayerBitsData(NamedTuple):
    """Front trials (rows, cheapest first) x layers (columns, model order): weight and activation bits."""

    w_bits: pd.DataFrame
    a_bits: pd.DataFrame


def layer_bits_data(df: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> LayerBitsData:
    """Each front trial's bits per layer, from its ``layer_bits`` column (empty tables if none)."""
    done = completed_trials(df).dropna(subset=[m for m, _ in objectives])
    front = front_rows(done, objectives) if len(done) else done
    long = expand_layer_bits(front)
    if long.empty:
        return LayerBitsData(pd.DataFrame(), pd.DataFrame())
    order = list(dict.fromkeys(front["trial_id"]))
    tables = [long.pivot_table(index="trial_id", columns="layer", values=v, sort=False).loc[order]
              for v in ("w_bits", "a_bits")]
    return LayerBitsData(*tables)


def render_layer_bits(data: LayerBitsData, title: str = "Bits per layer along the front (weights/activations)"):
    import plotly.graph_objects as go

    w, a = data.w_bits, data.a_bits
    text = [[f"{int(wv)}/{int(av)}" for wv, av in zip(wr, ar)] for wr, ar in zip(w.to_numpy(), a.to_numpy())]
    fig = go.Figure(go.Heatmap(z=w.to_numpy(), x=list(w.columns), y=[str(i) for i in w.index], text=text,
                               texttemplate="%{text}", colorscale="Viridis", colorbar={"title": {"text": "w bits"}}))
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="front trial", template="plotly_white")
    fig.update_yaxes(autorange="reversed", title_text="front trial (cheapest at the top)")
    return fig


def figure_data(runs, df: pd.DataFrame, request: FigureRequest) -> LayerBitsData:
    """The first run's front trials' bits per layer."""
    bits = layer_bits_data(df, runs[0].objectives) if runs[0].objectives else None
    if bits is None or bits.w_bits.empty:
        raise LoadError("run", runs[0].source, "completed trials with a layer_bits column (searches since "
                        "per-layer bits were added)")
    return bits


def render(data: LayerBitsData):
    """See :func:`render_layer_bits`."""
    return render_layer_bits(data)


__all__ = ["LayerBitsData", "layer_bits_data", "render_layer_bits"]
