"""Figures, in two steps: pure functions compute what to draw (tested), others render it (plotly).

- :func:`front_data` / :func:`render_fronts`: accuracy against a cost axis, one front per run or
  per value of a column (e.g. ``method``), dominated trials faded, failed ones left out, the
  full-precision accuracy as a reference line, hover with the whole configuration;
- :func:`parallel_data` / :func:`render_parallel`: parameters and objectives on parallel axes;
- :func:`importance_data` / :func:`render_importance`: Optuna's parameter importance per objective;
- :func:`render_curves`: per-trial learning curves; :func:`hypervolume_data` /
  :func:`render_hypervolume`: the front's hypervolume as trials accumulate;
- :func:`write_figure`: self-contained HTML, and PNG/SVG through kaleido when Chromium is there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from speq_search import schema
from speq_search.analysis.load import completed_trials, expand_layer_bits
from speq_search.analysis.pareto import hypervolume_history, pareto_mask

_SKIP_HOVER = {"run", "status", "error", "trial_dir", "full_fidelity", "epochs_total", "wall_time_s"}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


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


class FrontFigureData(NamedTuple):
    """Everything a front figure shows."""

    x: str
    y: str
    fronts: list[FrontInfo]
    reference: dict[str, float]  # label -> full-precision accuracy line
    color: str | None
    log_x: bool
    group: str | None = None  # the column the fronts are split by (the legend's title)


# Titles of the parameters an axis may show (metrics have theirs in speq_search.schema).
PARAM_TITLES = {"w_bits": "weight bits", "a_bits": "activation bits",
                "p_high": "teacher's high-precision probability (p_high)", "high_bits": "teacher's high bits"}
GROUP_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "star", "hexagon", "x")


def axis_title(metric: str) -> str:
    """``"validation accuracy (%)"`` for ``val_acc``; other names as they are."""
    return PARAM_TITLES.get(metric) or schema.title(metric)


def _percent_axis(metric: str) -> dict:
    """Accuracies are stored as fractions and shown as percentages."""
    return {"tickformat": ".1%"} if schema.is_score(metric) else {}


def _hover(rows: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return ["<br>".join(f"{c}: {fmt(r[c])}" for c in cols if c in r and not pd.isna(r[c])) for _, r in rows.iterrows()]


def front_data(df: pd.DataFrame, x: str, y: str, x_mode: str = "min", y_mode: str = "max", group: str | None = None,
               color: str | None = None, hover: Sequence[str] | None = None) -> FrontFigureData:
    """Split completed trials into fronts (one per value of ``group``) and dominated points.

    Only rows with status COMPLETED (and full fidelity, where the column exists) are drawn.
    The reference line of a group is the mean of ``fp_<y>`` (``fp_val_acc`` for ``val_acc``)
    over its rows, when that column exists.
    """
    done = completed_trials(df).dropna(subset=[x, y])
    cols = list(hover) if hover else [c for c in df.columns if c not in _SKIP_HOVER]
    groups = [(str(k), g) for k, g in done.groupby(group, sort=True)] if group else [("", done)]
    fronts, reference = [], {}
    for label, rows in groups:
        mask = pareto_mask(rows[[x, y]].to_numpy(dtype=float), [x_mode, y_mode])
        front, dominated = rows[mask].sort_values([x, y]), rows[~mask]
        fronts.append(FrontInfo(
            label, x, y, front[x].astype(float).tolist(), front[y].astype(float).tolist(),
            dominated[x].astype(float).tolist(), dominated[y].astype(float).tolist(), _hover(front, cols),
            _hover(dominated, cols), front[color].tolist() if color else [],
            dominated[color].tolist() if color else []))
        fp_col = f"fp_{y}"
        if fp_col in rows and rows[fp_col].notna().any():
            reference[label or "full precision"] = float(rows[fp_col].mean())
    xs = done[x].to_numpy(dtype=float)
    log_x = bool(len(xs) and xs.min() > 0 and xs.max() / xs.min() > 50)
    if len(set(np.round(list(reference.values()), 6))) == 1:  # one line when every group shares the FP model
        reference = {"full precision": next(iter(reference.values()))}
    return FrontFigureData(x, y, fronts, reference, color, log_x, group)


def _color_marker(values: list, base: dict, categories: list, scale: tuple | None, label: str | None) -> dict:
    """Marker settings: one colour per category, or a colour scale shared by every trace."""
    if not values:
        return base
    if categories:
        return {**base, "color": [PALETTE[categories.index(v) % len(PALETTE)] for v in values]}
    return {**base, "color": values, "colorscale": "Viridis", "cmin": scale[0], "cmax": scale[1],
            "showscale": label is not None, "colorbar": {"title": {"text": label or ""}}}


def render_fronts(data: FrontFigureData, title: str = ""):
    """A plotly figure of :class:`FrontFigureData`: fronts as step lines, dominated points faded."""
    import plotly.graph_objects as go

    fig = go.Figure()
    all_colors = [v for f in data.fronts for v in f.color_front + f.color_dominated]
    categorical = bool(all_colors) and not all(isinstance(v, (int, float, np.number)) for v in all_colors)
    categories = sorted({str(v) for v in all_colors}) if categorical else []
    scale = (float(min(all_colors)), float(max(all_colors))) if all_colors and not categorical else None
    single = len(data.fronts) == 1
    for i, f in enumerate(data.fronts):
        base = PALETTE[i % len(PALETTE)]
        symbol = GROUP_SYMBOLS[i % len(GROUP_SYMBOLS)]  # groups differ in shape too, not in colour alone
        name = f.label or "Pareto front"
        cf = [str(v) for v in f.color_front] if categorical else f.color_front
        cd = [str(v) for v in f.color_dominated] if categorical else f.color_dominated
        fig.add_trace(go.Scatter(
            x=f.x_dominated, y=f.y_dominated, mode="markers", name=f"{f.label} dominated" if f.label else "dominated",
            legendgroup=name, opacity=0.45, hovertext=f.hover_dominated, hoverinfo="text",
            marker=_color_marker(cd, {"color": base if not single else "rgb(120,120,120)", "size": 7, "symbol": symbol},
                                 categories, scale, None)))
        fig.add_trace(go.Scatter(
            x=f.x_front, y=f.y_front, mode="lines+markers", name=name, legendgroup=name, line={"shape": "hv",
                                                                                                  "color": base},
            hovertext=f.hover_front, hoverinfo="text",
            marker=_color_marker(cf, {"color": base, "size": 10, "symbol": symbol,
                                      "line": {"width": 1, "color": "white"}}, categories,
                                 scale, axis_title(data.color) if i == 0 and data.color else None)))
    for j, cat in enumerate(categories):  # legend entries of a categorical colour column
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{data.color}={cat}",
                                 marker={"color": PALETTE[j % len(PALETTE)], "size": 9}))
    for k, (label, acc) in enumerate(data.reference.items()):
        # Drawn below the points, so that trials above the float model stay visible.
        fig.add_hline(y=acc, layer="below", line={"dash": "dash", "color": "black" if len(data.reference) == 1
                                                  else PALETTE[k]},
                      annotation_text=f"{label}: {100 * acc:.2f} %" if schema.is_score(data.y) else f"{label}: {acc:.4g}",
                      annotation_position="bottom right")
    legend_title = data.group or ("" if single else "run")
    fig.update_layout(title=title or f"{axis_title(data.y)} against {axis_title(data.x)}",
                      xaxis_title=axis_title(data.x), yaxis_title=axis_title(data.y), template="plotly_white",
                      legend={"title": {"text": legend_title}})  # beside the plot (plotly's default place)
    fig.update_yaxes(**_percent_axis(data.y))
    fig.update_xaxes(**_percent_axis(data.x))
    if data.log_x:
        fig.update_xaxes(type="log")
    return fig


def front_figure(df: pd.DataFrame, spec, x: str, y: str, name: str | None = None):
    """The run's front figure: x and y modes from the space's objectives; ``name``: the run's (default: the space's)."""
    modes = {o.metric: o.mode for o in spec.objectives}
    hover = [p.name for p in spec.params] + [o.metric for o in spec.objectives] + ["test_acc", "trial_id"]
    data = front_data(df, x, y, modes.get(x, "min"), modes.get(y, "max"), hover=hover)
    return render_fronts(data, f"{name or spec.name}: {axis_title(y)} against {axis_title(x)}")


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


def importance_data(run, seed: int = 0) -> pd.DataFrame:
    """Parameter importance (Optuna's fANOVA, seeded) for each objective of ``run``.

    Columns ``objective, param, importance``; rows sorted by importance within an objective.
    The study is rebuilt in memory from the run's completed, feasible trials, so every source
    (run folder, Ray experiment, Optuna storage) is treated alike, and over-budget trials, which
    study.db holds with placeholder values, do not count. Numeric parameters with more than
    four distinct values are continuous, the rest categorical. Needs three or more completed
    trials and a parameter that varies; otherwise the table is empty. A cost known before
    training (bits, size, BitOps...) is ranked only over the parameters that can change it (bits,
    model, method): fANOVA would otherwise credit a loss weight with the cost of the bits it was
    sampled with. Column ``trials`` holds how many trials back the estimate.
    """
    import optuna

    from speq_search.spec import fields_of

    done = run.completed.dropna(subset=[m for m, _ in run.objectives])
    params = [p for p in run.params if p in done and done[p].notna().all() and done[p].nunique() > 1]
    if len(params) < 1 or len(done) < 3 or not run.objectives:
        return pd.DataFrame(columns=["objective", "param", "importance", "trials"])
    dists = {}
    for p in params:
        col = done[p]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) and col.nunique() > 4:
            dists[p] = optuna.distributions.FloatDistribution(float(col.min()), float(col.max()))
        else:
            dists[p] = optuna.distributions.CategoricalDistribution(sorted(col.unique().tolist(), key=str))
    directions = ["maximize" if d == "max" else "minimize" for _, d in run.objectives]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=directions)
    for _, r in done.iterrows():
        params_of = {p: (float(r[p]) if isinstance(dists[p], optuna.distributions.FloatDistribution) else
                         _native(r[p])) for p in params}
        study.add_trial(optuna.trial.create_trial(params=params_of, distributions=dists,
                                                  values=[float(r[m]) for m, _ in run.objectives]))
    def changes_costs(param: str) -> bool:
        try:
            fields = fields_of(param)
        except Exception:  # noqa: BLE001 - a name the space module does not know: keep it
            return True
        return any(f.startswith(("quant.", "model.")) or f == "speq.method" for f in fields)

    rows = []
    for i, (metric, _) in enumerate(run.objectives):
        cost_params = [p for p in params if changes_costs(p)] if metric in schema.cost_metrics() else params
        if not cost_params:
            continue
        imp = optuna.importance.get_param_importances(
            study, params=cost_params, target=lambda t, i=i: t.values[i],
            evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
        rows += [{"objective": metric, "param": p, "importance": float(v), "trials": len(done)} for p, v in imp.items()]
    return pd.DataFrame(rows, columns=["objective", "param", "importance", "trials"])


def _native(v):
    return v.item() if isinstance(v, np.generic) else v


def render_importance(table: pd.DataFrame, title: str = "Parameter importance (fANOVA)"):
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (objective, rows) in enumerate(table.groupby("objective", sort=False)):
        rows = rows.sort_values("importance")
        fig.add_trace(go.Bar(x=rows["importance"], y=rows["param"], orientation="h", name=axis_title(objective),
                             marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(title=title, barmode="group", template="plotly_white",
                      xaxis_title="importance (share of the objective's variance, fANOVA)",
                      legend={"title": {"text": "objective"}})
    return fig


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
    fig.update_yaxes(**_percent_axis(metric))
    epochs = int(curves["epoch"].max()) if len(curves) else 1
    fig.update_xaxes(tick0=1, dtick=max(1, round(epochs / 10)))  # whole epochs
    return fig


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


def render_sensitivity(table: pd.DataFrame, title: str = "Per-layer sensitivity"):
    """Bars of each layer's validation-accuracy drop when it alone goes to few bits."""
    import plotly.graph_objects as go

    bits = int(table["probe_bits"].iloc[0]) if "probe_bits" in table else None
    fig = go.Figure(go.Bar(x=table["layer"], y=table["drop"], marker_color=PALETTE[0],
                           hovertext=[f"{r.shape_class}, {r.params} weights, {r.macs} MACs" for r in table.itertuples()]))
    fig.update_layout(title=title + (f" (one layer at {bits} bits, the rest at 8)" if bits else ""),
                      xaxis_title="layer", yaxis_title="validation accuracy drop", template="plotly_white")
    return fig


class LayerBitsData(NamedTuple):
    """Front trials (rows, cheapest first) x layers (columns, model order): weight and activation bits."""

    w_bits: pd.DataFrame
    a_bits: pd.DataFrame


def layer_bits_data(df: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> LayerBitsData:
    """Each front trial's bits per layer, from its ``layer_bits`` column (empty tables if none)."""
    from speq_search.analysis.pareto import front_rows

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


NO_BROWSER = ("no Chrome or Chromium found for image export: run `plotly_get_chrome` (or apt-get install chromium), "
              "or set BROWSER_PATH to a Chrome executable")


class ImageExportError(RuntimeError):
    """An image was asked for and none could be made (the HTML was written instead)."""


def browser_path() -> str | None:
    """The Chrome/Chromium kaleido will use, found as kaleido finds it: ``BROWSER_PATH``, a
    browser fetched by ``plotly_get_chrome``/``kaleido_get_chrome``, then the usual names on
    ``PATH`` and install locations."""
    try:
        from choreographer.browsers.chromium import Chromium

        path = Chromium.find_browser(skip_local=False)
    except ImportError:  # kaleido (and choreographer) not installed: export fails anyway
        path = os.environ.get("BROWSER_PATH") or next(
            (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome") if shutil.which(b)),
            None)
    except Exception:  # noqa: BLE001 - a broken browser lookup means no browser, not a crash
        path = None
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None


def browser_available() -> bool:
    """Whether kaleido can find a Chrome/Chromium to export images with."""
    return browser_path() is not None


IMAGE_FORMATS = (".png", ".svg", ".pdf")


@contextlib.contextmanager
def image_session():
    """Keep one browser open for several image exports (each export otherwise starts one)."""
    started = False
    if browser_available():
        try:
            import kaleido

            kaleido.start_sync_server(silence_warnings=True)
            started = True
        except Exception:  # exports then start their own browser, or report why they cannot
            pass
    try:
        yield
    finally:
        if started:
            import kaleido

            kaleido.stop_sync_server(silence_warnings=True)


def export_image(fig, path: Path, width: int = 900, height: int = 560) -> str | None:
    """Write ``fig`` as PNG/SVG/PDF; returns ``None``, or one line saying why it was skipped."""
    if not browser_available():
        return NO_BROWSER
    try:
        with warnings.catch_warnings():  # plotly warns that a running image server ignores its options
            warnings.simplefilter("ignore", UserWarning)
            fig.write_image(str(path), width=width, height=height)
    except Exception as err:  # kaleido missing or the browser failed to start
        return f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
    return None


# Figures load plotly.js from one plotly.min.js beside them (written once per folder, 4.8 MB),
# not a copy inlined in every HTML file; still offline. Copy the .js with the .html files.
PLOTLYJS = "directory"


def ensure_plotlyjs(folder: Path) -> Path:
    """``folder/plotly.min.js`` (plotly's own bundle), written if missing, for pages that load it."""
    path = Path(folder) / "plotly.min.js"
    if not path.exists():
        from plotly.offline import get_plotlyjs

        path.write_text(get_plotlyjs(), encoding="utf-8")
    return path


def write_figure(fig, path: Path, png: bool = True, strict: bool = False) -> str:
    """Write ``fig`` to ``path``: HTML (self-contained, works offline), or an image format.

    HTML files load ``plotly.min.js`` from their folder (written there once). For ``.html``, a
    PNG is written beside it when ``png`` and a browser is present. For
    ``.png``/``.svg``/``.pdf`` without a browser, the HTML is written instead, and then
    ``strict`` raises :class:`ImageExportError` (the image was what the user asked for).
    Returns one line saying what was written or why an image was skipped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in IMAGE_FORMATS:
        why = export_image(fig, path)
        if why is None:
            return f"wrote {path}"
        html = path.with_suffix(".html")
        fig.write_html(str(html), include_plotlyjs=PLOTLYJS)
        note = f"wrote {html}; {path.suffix[1:].upper()} not made: {why}"
        if strict:
            raise ImageExportError(note)
        return note
    fig.write_html(str(path), include_plotlyjs=PLOTLYJS)
    if not png:
        return f"wrote {path}"
    why = export_image(fig, path.with_suffix(".png"))
    return f"wrote {path} and {path.with_suffix('.png').name}" if why is None else f"wrote {path}; PNG skipped: {why}"


__all__ = ["FrontFigureData", "FrontInfo", "ImageExportError", "ParallelData", "browser_available",
           "browser_path", "export_image",
           "front_data", "front_figure", "hypervolume_data", "image_session", "importance_data", "parallel_data",
           "render_curves", "render_fronts", "render_hypervolume", "render_importance",
           "render_parallel", "render_sensitivity", "LayerBitsData", "layer_bits_data", "render_layer_bits", "write_figure"]
