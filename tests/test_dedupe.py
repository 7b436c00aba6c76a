"""No configuration trained twice (speq_search/search/dedupe.py): equal effective configurations, one
training; the duplicate reuses the result, is told as such, marked in trials.csv, and on no front twice."""

from __future__ import annotations

import json

import optuna

from speq_search.analysis.load import read_run_csv
from speq_search.search import RunOptions, run_search
from speq_search.search.dedupe import effective_config, effective_key
from speq_search.space import parse_space

BASE = {
    "name": "dedupe",
    "train": {"data": {"dataset": "digits"}, "model": {"width": 0.5}, "speq": {"method": "qat"},
              "optim": {"epochs": 2, "fp_epochs": 2}},
    "params": {"w_bits": {"type": "choice", "values": [2, 4]}},
    "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
    "search": {"sampler": "random", "num_samples": 5, "max_concurrent": 1, "seed": 0},
}


def test_parameters_that_give_the_same_model_have_the_same_key():
    # The override pins features.4 (a layer of the per-layer search) at W8A8: its own choices change nothing.
    spec = parse_space(dict(BASE, params={}, per_layer={"w_bits": [2, 4], "a_bits": [4, 8]},
                            train=dict(BASE["train"], quant={"overrides": {"features.4": {"w_bits": 8, "a_bits": 8}}})))
    a = {p.name: 2 for p in spec.params if p.name.startswith("w_bits")} | {p.name: 4 for p in spec.params
                                                                         if p.name.startswith("a_bits")}
    b = dict(a, **{"w_bits@features.4": 4, "a_bits@features.4": 8})
    c = dict(a, **{"w_bits@features.8": 4})
    assert effective_key(spec, a) == effective_key(spec, b)
    assert effective_key(spec, a) != effective_key(spec, c)
    layers = effective_config(spec, a)["quant"]["layers"]
    assert layers["features.4"] == {"w_bits": 8, "a_bits": 8} and layers["features.0"]["w_bits"] == 8  # first layer
    # a training setting is part of the effective configuration
    uniform = parse_space(dict(BASE, params={"lr": {"type": "choice", "values": [0.01, 0.02]}}))
    assert effective_key(uniform, {"lr": 0.01}) != effective_key(uniform, {"lr": 0.02})


def test_a_configuration_proposed_again_reuses_the_result(tmp_path):
    run_dir = tmp_path / "dedupe"
    summary = run_search(parse_space(BASE), run_dir, RunOptions(log=lambda msg: None))
    trials = read_run_csv(run_dir / "trials.csv")
    assert len(trials) == 5 and set(trials["status"]) == {"COMPLETED"}
    trained = trials[trials["reused_from"].isna()]
    reused = trials[trials["reused_from"].notna()]
    assert len(trained) == 2 and len(reused) == 3  # two configurations: each trained once
    assert sorted(trained["w_bits"]) == [2, 4]
    assert (reused["epochs_done"] == 0).all() and (trained["epochs_done"] == 2).all()
    study = optuna.load_study(study_name="dedupe", storage=f"sqlite:///{run_dir / 'study.db'}")
    by_number = {t.number: t for t in study.trials}
    for t in study.trials:
        if "reused_from" in t.user_attrs:
            source = by_number[t.user_attrs["reused_from"]]
            assert "reused_from" not in source.user_attrs and source.params == t.params
            assert t.values == source.values and t.state == optuna.trial.TrialState.COMPLETE
    assert sum("reused_from" in t.user_attrs for t in study.trials) == 3
    for _, row in reused.iterrows():  # the same accuracy and costs as the trained one
        source = trained[trained["w_bits"] == row["w_bits"]].iloc[0]
        assert row["val_acc"] == source["val_acc"] and row["bitops"] == source["bitops"]
        assert row["layer_bits"] == source["layer_bits"]
    front = read_run_csv(run_dir / "pareto.csv")
    assert front["trial_id"].is_unique and set(front["trial_id"]) <= set(trained["trial_id"])  # each model once
    assert summary["n_reused"] == 3 and summary["n_completed"] == 5 and not summary["interrupted"]
    assert json.loads((run_dir / "summary.json").read_text())["n_reused"] == 3
    import ray

    ray.shutdown()
