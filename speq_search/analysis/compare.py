"""Comparing runs so that a difference inside the noise says so.

Two ways, both with a 95 % interval, and a verdict that reads ``no difference shown`` when the
interval holds 0:

- :func:`paired_difference`: trials of the two runs that share a configuration (the same values
  of the parameters both runs search: ``w_bits=3, a_bits=4``) are paired, and the mean of their
  accuracy differences gets a t-interval over the pairs. Pairing removes what the configurations
  themselves contribute; what is left is the method (or setting) that differs between the runs.
- :func:`hypervolume_difference`: the difference of the two fronts' hypervolumes (in one box
  fitted to both, as the report's comparison table measures it) with a bootstrap interval over
  the trials: they are resampled with replacement (the same configurations for both runs when
  both hold the same set, so that the pairing stays), and the percentiles of the resampled
  differences bound it. Where each side is several runs of one search repeated with ``--seed``
  (:func:`group_runs`), the runs are resampled instead: an interval over seeds.

Reads loaded runs (:mod:`speq_search.analysis.load`); numpy and pandas only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from speq_search import schema
from speq_search.analysis.pareto import box_hypervolume
from speq_search.analysis.stats import t_quantile

NO_DIFFERENCE = "no difference shown"
RESAMPLES = 1000


def verdict(lo: float, hi: float, a: str, b: str, what: str = "") -> str:
    """``no difference shown`` when ``[lo, hi]`` holds 0 (or is unknown), else which side is higher."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0 <= hi:
        return NO_DIFFERENCE
    return f"{a if lo > 0 else b} {what or 'higher'}".strip()


# ------------------------------------------------------------------------------------ groups
class RunGroup(NamedTuple):
    """One search, run once or repeated with different ``--seed``: its runs and its name."""

    name: str
    runs: list


def _space_and_seed(run) -> tuple[str | None, object]:
    """The run's resolved space.yaml less its name and sampler seed (what repeats of one search
    share), and that seed; ``(None, None)`` for a source without a space.yaml."""
    path = Path(run.source) / "space.yaml"
    if run.kind != "run" or not path.exists():
        return None, None
    from speq_search.yamlio import load_yaml

    space = load_yaml(path, "space.yaml") or {}
    space.pop("name", None)
    seed = (space.get("search") or {}).pop("seed", None)
    return repr(sorted(space.items(), key=lambda kv: kv[0])), seed


def group_runs(runs: Sequence) -> list[RunGroup]:
    """Runs of one search repeated with different seeds (space.yaml the same but for its name and a
    ``search.seed`` that differs) as one group, named by its first run; every other run a group of
    its own. The order is the runs' own."""
    groups: list[RunGroup] = []
    seen: dict[str, tuple[int, set]] = {}  # space -> (its group, the seeds in it)
    for run in runs:
        key, seed = _space_and_seed(run)
        if key is not None and seed is not None and key in seen and seed not in seen[key][1]:
            groups[seen[key][0]].runs.append(run)
            seen[key][1].add(seed)
            continue
        if key is not None and seed is not None and key not in seen:
            seen[key] = (len(groups), {seed})
        groups.append(RunGroup(run.name, [run]))
    return [g._replace(name=g.name + (f" ({len(g.runs)} seeds)" if len(g.runs) > 1 else "")) for g in groups]


# -------------------------------------------------------------------------- paired difference
class PairedDifference(NamedTuple):
    """Accuracy of ``a`` minus ``b`` over the configurations both hold, in points (100 x)."""

    a: str
    b: str
    metric: str
    configuration: list[str]  # the parameters a configuration is made of
    pairs: pd.DataFrame  # one row per configuration: its values, <metric> (a), <metric> (b), difference
    n: int
    mean: float
    sd: float
    lo: float
    hi: float
    verdict: str

    def text(self) -> str:
        """``speq - qat, val_acc: +0.23 points (sd 0.64) over 16 paired configurations, 95 % interval
        [-0.11, +0.57]: no difference shown``."""
        if self.n == 0:
            return f"{self.a} - {self.b}, {self.metric}: no configuration in common to pair: {NO_DIFFERENCE}"
        interval = f", 95 % interval [{self.lo:+.2f}, {self.hi:+.2f}]" if self.n > 1 else " (one pair: no interval)"
        return (f"{self.a} - {self.b}, {self.metric}: {self.mean:+.2f} points (sd {self.sd:.2f}) over {self.n} paired "
                f"configuration{'s' * (self.n != 1)}{interval}: {self.verdict}")


def configuration_of(runs: Sequence) -> list[str]:
    """The parameters every run searches and holds a column of: what makes two trials the same configuration."""
    return [p for p in runs[0].params if all(p in r.params and p in r.trials for r in runs)]


def _text(values: pd.Series) -> pd.Series:
    """A column's values as text that is the same for 2, 2.0 and "2" (CSV columns with a NaN are floats)."""
    def one(v):
        try:
            return format(float(v), "g")
        except (TypeError, ValueError):
            return str(v)

    return values.map(one)


def _by_configuration(runs: Sequence, config: list[str], metric: str) -> pd.Series:
    done = pd.concat([r.completed for r in runs], ignore_index=True).dropna(subset=[metric, *config])
    if done.empty:
        return pd.Series(dtype=float)
    return done.groupby([_text(done[c]) for c in config])[metric].mean()


def paired_difference(a, b, metric: str = "val_acc") -> PairedDifference:
    """``a`` minus ``b`` (runs, or :class:`RunGroup`\\ s) paired by configuration (see the module
    docstring): the mean difference in points and its t-interval over the pairs. Trials that
    repeat a configuration within a side are averaged first."""
    runs_a, runs_b = _runs_of(a), _runs_of(b)
    config = configuration_of([*runs_a, *runs_b])
    name_a, name_b = _name_of(a), _name_of(b)
    empty = PairedDifference(name_a, name_b, metric, config, pd.DataFrame(), 0, np.nan, np.nan, np.nan, np.nan,
                             NO_DIFFERENCE)
    if not config or any(metric not in r.trials for r in [*runs_a, *runs_b]):
        return empty
    left, right = _by_configuration(runs_a, config, metric), _by_configuration(runs_b, config, metric)
    both = pd.concat([left.rename(f"{metric} ({name_a})"), right.rename(f"{metric} ({name_b})")], axis=1,
                     join="inner")
    if both.empty:
        return empty
    diff = 100 * (both.iloc[:, 0] - both.iloc[:, 1])
    n, mean = len(diff), float(diff.mean())
    sd = float(diff.std(ddof=1)) if n > 1 else np.nan
    half = t_quantile(n - 1) * sd / np.sqrt(n) if n > 1 else np.nan
    pairs = both.assign(**{"difference (points)": diff}).reset_index()
    pairs.columns = [*config, *pairs.columns[len(config):]]
    return PairedDifference(name_a, name_b, metric, config, pairs, n, mean, sd, mean - half, mean + half,
                            verdict(mean - half, mean + half, name_a, name_b))


# ---------------------------------------------------------------------- hypervolume difference
class HypervolumeDifference(NamedTuple):
    """The hypervolume of ``a`` minus that of ``b`` in one box, with a bootstrap 95 % interval."""

    a: str
    b: str
    value: float
    lo: float
    hi: float
    resamples: int
    over: str  # what was resampled: "paired configurations", "trials" or "seeds (runs)"
    verdict: str

    def text(self) -> str:
        return (f"{self.a} - {self.b}, hypervolume (shared box): {self.value:+.4f}, bootstrap 95 % interval "
                f"[{self.lo:+.4f}, {self.hi:+.4f}] ({self.resamples} resamples of {self.over}): {self.verdict}")


class Box(NamedTuple):
    """A box fitted to the runs compared: each objective from the best to the worst value any reached."""

    metrics: list[str]
    ideal: list[float]
    worst: list[float]
    log_axes: list[int]


def shared_box(runs: Sequence, objectives: Sequence[tuple[str, str]]) -> Box:
    """The box of :func:`speq_search.analysis.report.comparison_table`: costs on a log scale."""
    metrics = [m for m, _ in objectives]
    both = np.vstack([r.completed.dropna(subset=metrics)[metrics].to_numpy(dtype=float) for r in runs])
    ideal = [both[:, j].max() if d == "max" else both[:, j].min() for j, (_, d) in enumerate(objectives)]
    worst = [both[:, j].min() if d == "max" else both[:, j].max() for j, (_, d) in enumerate(objectives)]
    log_axes = [j for j, m in enumerate(metrics) if not schema.is_score(m) and both[:, j].min() > 0]
    return Box(metrics, ideal, worst, log_axes)


class _Draws(NamedTuple):
    """A run's completed trials: objective values and the configuration of each."""

    values: np.ndarray  # trials x objectives
    keys: list[str]


def _draws(run, metrics: list[str], config: list[str]) -> _Draws:
    done = run.completed.dropna(subset=metrics)
    keys = ["|".join(row) for row in pd.DataFrame({c: _text(done[c]) for c in config}).to_numpy()] if config else []
    return _Draws(done[metrics].to_numpy(dtype=float), keys)


def _hv(values: np.ndarray, box: Box) -> float:
    return box_hypervolume(values, box.ideal, box.worst, box.log_axes) if len(values) else 0.0


def hypervolume_difference(a, b, objectives: Sequence[tuple[str, str]], resamples: int = RESAMPLES,
                           seed: int = 0) -> HypervolumeDifference:
    """The shared-box hypervolume of ``a`` minus ``b`` (runs, or :class:`RunGroup`\\ s of seeded
    repeats) and its bootstrap 95 % interval (percentiles; see the module docstring)."""
    runs_a, runs_b = _runs_of(a), _runs_of(b)
    box = shared_box([*runs_a, *runs_b], objectives)
    metrics = box.metrics
    config = configuration_of([*runs_a, *runs_b])
    side_a = [_draws(r, metrics, config) for r in runs_a]
    side_b = [_draws(r, metrics, config) for r in runs_b]
    hv_a, hv_b = [_hv(d.values, box) for d in side_a], [_hv(d.values, box) for d in side_b]
    value = float(np.mean(hv_a) - np.mean(hv_b))
    rng = np.random.default_rng(seed)
    if len(side_a) > 1 and len(side_b) > 1:  # seeded repeats on both sides: resample the runs
        over = "seeds (runs)"

        def one() -> float:
            pick_a = rng.integers(0, len(side_a), len(side_a))
            pick_b = rng.integers(0, len(side_b), len(side_b))
            return float(np.mean([hv_a[i] for i in pick_a]) - np.mean([hv_b[i] for i in pick_b]))
    else:
        da, db = _pooled(side_a), _pooled(side_b)
        pairing = _pairing(da, db)
        over = "paired configurations" if pairing is not None else "trials"

        def one() -> float:
            if pairing is not None:
                pick = rng.integers(0, len(pairing[0]), len(pairing[0]))
                rows_a, rows_b = pairing[0][pick], pairing[1][pick]
            else:
                rows_a = rng.integers(0, len(da.values), len(da.values))
                rows_b = rng.integers(0, len(db.values), len(db.values))
            return _hv(da.values[rows_a], box) - _hv(db.values[rows_b], box)

    diffs = np.array([one() for _ in range(resamples)])
    lo, hi = (float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))) if resamples else (np.nan, np.nan)
    return HypervolumeDifference(_name_of(a), _name_of(b), value, lo, hi, resamples, over,
                                 verdict(lo, hi, _name_of(a), _name_of(b), "larger"))


def _pooled(draws: list[_Draws]) -> _Draws:
    return _Draws(np.vstack([d.values for d in draws]), [k for d in draws for k in d.keys])


def _pairing(a: _Draws, b: _Draws) -> tuple[np.ndarray, np.ndarray] | None:
    """Row indices pairing the two sides' configurations, when both hold the same set of them."""
    if not a.keys or set(a.keys) != set(b.keys):
        return None
    first_b = {}
    for i, k in enumerate(b.keys):
        first_b.setdefault(k, i)
    rows_a = np.arange(len(a.keys))
    return rows_a, np.array([first_b[k] for k in a.keys])


def _runs_of(side) -> list:
    return list(side.runs) if isinstance(side, RunGroup) else [side]


def _name_of(side) -> str:
    return side.name


def compare_runs(runs: Sequence, objectives: Sequence[tuple[str, str]] | None = None, metric: str | None = None,
                 resamples: int = RESAMPLES) -> list[tuple[PairedDifference, HypervolumeDifference | None]]:
    """The first group of ``runs`` (:func:`group_runs`) against each other one (first minus other): the
    paired accuracy difference and, where the groups share their objectives, the hypervolume difference."""
    groups = group_runs(runs)
    objectives = list(objectives or groups[0].runs[0].objectives)
    metric = metric or next((m for m, _ in objectives if schema.is_score(m)), "val_acc")
    out = []
    for other in groups[1:]:
        same = all(r.objectives == objectives for g in (groups[0], other) for r in g.runs) and len(objectives) >= 2
        hv = hypervolume_difference(groups[0], other, objectives, resamples) if same else None
        out.append((paired_difference(groups[0], other, metric), hv))
    return out


__all__ = ["NO_DIFFERENCE", "RESAMPLES", "Box", "HypervolumeDifference", "PairedDifference", "RunGroup",
           "compare_runs", "configuration_of", "group_runs", "hypervolume_difference", "paired_difference",
           "shared_box", "verdict"]
