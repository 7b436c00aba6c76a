"""Pareto mask and hypervolume: property tests against brute force, hand-computed volumes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speq_search.analysis.pareto import best_under_budgets, front_rows, hypervolume, hypervolume_history, normalise, pareto_mask


def _brute_force_mask(values: np.ndarray, modes: list[str]) -> np.ndarray:
    """Row i is on the front iff no row j is >= in every objective and > in one (in the modes' sense)."""
    better_or_equal = lambda a, b, m: a >= b if m == "max" else a <= b  # noqa: E731
    strictly = lambda a, b, m: a > b if m == "max" else a < b  # noqa: E731
    out = []
    for i, vi in enumerate(values):
        if np.isnan(vi).any():
            out.append(False)
            continue
        dominated = False
        for j, vj in enumerate(values):
            if j == i or np.isnan(vj).any():
                continue
            if all(better_or_equal(vj[k], vi[k], m) for k, m in enumerate(modes)) and any(
                    strictly(vj[k], vi[k], m) for k, m in enumerate(modes)):
                dominated = True
                break
        out.append(not dominated)
    return np.array(out, dtype=bool)


@st.composite
def _points(draw):
    n_obj = draw(st.sampled_from([2, 3]))
    modes = draw(st.lists(st.sampled_from(["max", "min"]), min_size=n_obj, max_size=n_obj))
    n = draw(st.integers(0, 25))
    # Small integers make ties and exact duplicates common; NaN marks a failed trial.
    cell = st.one_of(st.integers(0, 4).map(float), st.just(float("nan")))
    rows = draw(st.lists(st.lists(cell, min_size=n_obj, max_size=n_obj), min_size=n, max_size=n))
    return np.array(rows, dtype=float).reshape(n, n_obj), modes


@settings(max_examples=300, deadline=None)
@given(_points())
def test_pareto_mask_equals_brute_force(case):
    values, modes = case
    assert pareto_mask(values, modes).tolist() == _brute_force_mask(values, modes).tolist()


@settings(max_examples=100, deadline=None)
@given(_points())
def test_duplicates_share_their_fate(case):
    values, modes = case
    mask = pareto_mask(values, modes)
    for i in range(len(values)):
        for j in range(len(values)):
            if not np.isnan(values[i]).any() and np.array_equal(values[i], values[j]):
                assert mask[i] == mask[j]


def test_rows_with_an_infinity_are_never_on_the_front_and_dominate_nothing():
    # A cost of -inf (minimised) would dominate every row, an accuracy of +inf likewise: such a
    # row is a broken measurement, left out as a NaN row is.
    values = np.array([[0.9, 1.0], [0.95, -np.inf], [np.inf, 2.0], [0.8, 0.5]])
    assert pareto_mask(values, ["max", "min"]).tolist() == [True, False, False, True]
    assert pareto_mask(np.array([[np.inf, 1.0]]), ["max", "min"]).tolist() == [False]


def test_hypervolume_two_objectives_by_hand():
    # losses: (1 - acc, bits / 32) = (0.1, 0.125) and (0.2, 0.0625)
    values = np.array([[0.9, 4.0], [0.8, 2.0]])
    expected = 0.9 * 0.875 + 0.8 * (0.125 - 0.0625)
    assert hypervolume(values, ["val_acc", "avg_bits"], ["max", "min"]) == pytest.approx(expected)
    # A dominated point and a duplicate add nothing.
    more = np.vstack([values, [[0.7, 4.0], [0.9, 4.0]]])
    assert hypervolume(more, ["val_acc", "avg_bits"], ["max", "min"]) == pytest.approx(expected)


def test_hypervolume_three_objectives_by_hand():
    fp = {"bitops": 1000.0, "size_bytes": 400.0}
    # losses (0.5, 0.5, 0.5) and (0.25, 0.75, 0.75): boxes 0.125 and 0.75*0.25*0.25, overlap 0.5*0.25*0.25
    values = np.array([[0.5, 500.0, 200.0], [0.75, 750.0, 300.0]])
    expected = 0.125 + 0.75 * 0.25 * 0.25 - 0.5 * 0.25 * 0.25
    metrics, modes = ["val_acc", "bitops", "size_bytes"], ["max", "min", "min"]
    assert hypervolume(values, metrics, modes, fp) == pytest.approx(expected)


def test_points_outside_the_reference_box_add_nothing():
    fp = {"bitops": 1000.0}
    inside = np.array([[0.5, 500.0]])
    outside = np.vstack([inside, [[0.99, 2000.0]]])  # costs more than the float model
    assert hypervolume(outside, ["val_acc", "bitops"], ["max", "min"], fp) == pytest.approx(0.25)


def test_hypervolume_history_grows_to_the_total():
    rng = np.random.default_rng(0)
    values = np.column_stack([rng.uniform(0.5, 1.0, 20), rng.uniform(2, 8, 20)])
    hist = hypervolume_history(values, ["val_acc", "avg_bits"], ["max", "min"])
    assert all(b >= a - 1e-12 for a, b in zip(hist, hist[1:]))
    assert hist[-1] == pytest.approx(hypervolume(values, ["val_acc", "avg_bits"], ["max", "min"]))
    assert hist[0] == pytest.approx((values[0, 0]) * (1 - values[0, 1] / 32))


def test_normalise_rule_for_unknown_metrics_uses_the_largest_value():
    loss = normalise(np.array([[10.0], [5.0]]), ["latency_ms"], ["min"])
    assert loss[:, 0].tolist() == pytest.approx([10 / 11, 5 / 11])


def test_front_rows_and_best_under_budgets():
    df = pd.DataFrame({"trial_id": list("abcde"), "val_acc": [0.9, 0.95, 0.8, 0.95, 0.7],
                       "avg_bits": [3.0, 5.0, 2.0, 6.0, 2.5], "bitops": [30, 50, 20, 60, 25]})
    front = front_rows(df, [("val_acc", "max"), ("avg_bits", "min")])
    assert front["trial_id"].tolist() == ["c", "a", "b"]  # sorted by cost
    best = best_under_budgets(df, "avg_bits", [1.0, 2.5, 4.0, 8.0])
    assert best["budget"].tolist() == [1.0, 2.5, 4.0, 8.0]
    assert pd.isna(best.loc[0, "trial_id"])
    assert best["trial_id"].tolist()[1:] == ["c", "a", "b"]  # b and d tie on accuracy: the cheaper wins
    assert best.loc[3, "bitops"] == 50


def test_budget_pick_is_not_dominated_on_the_other_objectives():
    # The case: same accuracy and size, W3A8 costs 15.4 M BitOps and W3A3 6.5 M.
    df = pd.DataFrame({"trial_id": ["w3a8", "w3a3", "w2a2"], "val_acc": [0.95, 0.95, 0.90],
                       "size_bytes": [27392, 27392, 20000], "bitops": [15.4e6, 6.5e6, 3.0e6]})
    best = best_under_budgets(df, "size_bytes", [64000], "val_acc", "max", others=[("bitops", "min")])
    assert best["trial_id"].tolist() == ["w3a3"]
    swapped = best_under_budgets(df.iloc[::-1], "size_bytes", [64000], "val_acc", "max", others=[("bitops", "min")])
    assert swapped["trial_id"].tolist() == ["w3a3"]  # whatever order the trials came in
    # The budget's own cost still comes first among non-dominated ties.
    df2 = pd.DataFrame({"trial_id": ["a", "b"], "val_acc": [0.9, 0.9], "size_bytes": [100, 200], "bitops": [50, 10]})
    assert best_under_budgets(df2, "size_bytes", [500], others=[("bitops", "min")])["trial_id"].tolist() == ["a"]


def test_box_hypervolume_by_hand():
    from speq_search.analysis.pareto import box_hypervolume

    # accuracy box 0.8 (reference) .. 1.0 (ideal); cost box 10 (ideal) .. 1000 (reference), log axis
    values = np.array([[0.9, 100.0]])  # losses 0.5 and 0.5
    assert box_hypervolume(values, [1.0, 10.0], [0.8, 1000.0], log_axes=[1]) == pytest.approx(0.25)
    assert box_hypervolume(values, [1.0, 10.0], [0.8, 1000.0]) == pytest.approx(0.5 * (1 - 90 / 990))
    # a point at the reference, or beyond it, adds nothing
    assert box_hypervolume(np.array([[0.8, 10.0], [0.95, 2000.0]]), [1.0, 10.0], [0.8, 1000.0]) == 0.0
