"""The proxy front from sensitivity (speq_search/proxy.py): per-bit scores, the Pareto knapsack, budgets
respected, the CLI's ``sensitivity --front`` and a space's ``warm_start: sensitivity``."""

from __future__ import annotations

import itertools
import json

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from speq_search.cli import main
from speq_search.errors import ConfigError
from speq_search.proxy import budgets_between, front_from_scores, pareto_knapsack, warm_start_points
from speq_search.sensitivity import BitSensitivity, bit_sensitivity
from speq_search.space import parse_space

SPACE = {
    "name": "proxy",
    "train": {"data": {"dataset": "digits"}, "model": {"width": 0.5}, "speq": {"method": "qat"},
              "optim": {"epochs": 1, "fp_epochs": 2}},
    "per_layer": {"w_bits": [2, 8], "a_bits": [4, 8]},
    "constraints": ["size_bytes <= 14000"],
    "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
    "search": {"num_samples": 3, "max_concurrent": 1, "seed": 0},
}


def _scores(spec, seed=0) -> list[BitSensitivity]:
    rng = np.random.default_rng(seed)
    out = []
    for group, kinds in spec.group_choices().items():
        for kind, bits in kinds.items():
            for b in bits:  # fewer bits, larger drop (and some noise)
                drop = 0.0 if b == 8 else float(rng.uniform(0, 0.05))
                out.append(BitSensitivity(group, kind, b, 0.9 - drop, drop, float(rng.uniform(0, 0.3)) if b < 8 else 0.0))
    return out


def test_pareto_knapsack_is_exact_against_every_assignment():
    rng = np.random.default_rng(1)
    for _ in range(20):
        groups = int(rng.integers(2, 5))
        deltas = [rng.integers(0, 20, size=(int(rng.integers(1, 4)), 2)).astype(float) for _ in range(groups)]
        scores = [rng.uniform(0, 1, size=len(d)) for d in deltas]
        costs, score, choice = pareto_knapsack(deltas, scores)
        for (c, s, ch) in zip(costs, score, choice):  # what it returns is what the choices add up to
            assert np.allclose(c, sum(d[k] for d, k in zip(deltas, ch)))
            assert np.isclose(s, sum(sc[k] for sc, k in zip(scores, ch)))
        for budget in (5, 15, 30, 60):  # under any budget, its best is the best of all assignments
            brute = min((sum(sc[k] for sc, k in zip(scores, ch)) for ch in itertools.product(*[range(len(d)) for d in deltas])
                         if sum(d[k] for d, k in zip(deltas, ch))[0] <= budget), default=None)
            under = score[costs[:, 0] <= budget]
            assert (brute is None and len(under) == 0) or np.isclose(under.min(), brute)


def test_the_proxy_front_respects_every_budget_and_is_the_least_score_under_each():
    from speq_search.train import planned_costs

    spec = parse_space(SPACE)
    scores = _scores(spec)
    names = [p.name for p in spec.params]
    every = [dict(zip(names, values)) for values in itertools.product(*[p.values for p in spec.params])]
    measured = {tuple(v.values()): planned_costs(spec.trial_config(v)) for v in every}
    table = {(s.group, s.kind, s.bits): s.loss_increase for s in scores}
    budgets = budgets_between(min(c["bitops"] for c in measured.values()), max(c["bitops"] for c in measured.values()), 7)
    front = front_from_scores(spec, 0.9, scores, budgets=budgets)
    assert front.metric == "bitops" and 2 <= len(front.points) <= 7
    for p in front.points:
        exact = measured[tuple(p.params[n] for n in names)]  # measured again, on the whole model
        assert exact["bitops"] <= p.budget and exact["size_bytes"] <= 14000
        assert p.costs["bitops"] == exact["bitops"]
        feasible = [v for v in every if measured[tuple(v.values())]["bitops"] <= p.budget
                    and measured[tuple(v.values())]["size_bytes"] <= 14000]
        best = min(sum(table[(n.partition("@")[2], n.partition("@")[0], b)] for n, b in v.items()) for v in feasible)
        assert np.isclose(p.score, best)
    assert [p.costs["bitops"] for p in front.points] == sorted(p.costs["bitops"] for p in front.points)
    by_acc = front_from_scores(spec, 0.9, scores, budgets=budgets, score="acc")
    assert all(np.isclose(p.predicted_acc, 0.9 - p.score) for p in by_acc.points)
    with pytest.raises(ConfigError, match="--score"):
        front_from_scores(spec, 0.9, scores, score="hessian")
    with pytest.raises(ConfigError, match="^constraints"):
        front_from_scores(parse_space(dict(SPACE, constraints=["size_bytes <= 10"])), 0.9, scores)
    assert len(warm_start_points(front, 2)) == 2 and warm_start_points(front, 2)[0] == front.points[0].params


def test_bit_sensitivity_scores_every_choice_post_training():
    spec = parse_space(SPACE)
    base, scores = bit_sensitivity(spec.train, spec.group_choices())
    assert 0.3 < base <= 1.0
    expected = {(g, k, b) for g, kinds in spec.group_choices().items() for k, bits in kinds.items() for b in bits}
    assert {(s.group, s.kind, s.bits) for s in scores} == expected
    assert all(s.drop == 0 and s.loss_increase == 0 for s in scores if s.bits == 8)  # the base itself
    assert any(s.loss_increase > 0 for s in scores if s.bits == 2)  # two-bit weights cost something


def test_sensitivity_front_command_prints_writes_and_draws(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    out, figure = tmp_path / "front.csv", tmp_path / "front.html"
    assert main(["sensitivity", str(space), "--front", "--points", "4", "--out", str(out), "--figure", str(figure)]) == 0
    printed = capsys.readouterr().out
    assert "base (every layer at 8 bits)" in printed and "pred_acc" in printed and figure.exists()
    table = pd.read_csv(out)
    assert 1 <= len(table) <= 4 and (table["bitops"] <= table["budget"]).all() and (table["size_bytes"] <= 14000).all()
    # another cost bounded, the accuracy drop summed
    assert main(["sensitivity", str(space), "--front", "--points", "3", "--metric", "size_bytes", "--score", "acc",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    table = pd.read_csv(out)
    assert 1 <= len(table) <= 3 and (table["size_bytes"] <= table["budget"]).all()
    assert main(["sensitivity", str(space), "--front", "--score", "hessian"]) == 2
    assert "--score" in capsys.readouterr().err
    assert main(["sensitivity", "default", "--front"]) == 2  # no per_layer section
    assert "per_layer" in capsys.readouterr().err


def test_warm_start_sensitivity_is_checked_and_written_back():
    spec = parse_space(dict(SPACE, warm_start="sensitivity", search=dict(SPACE["search"], num_samples=24)))
    assert spec.proxy_warm_start == 6 and spec.warm_start == ()
    again = parse_space(spec.to_dict())
    assert again.proxy_warm_start == 6 and spec.to_dict()["warm_start"] == {"sensitivity": 6}
    assert parse_space(dict(SPACE, warm_start={"sensitivity": 3})).proxy_warm_start == 3
    for bad, field in ((dict(SPACE, warm_start={"sensitivity": 0}), "warm_start.sensitivity"),
                       (dict(SPACE, warm_start="sensitivity", per_layer=None, params={"w_bits": {"type": "choice",
                                                                                            "values": [2, 4]}}),
                        "warm_start"),
                       (dict(SPACE, warm_start="sensitivity", search={"sampler": "grid"}), "warm_start")):
        with pytest.raises(ConfigError) as err:
            parse_space(bad)
        assert err.value.field == field


def test_a_search_with_warm_start_sensitivity_starts_on_the_proxy_front(tmp_path):
    from speq_search.search import RunOptions, run_search

    run_dir = tmp_path / "warm"
    run_search(parse_space(dict(SPACE, warm_start={"sensitivity": 2})), run_dir, RunOptions(log=lambda msg: None))
    points = json.loads((run_dir / "run.json").read_text())["proxy_front"]
    assert len(points) == 2 and (run_dir / "proxy-front.csv").exists() and (run_dir / "sensitivity-bits.csv").exists()
    proxy = pd.read_csv(run_dir / "proxy-front.csv")
    assert [{k: int(r[k]) for k in points[0]} for _, r in proxy.iloc[[0, -1]].iterrows()] == points
    study = optuna.load_study(study_name="proxy", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert [t.params for t in study.trials[:2]] == points  # tried first
    import ray

    ray.shutdown()
