"""Figures, in two steps: a pure function computes what to draw, another renders it (plotly)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from speq_search.analysis.pareto import pareto_mask


class FrontInfo(NamedTuple):
    """What an accuracy-versus-cost front figure shows."""

    x: str
    y: str
    x_front: list[float]
    y_front: list[float]
    x_dominated: list[float]
    y_dominated: list[float]
    hover_front: list[str]
    hover_dominated: list[str]
    log_x: bool


def front_info(df: pd.DataFrame, x: str, y: str, x_mode: str = "min", y_mode: str = "max",
               hover_columns: list[str] | None = None) -> FrontInfo:
    """Completed trials split into front and dominated points, the front sorted along ``x``."""
    done = df[df["status"] == "COMPLETED"] if "status" in df else df
    done = done.dropna(subset=[x, y])
    mask = pareto_mask(done[[x, y]].to_numpy(dtype=float), [x_mode, y_mode])
    cols = hover_columns or [c for c in done.columns if c not in (x, y)][:12]

    def hover(rows: pd.DataFrame) -> list[str]:
        return ["<br>".join(f"{c}: {r[c]}" for c in cols if c in r) for _, r in rows.iterrows()]

    front = done[mask].sort_values(x)
    dominated = done[~mask]
    xs = done[x].to_numpy(dtype=float)
    log_x = bool(len(xs) and xs.min() > 0 and xs.max() / xs.min() > 50)
    return FrontInfo(x, y, front[x].tolist(), front[y].tolist(), dominated[x].tolist(), dominated[y].tolist(),
                     hover(front), hover(dominated), log_x)


def render_front(info: FrontInfo, title: str = ""):
    """A plotly figure of :class:`FrontInfo`: the front as a step line, dominated points faded."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=info.x_dominated, y=info.y_dominated, mode="markers", name="dominated",
                             marker={"color": "rgba(120,120,120,0.35)", "size": 8}, hovertext=info.hover_dominated,
                             hoverinfo="text"))
    fig.add_trace(go.Scatter(x=info.x_front, y=info.y_front, mode="lines+markers", name="Pareto front",
                             line={"shape": "hv"}, marker={"size": 10}, hovertext=info.hover_front, hoverinfo="text"))
    fig.update_layout(title=title or f"{info.y} vs {info.x}", xaxis_title=info.x, yaxis_title=info.y,
                      template="plotly_white")
    if info.log_x:
        fig.update_xaxes(type="log")
    return fig


def front_figure(df: pd.DataFrame, spec, x: str, y: str):
    """The run's front figure: x and y modes from the space's objectives."""
    modes = {o.metric: o.mode for o in spec.objectives}
    hover = [p.name for p in spec.params] + [o.metric for o in spec.objectives] + ["test_acc", "trial_id"]
    info = front_info(df, x, y, modes.get(x, "min"), modes.get(y, "max"), hover)
    return render_front(info, f"{spec.name}: {y} vs {x}")


def browser_available() -> bool:
    """Whether kaleido can find a Chrome/Chromium to export images with."""
    return any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome"))


def write_figure(fig, html_path: Path, png: bool = True) -> str:
    """Write self-contained HTML (works offline) and, when a browser is present, a PNG.

    Returns one line saying what was written or why the PNG was skipped; never raises for
    a missing browser.
    """
    html_path = Path(html_path)
    fig.write_html(str(html_path), include_plotlyjs=True)
    if not png:
        return f"wrote {html_path}"
    if not browser_available():
        return f"wrote {html_path}; PNG skipped: no Chromium found (apt-get install chromium)"
    try:
        fig.write_image(str(html_path.with_suffix(".png")), width=900, height=600)
    except Exception as err:  # kaleido missing or the browser failed to start
        return f"wrote {html_path}; PNG skipped: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
    return f"wrote {html_path} and {html_path.with_suffix('.png').name}"


__all__ = ["FrontInfo", "browser_available", "front_figure", "front_info", "render_front", "write_figure"]

