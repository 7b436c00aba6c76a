"""Parameter importance: Optuna's fANOVA, per objective, as horizontal bars."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from speq_search import schema
from speq_search.analysis.figures.common import PALETTE, axis_title
from speq_search.analysis.load import LoadError

if TYPE_CHECKING:
    from speq_search.analysis.figures import FigureRequest


class ImportanceData(NamedTuple):
    """Importance of each parameter for each objective: columns ``objective, param, importance, trials``."""

    table: pd.DataFrame


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

    from speq_search.space import fields_of

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


_PATTERNS = ("", "/", ".", "x", "-", "+")  # one per objective when the colours are the runs'


def render_importance(table: pd.DataFrame, title: str = "Parameter importance (fANOVA)"):
    """Bars of each parameter's importance per objective; with a ``run`` column naming several runs,
    each run in its colour (the one it has in every figure) and each objective in a pattern."""
    import plotly.graph_objects as go

    fig = go.Figure()
    runs = list(dict.fromkeys(table["run"])) if "run" in table else []
    metrics = list(dict.fromkeys(table["metric"])) if "metric" in table else []
    for i, (objective, rows) in enumerate(table.groupby("objective", sort=False)):
        rows = rows.sort_values("importance")
        marker = {"color": PALETTE[i % len(PALETTE)]}
        if len(runs) > 1:
            run, metric = rows["run"].iloc[0], rows["metric"].iloc[0]
            marker = {"color": PALETTE[runs.index(run) % len(PALETTE)],
                      "pattern": {"shape": _PATTERNS[metrics.index(metric) % len(_PATTERNS)]}}
        fig.add_trace(go.Bar(x=rows["importance"], y=rows["param"], orientation="h", name=axis_title(objective),
                             marker=marker))
    fig.update_layout(title=title, barmode="group", template="plotly_white",
                      xaxis_title="importance (share of the objective's variance, fANOVA)",
                      legend={"title": {"text": "objective"}})
    return fig


def figure_data(runs, df: pd.DataFrame, request: FigureRequest) -> ImportanceData:
    """The importance of every run's parameters (objectives named ``run: metric`` when several runs)."""
    tables = [importance_data(r).assign(run=r.name, metric=lambda t: t["objective"]).assign(
        objective=lambda t, r=r: t["objective"] if len(runs) == 1 else r.name + ": " + t["objective"]) for r in runs]
    table = pd.concat(tables, ignore_index=True)
    if table.empty:
        raise LoadError("run", runs[0].source, "three or more completed trials and searched parameters "
                        "for an importance")
    return ImportanceData(table)


def render(data: ImportanceData):
    """See :func:`render_importance`."""
    return render_importance(data.table)


__all__ = ["ImportanceData", "importance_data", "render_importance"]
