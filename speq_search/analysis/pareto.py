"""Pareto fronts and hypervolume for any mix of max/min objectives: numpy and moocore; no plotting.

Dominance is tested on values turned into "minimise" form (moocore's ``is_nondominated``). A
point is on the front when no other point is at least as good in every objective and better in
one: duplicates do not dominate each other, so both copies of a tied point stay on the front;
rows with a NaN or an infinity in any objective are never on it.

Reference-point rule (also what ``summary.json`` reports). Every objective is mapped to a
"loss" in which 0 is ideal and 1 is the reference point:

- accuracy metrics (``*_acc``, in [0, 1], maximised): ``1 - acc`` (reference: accuracy 0);
- bit metrics (``avg_bits``, ``avg_w_bits``, ``avg_a_bits``): ``bits / 32`` (reference: full precision);
- model costs (``size_bytes``, ``bitops``, ``macs``, ``params``): the value divided by the value of
  the same architecture at full precision (reference: the float model);
- anything else: the value divided by 1.1 times the largest value among the points given.

The hypervolume is then the volume dominated by the front inside the unit box: 1.0 would be
perfect accuracy at no cost. Points outside the box add nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from speq_search import schema


def to_minimization(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Negate the columns whose mode is ``max``."""
    values = np.asarray(values, dtype=float)
    sign = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    return values * sign


def pareto_mask(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (n_points x n_objectives).

    moocore's ``is_nondominated`` on the minimisation form, keeping weakly non-dominated
    duplicates (both copies of a tied front point stay); rows with a NaN or an infinity are
    left out first, so they are never on the front and dominate nothing.
    """
    loss = to_minimization(np.atleast_2d(values), modes)
    mask = np.zeros(loss.shape[0], dtype=bool)
    finite = np.isfinite(loss).all(axis=1)
    if finite.any():
        import moocore

        mask[finite] = moocore.is_nondominated(np.ascontiguousarray(loss[finite]), maximise=False, keep_weakly=True)
    return mask


def front_rows(df: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """The non-dominated rows of ``df`` under ``objectives`` ((metric, mode) pairs).

    Sorted by the cost objectives, then by the first one. Tied rows all stay (see the module
    docstring); ``df`` is expected to hold only the trials that may be on a front.
    """
    if df.empty:
        return df
    metrics = [m for m, _ in objectives]
    mask = pareto_mask(df[metrics].to_numpy(dtype=float), [d for _, d in objectives])
    return df[mask].sort_values(metrics[1:] + metrics[:1]).reset_index(drop=True)


def best_under_budgets(df: pd.DataFrame, cost: str, budgets: Sequence[float], score: str = "val_acc",
                       mode: str = "max", others: Sequence[tuple[str, str]] = ()) -> pd.DataFrame:
    """For each budget, the row with the best ``score`` among rows with ``cost <= budget``.

    One row per budget (column ``budget``); a budget no row meets gives a row of NaN. Among rows
    tied on the score, the pick is not dominated on ``cost`` and the run's ``others`` objectives
    ((metric, mode) pairs, e.g. ``[("bitops", "min")]``), and is the cheapest on them in turn:
    W3A3 at 6.5 M BitOps, not W3A8 at 15.4 M with the same accuracy and size.
    """
    others = [(m, d) for m, d in others if m not in (score, cost) and m in df]
    rows = []
    for budget in budgets:
        ok = df[df[cost] <= budget].dropna(subset=[score])
        if len(ok):
            best = ok[score].max() if mode == "max" else ok[score].min()
            tied = ok[ok[score] == best]
            if others:
                tied = tied[pareto_mask(tied[[cost, *[m for m, _ in others]]].to_numpy(dtype=float),
                                        ["min", *[d for _, d in others]])]
            order = [cost, *[m for m, _ in others]]
            ok = tied.sort_values(order, ascending=[True, *[d == "min" for _, d in others]], kind="stable")
        rows.append((ok.iloc[[0]] if len(ok) else df.iloc[0:0].reindex([0])).assign(budget=budget))
    return pd.concat(rows, ignore_index=True)[["budget", *df.columns]]


def normalise(values: np.ndarray, metrics: Sequence[str], modes: Sequence[str],
              full_precision: Mapping[str, float] | None = None) -> np.ndarray:
    """Map each objective column to the [0 = ideal, 1 = reference] loss of the module's rule."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    out = np.empty_like(values)
    full_precision = full_precision or {}
    for j, (metric, mode) in enumerate(zip(metrics, modes)):
        col = values[:, j]
        if schema.is_score(metric):
            out[:, j] = 1.0 - col
        elif metric in schema.bit_metrics():
            out[:, j] = col / 32.0
        elif metric in schema.model_cost_metrics() and full_precision.get(metric):
            out[:, j] = col / float(full_precision[metric])
        else:
            top = np.nanmax(np.abs(col)) if np.isfinite(col).any() else 1.0
            scaled = col / (1.1 * top) if top > 0 else col
            out[:, j] = 1.0 - scaled if mode == "max" else scaled
    return out


def reference_values(metrics: Sequence[str], values: np.ndarray,
                     full_precision: Mapping[str, float] | None = None) -> list[float]:
    """The reference point in each metric's own units (for reports)."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    full_precision = full_precision or {}
    ref = []
    for j, metric in enumerate(metrics):
        if schema.is_score(metric):
            ref.append(0.0)
        elif metric in schema.bit_metrics():
            ref.append(32.0)
        elif metric in schema.model_cost_metrics() and full_precision.get(metric):
            ref.append(float(full_precision[metric]))
        else:
            col = values[:, j]
            ref.append(float(1.1 * np.nanmax(np.abs(col))) if np.isfinite(col).any() else float("nan"))
    return ref


def _inside(loss: np.ndarray) -> np.ndarray:
    """The rows that add volume: finite and better than the reference point (1) in every objective."""
    return np.isfinite(loss).all(axis=1) & np.all(loss < 1.0, axis=1)


def _hypervolume_of_losses(loss: np.ndarray) -> float:
    """Volume dominated by the rows of ``loss`` (minimised) up to the reference point 1 (moocore)."""
    import moocore

    loss = loss[_inside(loss)]  # moocore must never see an infinity (a log-scaled cost of 0)
    if len(loss) == 0:
        return 0.0
    front = np.unique(loss[pareto_mask(loss, ["min"] * loss.shape[1])], axis=0)
    return float(moocore.hypervolume(front, ref=np.ones(loss.shape[1])))


def hypervolume(values: np.ndarray, metrics: Sequence[str], modes: Sequence[str],
                full_precision: Mapping[str, float] | None = None) -> float:
    """Hypervolume of ``values`` under the module's reference-point rule (moocore computes it)."""
    return _hypervolume_of_losses(normalise(values, metrics, modes, full_precision))


def box_hypervolume(values: np.ndarray, ideal: Sequence[float], reference: Sequence[float],
                    log_axes: Sequence[int] = ()) -> float:
    """Hypervolume in a box chosen for a comparison: ``ideal`` maps to 0, ``reference`` to 1.

    For comparing runs with one another (e.g. from the best to the worst value any of them
    reached), where the fixed rule of :func:`hypervolume` is too coarse. The direction of each
    objective follows from ``ideal`` and ``reference`` (ideal above reference: maximised). Axes in
    ``log_axes`` are scaled by log10 (costs that span orders of magnitude). 1.0 would be a
    point at ``ideal`` in every objective.
    """
    v = np.atleast_2d(np.asarray(values, dtype=float))
    loss = np.empty_like(v)
    for j in range(v.shape[1]):
        col, lo, hi = v[:, j], float(ideal[j]), float(reference[j])
        if j in log_axes:
            col, lo, hi = np.log10(col), np.log10(lo), np.log10(hi)
        span = (hi - lo) or 1.0
        loss[:, j] = (col - lo) / span
    return _hypervolume_of_losses(loss)


def hypervolume_history(values: np.ndarray, metrics: Sequence[str], modes: Sequence[str],
                        full_precision: Mapping[str, float] | None = None) -> list[float]:
    """Hypervolume after each of the first 1, 2, ... points (in the order given).

    The normalisation uses all points, so that every prefix is measured against one
    reference point.
    """
    loss = normalise(values, metrics, modes, full_precision)
    inside = _inside(loss)
    history, front, hv = [], np.zeros((0, loss.shape[1])), 0.0
    for point, counts in zip(loss, inside):
        # Incremental: only a point that no front point weakly dominates changes the volume, and
        # then only the front is measured again (all prefixes at once cost O(n^2) volumes).
        if counts and not np.all(front <= point, axis=1).any():
            front = np.vstack([front[~np.all(point <= front, axis=1)], point])
            hv = _hypervolume_of_losses(front)
        history.append(hv)
    return history
