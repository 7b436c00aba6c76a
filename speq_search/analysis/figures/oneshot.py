"""A one-shot search's prediction against the truth: each fine-tuned assignment's accuracy on the
supernet (its evaluation) against its accuracy once fine-tuned, with Kendall's tau between them."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import pandas as pd

from speq_search.analysis.figures.common import PALETTE, axis_title, percent_axis
from speq_search.analysis.load import LoadError

if TYPE_CHECKING:
    from speq_search.analysis.figures import FigureRequest


class OneShotData(NamedTuple):
    """The fine-tuned trials of each run: ``run, trial_id, supernet_val_acc, <y>``; tau per run."""

    table: pd.DataFrame
    y: str
    tau: dict[str, float]  # run -> Kendall's tau between the supernet's accuracy and ``y`` (NaN: under 3 trials)


def kendall_tau(a, b) -> float:
    """Kendall's tau-b between two sequences (NaN with fewer than 3 pairs or no variation)."""
    from scipy.stats import kendalltau

    if len(a) < 3:
        return float("nan")
    return float(kendalltau(a, b).statistic)


def figure_data(runs, df: pd.DataFrame, request: FigureRequest) -> OneShotData:
    """The fine-tuned rows of one-shot runs (``fidelity`` finetuned, with ``supernet_val_acc``)."""
    y = request.y if request.y in ("val_acc", "test_acc") else "val_acc"
    if "supernet_val_acc" not in df or "fidelity" not in df:
        raise LoadError("run", runs[0].source, "a one-shot search's run folder (fine-tuned trials with supernet_val_acc)")
    rows = df[(df["fidelity"] == "finetuned") & df["supernet_val_acc"].notna() & df[y].notna()]
    if rows.empty:
        raise LoadError("run", runs[0].source, "a one-shot search that fine-tuned assignments (none yet)")
    table = rows[["run", "trial_id", "supernet_val_acc", y]].reset_index(drop=True)
    tau = {name: kendall_tau(g["supernet_val_acc"], g[y]) for name, g in table.groupby("run", sort=False)}
    return OneShotData(table, y, tau)


def render(data: OneShotData):
    """A scatter of the supernet's accuracy (x) against the fine-tuned accuracy (y), one colour per run."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (name, group) in enumerate(data.table.groupby("run", sort=False)):
        fig.add_trace(go.Scatter(x=group["supernet_val_acc"], y=group[data.y], mode="markers", name=str(name),
                                 marker={"color": PALETTE[i % len(PALETTE)], "size": 9}, text=group["trial_id"],
                                 hovertemplate="trial %{text}<br>supernet %{x:.2%}<br>fine-tuned %{y:.2%}"))
    taus = "; ".join(f"{name}: tau {t:+.2f}" for name, t in data.tau.items())
    fig.update_layout(title=f"The supernet's prediction against the fine-tuned accuracy ({taus})",
                      xaxis={"title": axis_title("supernet_val_acc"), **percent_axis("supernet_val_acc")},
                      yaxis={"title": axis_title(data.y), **percent_axis(data.y)}, template="plotly_white")
    return fig


__all__ = ["OneShotData", "kendall_tau"]
