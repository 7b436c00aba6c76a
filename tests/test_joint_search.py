"""A tiny joint search end to end: width x per-stage bits, a size budget, a warm start, a cost table."""

from __future__ import annotations

import json

import optuna
import pytest

from speq_search.analysis.load import expand_layer_bits, load_run, read_run_csv
from speq_search.cli import main
from speq_search.search import RunOptions, run_search
from speq_search.space import parse_space

BUDGET = 20000


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("joint")
    space = {
        "name": "joint",
        "train": {"data": {"dataset": "digits"}, "model": {"name": "cnn-small"},
                  "optim": {"epochs": 1, "fp_epochs": 2}, "cost_model": "int-accel",
                  "fp_cache_dir": str(root / "fp-cache")},
        "params": {"width": {"type": "choice", "values": [0.5, 1.0]}},
        "per_layer": {"granularity": "stage", "w_bits": [2, 8], "a_bits": [2, 8], "sensitivity": True},
        "constraints": [f"size_bytes <= {BUDGET}"],
        "warm_start": [{"width": 0.5, "w_bits@features": 2, "a_bits@features": 2, "a_bits@classifier": 2},
                       {"width": 1.0, "w_bits@features": 8, "a_bits@features": 8, "a_bits@classifier": 8}],
        "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "latency_ms", "mode": "min"}],
        "search": {"num_samples": 6, "max_concurrent": 2, "seed": 0},
    }
    run_dir = root / "run"
    summary = run_search(parse_space(space), run_dir, RunOptions(log=lambda msg: None))
    yield run_dir, summary, root
    import ray

    ray.shutdown()


def test_over_budget_trials_are_infeasible_untrained_and_off_the_front(joint_run):
    run_dir, summary, _ = joint_run
    trials = read_run_csv(run_dir / "trials.csv")
    assert len(trials) == 6 and set(trials["status"]) <= {"COMPLETED", "INFEASIBLE"}
    infeasible = trials[trials.status == "INFEASIBLE"]
    done = trials[trials.status == "COMPLETED"]
    assert len(infeasible) >= 1 and len(done) >= 1
    assert (infeasible["size_bytes"] > BUDGET).all() and infeasible["val_acc"].isna().all()
    assert (infeasible["epochs_done"] == 0).all()
    assert (done["size_bytes"] <= BUDGET).all()
    front = read_run_csv(run_dir / "pareto.csv")
    assert set(front["trial_id"]) <= set(done["trial_id"])
    assert summary["n_infeasible"] == len(infeasible) and summary["constraints"] == [f"size_bytes <= {BUDGET}"]


def test_sampler_sees_the_constraints_and_the_warm_start(joint_run):
    run_dir, _, _ = joint_run
    study = optuna.load_study(study_name="joint", storage=f"sqlite:///{run_dir / 'study.db'}")
    trials = sorted(study.trials, key=lambda t: t.number)
    # the two given points first, then the point the sensitivity scores suggest
    assert trials[0].params == {"width": 0.5, "w_bits@features": 2, "a_bits@features": 2, "a_bits@classifier": 2}
    assert trials[1].params["width"] == 1.0 and trials[1].params["w_bits@features"] == 8
    assert trials[0].constraints[f"size_bytes <= {BUDGET}"] <= 0 < trials[1].constraints[f"size_bytes <= {BUDGET}"]
    assert all(t.constraints for t in trials)
    seed = json.loads((run_dir / "run.json").read_text())["sensitivity_seed"]
    assert {k: trials[2].params[k] for k in seed} == seed


def test_trials_report_per_layer_bits_and_latency(joint_run):
    run_dir, _, _ = joint_run
    run = load_run(run_dir)
    done = run.trials[run.trials.status == "COMPLETED"].set_index("trial_id")
    assert done["latency_ms"].gt(0).all()
    per_layer = expand_layer_bits(run.trials[run.trials.status == "COMPLETED"])
    for trial_id, rows in per_layer.groupby("trial_id"):
        bits = rows.set_index("layer")
        assert bits.loc["features.0", "w_bits"] == 8 and bits.loc["features.0", "a_bits"] == 8  # first layer rule
        assert bits.loc["features.4", "w_bits"] == done.loc[trial_id, "w_bits@features"]
        assert bits.loc["features.8", "a_bits"] == done.loc[trial_id, "a_bits@features"]
        assert bits.loc["classifier", "a_bits"] == done.loc[trial_id, "a_bits@classifier"]
    assert [c for c in run.params if "@" in c] == ["w_bits@features", "a_bits@features", "a_bits@classifier"]


def test_architectures_share_one_full_precision_model_each(joint_run):
    run_dir, _, root = joint_run
    trials = read_run_csv(run_dir / "trials.csv")
    trained_widths = set(trials[trials.status == "COMPLETED"]["width"])
    cached = sorted(p.name for p in (root / "fp-cache").glob("*.pt"))
    # one cached model per width a trained trial used (+ the base width the driver trains for sensitivity)
    expected = {f"w{w:g}" for w in trained_widths | {1.0}}
    assert sorted(n.split("-")[3] for n in cached) == sorted(expected)  # digits-cnn-small-w0.5-...


def test_plots_of_the_joint_run(joint_run, capsys):
    run_dir, _, _ = joint_run
    assert (run_dir / "sensitivity.csv").exists()
    for kind in ("sensitivity", "layer-bits", "front"):
        assert main(["plot", str(run_dir), "--kind", kind, "--out", str(run_dir / f"{kind}.html")]) == 0
        assert (run_dir / f"{kind}.html").exists()
    assert main(["report", str(run_dir), "--out", str(run_dir / "report")]) == 0
    md = (run_dir / "report" / "report.md").read_text()
    assert "Per-layer sensitivity" in md and "latency_ms" in md
