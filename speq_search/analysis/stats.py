"""How sure an accuracy is: binomial intervals from the split size, and when two front points differ.

An accuracy measured on ``n`` images is a binomial proportion: on digits' 360 validation images
one image is 0.28 points, and a 95 % interval is about +-2 points wide. Every accuracy a run
reports carries one (:func:`add_intervals` adds ``<metric>_lo`` and ``<metric>_hi`` columns):

- **Wilson's score interval** (95 %, :func:`wilson_interval`) of the accuracy on the split, whose
  size each trial reports (``val_images``, ``test_images``). A run from before they were reported
  gets the smallest split size its accuracies fit (:func:`infer_split_size`; every accuracy is
  ``k / n``), flagged in the column ``<split>_images_inferred``.
- **With repeats** (``search.repeats``: a configuration trained with several seeds, its accuracy
  the mean), the seeds' spread is added: each side of the interval is the Wilson half-width and
  the t-interval of the mean over seeds (``<metric>_sd``, ``repeats``) added in quadrature.

Two points are **indistinguishable** when their intervals overlap (:func:`overlaps`): no difference
is shown. A front point that overlaps its cheaper neighbour is no more accurate than it as far as
the split can tell (:func:`front_overlaps`), and :func:`cheapest_indistinguishable` names the
cheapest front point that cannot be told from the most accurate one.

Plain numpy and pandas; no scipy (the t quantiles are tabulated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from speq_search import schema

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
# Student's t 97.5 % quantiles by degrees of freedom (1..30), then the normal's.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
# The accuracies that carry an interval, and the split each one is measured on.
SPLIT_OF = {"val_acc": "val_images", "test_acc": "test_images"}
LEVEL = "95 %"


def t_quantile(df: int) -> float:
    """Student's t 97.5 % quantile for ``df`` degrees of freedom (a two-sided 95 % interval)."""
    if df < 1:
        return math.inf
    return _T975[df - 1] if df <= len(_T975) else Z95


def wilson_interval(acc, n) -> tuple[np.ndarray, np.ndarray]:
    """Wilson's 95 % score interval ``(lo, hi)`` of an accuracy ``acc`` measured on ``n`` images
    (arrays or numbers; NaN where ``n`` is missing or not positive)."""
    p = np.asarray(acc, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.where(n > 0, n, np.nan)
        z2n = Z95**2 / n
        centre = (p + z2n / 2) / (1 + z2n)
        half = Z95 / (1 + z2n) * np.sqrt(np.clip(p * (1 - p), 0, None) / n + z2n / (4 * n))
    # At 0 and 1 the interval ends exactly at the accuracy (the formula gets there up to a rounding).
    return np.where(p <= 0, 0.0, np.clip(centre - half, 0, 1)), np.where(p >= 1, 1.0, np.clip(centre + half, 0, 1))


def infer_split_size(accuracies: Sequence[float], largest: int = 100_000) -> int | None:
    """The smallest ``n`` for which every accuracy is a whole number of images out of ``n``
    (``None`` when none up to ``largest`` fits, or no accuracy is given). A lower bound of the
    true split size: intervals from it are, if anything, too wide."""
    values = np.asarray([a for a in accuracies if a is not None and np.isfinite(a)], dtype=float)
    values = values[(values > 0) & (values < 1)]
    if not len(values):
        return None
    values = np.unique(values)
    for start in range(2, largest + 1, 10_000):  # in blocks: a 10,000 x values table at a time
        ns = np.arange(start, min(start + 10_000, largest + 1), dtype=float)
        k = values[:, None] * ns[None, :]
        fits = np.all(np.abs(k - np.round(k)) < 1e-9 * ns[None, :], axis=0)  # |acc - k/n| < 1e-9
        if fits.any():
            return int(ns[np.argmax(fits)])
    return None


def interval_columns(metric: str) -> tuple[str, str]:
    """``(<metric>_lo, <metric>_hi)``: the columns of ``metric``'s interval."""
    return f"{metric}_lo", f"{metric}_hi"


def add_intervals(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``<acc>_lo`` and ``<acc>_hi`` for each accuracy of :data:`SPLIT_OF` it holds
    (95 %; see the module docstring). A split size missing from every row is inferred from the
    accuracies (and ``<split>_inferred`` set to True); a table without accuracies is returned as it is."""
    out = df.copy()
    for metric, split in SPLIT_OF.items():
        if metric not in out or out[metric].notna().sum() == 0:
            continue
        acc = out[metric].astype(float)
        n = out[split].astype(float) if split in out else pd.Series(np.nan, index=out.index)
        if n.isna().all():
            inferred = infer_split_size(acc.to_numpy())
            if inferred is None:
                continue
            n = pd.Series(float(inferred), index=out.index)
            out[f"{split}_inferred"] = True
        lo, hi = wilson_interval(acc.to_numpy(), n.to_numpy())
        sd_col = f"{metric}_sd"
        if sd_col in out and "repeats" in out:
            lo, hi = _with_seed_spread(acc.to_numpy(), lo, hi, out[sd_col].astype(float).to_numpy(),
                                       out["repeats"].astype(float).to_numpy())
        lo_col, hi_col = interval_columns(metric)
        out[lo_col], out[hi_col] = np.round(lo, 6), np.round(hi, 6)
    return out


def _with_seed_spread(acc, lo, hi, sd, repeats):
    """Each side of the Wilson interval widened by the t-interval of a mean over ``repeats`` seeds
    (added in quadrature); rows of one seed, or without a spread, keep their Wilson interval."""
    t = np.array([t_quantile(int(r) - 1) if np.isfinite(r) and r > 1 else 0.0 for r in repeats])
    with np.errstate(invalid="ignore"):
        seed = np.where(np.isfinite(sd) & (t > 0), t * sd / np.sqrt(np.maximum(repeats, 1)), 0.0)
    return (np.clip(acc - np.hypot(acc - lo, seed), 0, 1), np.clip(acc + np.hypot(hi - acc, seed), 0, 1))


def overlaps(lo_a, hi_a, lo_b, hi_b) -> bool:
    """Two intervals share a value: no difference between the two accuracies is shown."""
    return bool(lo_a <= hi_b and lo_b <= hi_a)


def front_overlaps(front: pd.DataFrame, metric: str, cost: str) -> list[bool | None]:
    """For each row of ``front`` (in its order): whether its ``metric`` interval overlaps that of
    the next cheaper row by ``cost`` (``None`` for the cheapest, or where an interval is unknown)."""
    lo_col, hi_col = interval_columns(metric)
    if lo_col not in front or cost not in front:
        return [None] * len(front)
    order = front[cost].astype(float).argsort(kind="stable").to_numpy()
    result: list[bool | None] = [None] * len(front)
    for prev, cur in zip(order[:-1], order[1:]):
        a, b = front.iloc[cur], front.iloc[prev]
        if all(pd.notna(v) for v in (a[lo_col], a[hi_col], b[lo_col], b[hi_col])):
            result[cur] = overlaps(a[lo_col], a[hi_col], b[lo_col], b[hi_col])
    return result


def cheapest_indistinguishable(front: pd.DataFrame, metric: str, cost: str, mode: str = "max") -> pd.Series | None:
    """The cheapest row of ``front`` whose ``metric`` interval overlaps the best row's (the best
    itself when none is cheaper); ``None`` without intervals."""
    lo_col, hi_col = interval_columns(metric)
    rows = front.dropna(subset=[metric, lo_col, hi_col]) if lo_col in front else front.iloc[0:0]
    if rows.empty or cost not in rows:
        return None
    best = rows.loc[rows[metric].astype(float).idxmax() if mode == "max" else rows[metric].astype(float).idxmin()]
    same = rows[[overlaps(r[lo_col], r[hi_col], best[lo_col], best[hi_col]) for _, r in rows.iterrows()]]
    return same.sort_values([cost, metric], ascending=[True, mode != "max"], kind="stable").iloc[0]


def interval_text(lo: float, hi: float) -> str:
    """``[95.12, 98.20] %`` (an accuracy interval, in percent); ``""`` when unknown."""
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    return f"[{100 * lo:.2f}, {100 * hi:.2f}] %"


def with_interval(metric: str, row) -> str:
    """``96.94 % [95.12, 98.20]`` for a row holding ``metric`` and its interval columns."""
    lo_col, hi_col = interval_columns(metric)
    value = schema.format_value(metric, row[metric])
    if lo_col in row and pd.notna(row[lo_col]) and pd.notna(row[hi_col]):
        return f"{value} [{100 * row[lo_col]:.2f}, {100 * row[hi_col]:.2f}]"
    return value


__all__ = ["LEVEL", "SPLIT_OF", "Z95", "add_intervals", "cheapest_indistinguishable", "front_overlaps",
           "infer_split_size", "interval_columns", "interval_text", "overlaps", "t_quantile", "wilson_interval",
           "with_interval"]
