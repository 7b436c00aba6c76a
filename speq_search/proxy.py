"""A proxy front from sensitivity, before any training (HAWQ-V3, OMPQ: one knapsack per budget).

Each choice of a per-layer space is scored once, post-training (:func:`speq_search.sensitivity.bit_sensitivity`:
the accuracy drop when one group's weights or activations alone take a bit-width). An assignment's
score is the sum of its choices' drops, and its predicted accuracy the base accuracy minus that.
Its costs are exact: each group's choice changes the cost metric by an amount measured on the
model (:func:`speq_search.train.planned_costs`), and the costs of every point are measured again
on the whole model before it is kept.

For a range of budgets on the space's cost objective, the assignment that minimises the summed
score under each budget (and under the space's constraints) comes from one dynamic programme
over the groups that keeps, after each group, the partial assignments that no other beats on
every cost and the score (a Pareto knapsack: exact, no solver). The points are what ``speq-search
sensitivity --front`` prints and draws, and what a space's ``warm_start: sensitivity`` enqueues,
so that the trained search starts on the proxy front.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from speq_search import schema
from speq_search.errors import ConfigError
from speq_search.sensitivity import BitSensitivity
from speq_search.space.model import SearchSpec

DEFAULT_POINTS = 8
SCORES = ("loss", "acc")  # what a choice's score is: its validation-loss increase, or its accuracy drop
DEFAULT_SCORE = "loss"


@dataclass(frozen=True)
class ProxyPoint:
    """One assignment of the proxy front: the space's per-layer parameters, its summed score, the
    accuracy predicted from it, its exact costs and the budget it was chosen under."""

    params: dict
    score: float
    predicted_acc: float
    costs: dict = field(default_factory=dict)
    budget: float = math.inf


@dataclass(frozen=True)
class ProxyFront:
    """The proxy front of a space: its points (cheapest first), the cost ``metric`` the budgets bound,
    the base accuracy (every layer at 8 bits) and the scores it was built from."""

    metric: str
    base_acc: float
    scores: tuple[BitSensitivity, ...]
    points: tuple[ProxyPoint, ...]

    def rows(self) -> list[dict]:
        """One row per point: budget, score, predicted accuracy, the costs, then the parameters."""
        return [{"budget": p.budget, "score": round(p.score, 6), "predicted_acc": round(p.predicted_acc, 6), **p.costs,
                 **p.params} for p in self.points]


def cost_metric(spec: SearchSpec, metric: str | None = None) -> str:
    """The cost a proxy front's budgets bound: ``metric``, else the space's first cost objective,
    else its first constraint's metric, else ``bitops``."""
    if metric is not None:
        if metric not in schema.cost_metrics():
            raise ConfigError("--metric", metric, "a cost known before training: " + ", ".join(schema.cost_metrics()))
        return metric
    for o in spec.objectives:
        if o.metric in schema.cost_metrics():
            return o.metric
    return spec.constraints[0].metric if spec.constraints else "bitops"


def _options(spec: SearchSpec) -> list[tuple[str, list[dict]]]:
    """Each group's choices as parameter assignments: ``[(group, [{param: bits}, ...]), ...]``."""
    choices = spec.group_choices()
    if not choices:
        raise ConfigError("per_layer", spec.per_layer or None, "a space with a per_layer section (the proxy front "
                          "assigns its per-layer bits)")
    out = []
    for group, kinds in choices.items():
        names = [f"{kind}@{group}" for kind in kinds]
        out.append((group, [dict(zip(names, bits)) for bits in itertools.product(*kinds.values())]))
    return out


def _score(option: dict, table: dict) -> float:
    return float(sum(table[(name.partition("@")[2], name.partition("@")[0], bits)] for name, bits in option.items()))


def _tables(scores: Sequence[BitSensitivity], score: str) -> tuple[dict, dict]:
    """``(the table minimised, the accuracy drops)``, keyed by ``(group, kind, bits)``."""
    if score not in SCORES:
        raise ConfigError("--score", score, " | ".join(SCORES))
    drops = {(s.group, s.kind, s.bits): s.drop for s in scores}
    return ({(s.group, s.kind, s.bits): s.loss_increase for s in scores} if score == "loss" else drops), drops


def _option_costs(spec: SearchSpec, groups, metrics: Sequence[str], costs_of) -> tuple[np.ndarray, list[np.ndarray]]:
    """The costs of the all-widest assignment, and each group's option's change of them (one row per option)."""
    base_values = {name: bits for _, options in groups for name, bits in max(options, key=_widest).items()}
    base = np.array([costs_of(base_values)[m] for m in metrics], dtype=float)
    deltas = []
    for _, options in groups:
        deltas.append(np.array([[costs_of({**base_values, **o})[m] for m in metrics] for o in options]) - base)
    return base, deltas


def _widest(option: dict) -> tuple:
    return tuple(sorted(option.values(), reverse=True))


def pareto_knapsack(deltas: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every assignment (one option per group) that no other beats on every cost and the summed score.

    ``deltas[g]``: group g's options' costs (options x costs, any offset), ``scores[g]`` their scores.
    Returns ``(costs, score, choice)`` of the non-dominated assignments (``choice[i, g]``: the option of
    group g). Exact: a partial assignment dominated on costs and score stays dominated whatever the
    other groups add, so pruning after each group loses no optimum.
    """
    import moocore

    costs = np.zeros((1, deltas[0].shape[1]))
    score = np.zeros(1)
    choice = np.zeros((1, 0), dtype=int)
    for d, s in zip(deltas, scores):
        n, k = len(costs), len(d)
        costs = (costs[:, None, :] + d[None, :, :]).reshape(n * k, -1)
        score = (score[:, None] + s[None, :]).reshape(-1)
        choice = np.hstack([np.repeat(choice, k, axis=0), np.tile(np.arange(k), n)[:, None]])
        points = np.column_stack([costs, score])
        keep = moocore.is_nondominated(points, maximise=False, keep_weakly=False) if len(points) > 1 else [True]
        costs, score, choice = costs[keep], score[keep], choice[keep]
    return costs, score, choice


def budgets_between(low: float, high: float, count: int) -> list[float]:
    """``count`` budgets from ``low`` to ``high``: evenly spaced on a log scale when the costs span more
    than 4x (BitOps do), else linearly."""
    if count <= 1 or high <= low:
        return [high]
    if low > 0 and high / low > 4:
        return [float(v) for v in np.geomspace(low, high, count)]
    return [float(v) for v in np.linspace(low, high, count)]


def front_from_scores(spec: SearchSpec, base_acc: float, scores: Sequence[BitSensitivity], points: int = DEFAULT_POINTS,
                      metric: str | None = None, budgets: Sequence[float] | None = None,
                      costs_of: Callable[[dict], dict] | None = None, score: str = DEFAULT_SCORE) -> ProxyFront:
    """The proxy front of ``spec`` from scores already measured (see the module docstring).

    ``budgets`` on ``metric`` (default: ``points`` of them between the cheapest and the widest
    assignment); ``costs_of(values) -> costs`` (default: :func:`speq_search.train.planned_costs` of the
    trial config); ``score``: what is summed and minimised, each choice's validation-loss increase
    (``loss``) or accuracy drop (``acc``). Each point meets its budget and every constraint of the
    space, as measured; its predicted accuracy is the base accuracy minus its choices' drops."""
    metric = cost_metric(spec, metric)
    costs_of = costs_of or _planned_costs(spec)
    metrics = list(dict.fromkeys([metric, *[c.metric for c in spec.constraints]]))
    groups = _options(spec)
    table, drops = _tables(scores, score)
    base, deltas = _option_costs(spec, groups, metrics, costs_of)
    group_scores = [np.array([_score(o, table) for o in options]) for _, options in groups]
    totals, summed, choice = pareto_knapsack(deltas, group_scores)
    totals = totals + base
    sign = np.array([1.0 if c.op == "<=" else -1.0 for c in spec.constraints])
    bounds = np.array([c.bound for c in spec.constraints])
    columns = [metrics.index(c.metric) for c in spec.constraints]
    ok = np.all(sign * totals[:, columns] <= sign * bounds, axis=1) if len(columns) else np.ones(len(totals), bool)
    if not ok.any():
        raise ConfigError("constraints", [str(c) for c in spec.constraints], "budgets some per-layer assignment meets")
    totals, summed, choice = totals[ok], summed[ok], choice[ok]
    if budgets is None:
        budgets = budgets_between(float(totals[:, 0].min()), float(totals[:, 0].max()), points)
    found: list[ProxyPoint] = []
    for budget in sorted(budgets):
        point = _best_under(spec, groups, totals, summed, choice, budget, costs_of, metric, base_acc, drops)
        if point is not None and point.params not in [p.params for p in found]:
            found.append(point)
    return ProxyFront(metric, float(base_acc), tuple(scores), tuple(sorted(found, key=lambda p: p.costs[metric])))


def _best_under(spec, groups, totals, summed, choice, budget, costs_of, metric, base_acc, drops) -> ProxyPoint | None:
    """The least-score assignment whose cost is within ``budget``, measured on the whole model (the
    next one when rounding puts a predicted fit over a budget or a constraint)."""
    for i in sorted(np.flatnonzero(totals[:, 0] <= budget + 1e-9), key=lambda i: (summed[i], totals[i, 0])):
        params = {name: bits for (_, options), c in zip(groups, choice[i]) for name, bits in options[c].items()}
        costs = costs_of(params)
        if costs[metric] <= budget and all(v <= 0 for v in spec.violations(costs).values()):
            measured = {k: v for k, v in costs.items() if k in schema.cost_metrics()}
            predicted = base_acc - _score(params, drops)
            return ProxyPoint(params, float(summed[i]), float(predicted), measured, float(budget))
    return None


def _planned_costs(spec: SearchSpec) -> Callable[[dict], dict]:
    """``values -> the planned costs of their trial config`` (the data loaded once, results kept)."""
    from speq_search.train import load_data, planned_costs

    splits, seen = load_data(spec.train), {}

    def costs_of(values: dict) -> dict:
        key = tuple(sorted(values.items()))
        if key not in seen:
            seen[key] = planned_costs(spec.trial_config(values), splits)
        return seen[key]

    return costs_of


def proxy_front(spec: SearchSpec, points: int = DEFAULT_POINTS, metric: str | None = None,
                budgets: Sequence[float] | None = None, score: str = DEFAULT_SCORE,
                log: Callable[[str], None] = lambda msg: None) -> ProxyFront:
    """Score ``spec``'s per-layer choices (post-training, the float model cached) and build its proxy
    front (:func:`front_from_scores`)."""
    from speq_search.sensitivity import bit_sensitivity

    _options(spec)  # a space without per-layer choices fails before the float model trains
    _tables((), score)
    cost_metric(spec, metric)
    base_acc, scores = bit_sensitivity(spec.train, spec.group_choices(), log=log)
    return front_from_scores(spec, base_acc, scores, points, metric, budgets, score=score)


def write_proxy_front_csv(path, front: ProxyFront) -> None:
    """The points as a CSV table (``RUN_DIR/proxy-front.csv``), cheapest first."""
    rows = front.rows()
    names = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)


def warm_start_points(front: ProxyFront, count: int) -> list[dict]:
    """``count`` points of the front, spread over its cost range (all of them when it has no more)."""
    pts = list(front.points)
    if len(pts) <= count:
        return [dict(p.params) for p in pts]
    picks = sorted({round(i * (len(pts) - 1) / (count - 1)) for i in range(count)}) if count > 1 else [0]
    return [dict(pts[i].params) for i in picks]


__all__ = ["DEFAULT_POINTS", "DEFAULT_SCORE", "SCORES", "ProxyFront", "ProxyPoint", "budgets_between", "cost_metric",
           "front_from_scores", "pareto_knapsack", "proxy_front", "warm_start_points", "write_proxy_front_csv"]
