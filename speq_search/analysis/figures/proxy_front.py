"""The proxy front (issue 27): each point's predicted accuracy against its cost, before any training,
and, for a run that started on it (``warm_start: sensitivity``), the trained accuracy of its trials.

Drawn by ``speq-search sensitivity --front --figure FILE``, and for a run folder by
:func:`run_proxy_front_data` (its ``proxy-front.csv``); not yet a kind of ``speq-search plot``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pandas as pd

from speq_search import schema
from speq_search.analysis.figures.common import PALETTE
from speq_search.analysis.load import LoadError, completed_trials

PROXY_FILE = "proxy-front.csv"  # written by a search with warm_start: sensitivity (or speq-search sensitivity --front --out)


class ProxyFrontData(NamedTuple):
    """What to draw: the proxy points (``metric``, ``predicted_acc``, ``label``: the assignment), the
    trained trials (``metric``, ``val_acc``; empty when none) and the title."""

    metric: str
    proxy: pd.DataFrame
    trained: pd.DataFrame
    title: str


def proxy_front_data(proxy: pd.DataFrame, metric: str, trained: pd.DataFrame | None = None,
                     title: str = "Proxy front from sensitivity") -> ProxyFrontData:
    """The proxy points cheapest first, each labelled with its per-layer bits; ``trained``'s completed trials."""
    if metric not in proxy:
        raise LoadError("proxy front", metric, "a cost the proxy front lists: " + ", ".join(
            c for c in proxy.columns if c in schema.cost_metrics()))
    bits = [c for c in proxy.columns if "@" in c]
    points = proxy.sort_values(metric).assign(label=[", ".join(f"{c}={int(r[c])}" for c in bits)
                                                      for _, r in proxy.sort_values(metric).iterrows()])
    points = points[[metric, "predicted_acc", "label"]].reset_index(drop=True)
    done = completed_trials(trained) if trained is not None and len(trained) else pd.DataFrame()
    done = done[[metric, "val_acc"]].dropna() if metric in done and "val_acc" in done else pd.DataFrame()
    return ProxyFrontData(metric, points, done.reset_index(drop=True), title)


def render_proxy_front(data: ProxyFrontData):
    """The proxy front as a line of predicted accuracies; trained trials as points."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=data.proxy[data.metric], y=data.proxy["predicted_acc"], mode="lines+markers",
                               name="proxy front (predicted)", hovertext=data.proxy["label"],
                               line={"shape": "hv", "color": PALETTE[0]}))
    if len(data.trained):
        fig.add_trace(go.Scatter(x=data.trained[data.metric], y=data.trained["val_acc"], mode="markers",
                                 name="trained trials", marker={"color": PALETTE[1]}))
    fig.update_layout(title=data.title, xaxis_title=schema.title(data.metric),
                      yaxis_title="validation accuracy (predicted: base minus summed drops)", template="plotly_white")
    return fig


def run_proxy_front_data(run, metric: str) -> ProxyFrontData:
    """A run's proxy front (its ``proxy-front.csv``) with its trained trials (a loaded :class:`~speq_search.analysis.load.Run`)."""
    path = Path(run.source) / PROXY_FILE
    if not path.is_file():
        raise LoadError("run", run.source, f"a run folder with {PROXY_FILE} (warm_start: sensitivity)")
    return proxy_front_data(pd.read_csv(path), metric, run.trials, f"{run.name}: proxy front from sensitivity")


__all__ = ["PROXY_FILE", "ProxyFrontData", "proxy_front_data", "render_proxy_front", "run_proxy_front_data"]
