"""What every figure shares: colours, marker shapes, axis titles and formats, hover text."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from speq_search import schema

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
GROUP_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "star", "hexagon", "x")
# Titles of the parameters an axis may show (metrics have theirs in speq_search.schema).
PARAM_TITLES = {"w_bits": "weight bits", "a_bits": "activation bits",
                "p_high": "teacher's high-precision probability (p_high)", "high_bits": "teacher's high bits"}
# Columns hovering over a trial does not list: bookkeeping, not configuration.
SKIP_HOVER = {"run", "status", "error", "trial_dir", "full_fidelity", "epochs_total", "wall_time_s"}


def axis_title(metric: str) -> str:
    """``"validation accuracy (%)"`` for ``val_acc``; other names as they are."""
    return PARAM_TITLES.get(metric) or schema.title(metric)


def percent_axis(metric: str) -> dict:
    """Accuracies are stored as fractions and shown as percentages."""
    return {"tickformat": ".1%"} if schema.is_score(metric) else {}


def hover_texts(rows: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    """One text per row: ``column: value`` lines for the columns it has a value in."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return ["<br>".join(f"{c}: {fmt(r[c])}" for c in cols if c in r and not pd.isna(r[c])) for _, r in rows.iterrows()]
