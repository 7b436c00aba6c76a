"""End-to-end searches on digits: real Ray Tune, real Optuna, tiny budgets."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from speq_search.analysis.load import read_run_csv
from speq_search.cli import main
from speq_search.search import RunOptions, run_search
from speq_search.space import load_space, parse_space

TINY = {
    "name": "tiny",
    "train": {"data": {"dataset": "digits"}, "model": {"width": 0.5}, "optim": {"epochs": 1, "fp_epochs": 2}},
    "params": {"w_bits": {"type": "choice", "values": [2, 3, 4, 8]}, "a_bits": {"type": "choice", "values": [2, 4, 8]},
               "p_high": {"type": "uniform", "low": 0.2, "high": 0.8}},
    "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
    "search": {"num_samples": 4, "max_concurrent": 2, "seed": 0},
}


def _quiet():
    return RunOptions(log=lambda msg: None)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    # A cluster address file left by an earlier `ray start` must not pull a local search into it.
    stale = Path("/tmp/ray/ray_current_cluster")
    planted = not stale.exists()
    if planted:
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_text("127.0.0.1:1")
    run_dir = tmp_path_factory.mktemp("search") / "tiny"
    summary = run_search(parse_space(TINY), run_dir, _quiet())
    yield run_dir, summary
    import ray

    ray.shutdown()
    if planted:
        stale.unlink(missing_ok=True)


def test_search_writes_every_output(tiny_run):
    run_dir, summary = tiny_run
    for name in ("trials.csv", "pareto.csv", "summary.json", "space.yaml", "study.db", "run.json", "pareto.html",
                 "plotly.min.js"):
        assert (run_dir / name).exists(), name
    assert (run_dir / "ray").is_dir()
    trials = read_run_csv(run_dir / "trials.csv")
    assert len(trials) == 4 and set(trials["status"]) == {"COMPLETED"}
    assert trials["trial_id"].is_unique
    for col in ("w_bits", "a_bits", "p_high", "val_acc", "test_acc", "avg_w_bits", "avg_a_bits", "size_bytes",
                "bitops", "step_time_s", "epochs_done", "wall_time_s"):
        assert col in trials.columns and trials[col].notna().all(), col
    assert set(trials["w_bits"]) <= {2, 3, 4, 8} and trials["p_high"].between(0.2, 0.8).all()
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["n_trials"] == 4 and saved["n_completed"] == 4 and saved["n_failed"] == 0
    assert [o["metric"] for o in saved["objectives"]] == ["val_acc", "bitops"]
    assert 0 < saved["hypervolume"] <= 1
    assert saved["reference_point"]["val_acc"] == 0.0 and saved["reference_point"]["bitops"] > trials["bitops"].max()
    resolved = load_space(str(run_dir / "space.yaml"))  # the resolved space, paths made absolute
    assert [p.name for p in resolved.params] == ["w_bits", "a_bits", "p_high"]
    assert resolved.train.optim.epochs == 1 and resolved.search.num_samples == 4


def test_trials_carry_their_split_sizes_and_accuracy_intervals(tiny_run):
    run_dir, _ = tiny_run
    for name in ("trials.csv", "pareto.csv"):
        trials = read_run_csv(run_dir / name)
        assert (trials["val_images"] == 360).all() and (trials["test_images"] == 360).all()
        for acc in ("val_acc", "test_acc"):
            assert (trials[f"{acc}_lo"] < trials[acc]).all() and (trials[acc] <= trials[f"{acc}_hi"]).all()


def test_a_repeated_search_trains_each_configuration_with_several_seeds(tmp_path):
    from speq_search.analysis.select import resolve_source

    space = dict(TINY, name="repeated", params={"w_bits": {"type": "choice", "values": [2, 8]}},
                 search={"sampler": "grid", "max_concurrent": 2, "seed": 0})
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    assert main(["run", str(tmp_path / "space.yaml"), "--out-dir", str(tmp_path), "--name", "rep", "--repeats", "2"]) == 0
    trials = read_run_csv(tmp_path / "rep" / "trials.csv")
    assert len(trials) == 2 and set(trials["status"]) == {"COMPLETED"}
    assert (trials["repeats"] == 2).all() and (trials["epochs_total"] == 2).all() and trials["full_fidelity"].all()
    for _, t in trials.iterrows():
        seeds = [float(v) for v in t["val_acc_seeds"].split(";")]
        assert len(seeds) == 2 and t["val_acc"] == pytest.approx(np.mean(seeds), abs=1e-6)
        assert t["val_acc_sd"] == pytest.approx(np.std(seeds, ddof=1), abs=1e-6)
    source = resolve_source(tmp_path / "rep", trial=trials["trial_id"].iloc[0])
    assert source.folder.name.startswith("repeat-")  # export takes the seed that validated best


def test_pareto_csv_is_exactly_the_non_dominated_trials(tiny_run):
    run_dir, _ = tiny_run
    trials = read_run_csv(run_dir / "trials.csv")
    front = read_run_csv(run_dir / "pareto.csv")
    acc, cost = trials["val_acc"].to_numpy(), trials["bitops"].to_numpy()
    brute = set()
    for i in range(len(trials)):
        dominated = any(acc[j] >= acc[i] and cost[j] <= cost[i] and (acc[j] > acc[i] or cost[j] < cost[i])
                        for j in range(len(trials)))
        if not dominated:
            brute.add(trials["trial_id"][i])
    assert set(front["trial_id"]) == brute and len(brute) >= 1


def test_study_db_holds_the_same_completed_trials(tiny_run):
    run_dir, _ = tiny_run
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    trials = read_run_csv(run_dir / "trials.csv")
    assert len(complete) == 4
    assert sorted(round(t.values[0], 6) for t in complete) == sorted(round(v, 6) for v in trials["val_acc"])
    assert sorted(t.values[1] for t in complete) == sorted(trials["bitops"])
    # each epoch's validation accuracy, for optuna-dashboard (Optuna has no intermediate values
    # in multi-objective studies)
    for t in complete:
        assert len(t.user_attrs["val_acc_by_epoch"]) == 1  # TINY trains 1 epoch
        assert 0 < t.user_attrs["val_acc_by_epoch"][-1] <= 1
    # ... and in a companion study of one objective, as intermediate values the dashboard draws
    curves = optuna.load_study(study_name="tiny-curves", storage=f"sqlite:///{run_dir / 'study.db'}")
    done = [t for t in curves.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4
    by_number = {t.number: t for t in complete}
    for t in done:
        main_trial = by_number[t.user_attrs["trial_number"]]
        assert list(t.intermediate_values.values()) == main_trial.user_attrs["val_acc_by_epoch"]
        assert t.value == pytest.approx(main_trial.values[0])


def test_nan_trial_is_recorded_as_failed_and_the_search_completes(tmp_path, tiny_run):
    raw = dict(TINY, name="nan", params={"temperature": {"type": "choice", "values": [1.0, 1e-40]}},
               search={"sampler": "grid", "max_concurrent": 2, "max_failures": 3})
    run_dir = tmp_path / "nan"
    summary = run_search(parse_space(raw), run_dir, _quiet())
    trials = read_run_csv(run_dir / "trials.csv").set_index("temperature")
    assert trials.loc[1.0, "status"] == "COMPLETED"
    assert trials.loc[1e-40, "status"] == "FAILED" and "nan" in trials.loc[1e-40, "error"]
    assert summary["n_failed"] == 1 and summary["n_completed"] == 1
    front = read_run_csv(run_dir / "pareto.csv")
    assert list(front["temperature"]) == [1.0]
    study = optuna.load_study(study_name="nan", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "FAIL"]


def test_more_failures_than_allowed_stop_the_search(tmp_path, tiny_run):
    raw = dict(TINY, name="fails", params={"temperature": {"type": "choice", "values": [1e-40, 2e-40, 3e-40, 4e-40]}},
               search={"sampler": "grid", "max_concurrent": 1, "max_failures": 0})
    logs: list[str] = []
    summary = run_search(parse_space(raw), tmp_path / "fails", RunOptions(log=logs.append))
    assert summary["n_failed"] >= 1 and summary["n_trials"] < 4
    assert any("max_failures" in m for m in logs)
    assert (tmp_path / "fails" / "trials.csv").exists()


def test_existing_run_folder_is_refused(tiny_run, capsys):
    run_dir, _ = tiny_run
    assert main(["run", "default", "--out-dir", str(run_dir.parent), "--name", run_dir.name]) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize("args, field", [
    (["--set", "train.epochs=0"], "train.optim.epochs"),
    (["--sampler", "bayes"], "search.sampler"),
    (["no-such-space"], "space"),
    (["--resume", "/no/such/run"], "resume"),
])
def test_run_bad_input_exits_2(tmp_path, capsys, args, field):
    assert main(["run", "--out-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"error: {field}:" in err
    assert not any(tmp_path.iterdir())


def test_resume_after_interrupt_runs_only_the_missing_trials(tmp_path):
    space = tmp_path / "space.yaml"
    import yaml

    raw = dict(TINY, name="resume", search={"num_samples": 4, "max_concurrent": 1, "seed": 0},
               train=dict(TINY["train"], optim={"epochs": 3, "fp_epochs": 2}))
    space.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "runs" / "r"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "speq_search.cli", "run", str(space), "--out-dir", str(tmp_path / "runs"), "--name", "r",
           "--storage-path", "file://" + str(tmp_path / "shared")]  # the experiment lives apart from the run folder
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            trials = run_dir / "trials.csv"
            if trials.exists() and (read_run_csv(trials)["status"] == "COMPLETED").sum() >= 1:
                break
            if proc.poll() is not None:
                pytest.fail("search ended before it could be interrupted:\n" + proc.stdout.read().decode()[-2000:])
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130  # interrupted: not a success
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    first = read_run_csv(run_dir / "trials.csv")
    done_before = set(first.loc[first["status"] == "COMPLETED", "trial_id"])
    assert 1 <= len(done_before) < 4
    experiment = json.loads((run_dir / "run.json").read_text())["experiment_name"]  # named after the run
    assert experiment.startswith("r-") and (tmp_path / "shared" / experiment).is_dir() and not (run_dir / "ray").exists()
    assert main(["run", "--resume", str(run_dir)]) == 0
    final = read_run_csv(run_dir / "trials.csv")
    assert len(final) == 4 and final["trial_id"].is_unique
    assert set(final["status"]) == {"COMPLETED"}
    assert done_before <= set(final["trial_id"])
    before = first.set_index("trial_id").loc[sorted(done_before), "wall_time_s"]
    after = final.set_index("trial_id").loc[sorted(done_before), "wall_time_s"]
    assert np.allclose(before.to_numpy(), after.to_numpy())  # kept, not rerun
    study = optuna.load_study(study_name="resume", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 4
    import ray

    ray.shutdown()


def test_spaces_command_lists_shipped_spaces(capsys):
    assert main(["spaces"]) == 0
    out = capsys.readouterr().out
    assert "default" in out and "fashion-mnist" in out and "cifar10-resnet20" in out




@pytest.mark.parametrize("last", ["complete", "error", "partial"])
def test_searcher_tells_optuna_what_each_trial_was_even_when_the_grid_ends(last, tmp_path):
    from speq_search.search.searcher import StudySearcher

    grid = parse_space(dict(TINY, params={"temperature": {"type": "choice", "values": [1.0, 2.0]}},
                            search={"sampler": "grid"}))
    s = StudySearcher(grid, tmp_path / "study.db")
    s.suggest("x")
    s.suggest("y")
    s.on_trial_complete("x", {"val_acc": 0.9, "bitops": 5, "full_fidelity": True})
    result = {"val_acc": 0.5, "bitops": 3, "full_fidelity": last != "partial"}
    s.on_trial_complete("y", result, error=last == "error")  # the grid's last point: Optuna calls study.stop()
    states = [t.state.name for t in s.study.trials]
    assert states == ["COMPLETE", {"complete": "COMPLETE", "error": "FAIL", "partial": "PRUNED"}[last]]
    assert s.study.trials[0].values == [0.9, 5]


def test_asha_stopped_trials_are_not_full_fidelity_and_never_on_the_front(tmp_path, tiny_run):
    raw = dict(TINY, name="asha", params={"lr": {"type": "choice", "values": [0.01, 0.02, 0.03, 10.0]}},
               train=dict(TINY["train"], optim={"epochs": 3, "fp_epochs": 2}),
               search={"sampler": "grid", "max_concurrent": 1, "scheduler": "asha", "grace_period": 1,
                       "reduction_factor": 2})
    summary = run_search(parse_space(raw), tmp_path / "asha", _quiet())
    trials = read_run_csv(tmp_path / "asha" / "trials.csv")
    stopped = trials[trials["status"] == "STOPPED"]
    assert summary["n_stopped"] == len(stopped) >= 1
    assert (stopped["epochs_done"] < 3).all() and not stopped["full_fidelity"].any()
    front = read_run_csv(tmp_path / "asha" / "pareto.csv")
    assert not set(front["trial_id"]) & set(stopped["trial_id"])
    study = optuna.load_study(study_name="asha", storage=f"sqlite:///{tmp_path / 'asha' / 'study.db'}")
    assert sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials) == len(stopped)


def test_progress_line_parts():
    import pandas as pd

    from speq_search.search.progress import eta, front_line
    from speq_search.space import Objective

    objectives = [Objective("val_acc", "max"), Objective("bitops", "min")]
    front = pd.DataFrame({"val_acc": [0.95, 0.9917, 0.9917], "bitops": [6.5e6, 15.4e6, 15.4e6]})
    assert front_line(front, objectives) == "front: 2 points, best val_acc 0.9917 at 15.4 M BitOps"
    assert front_line(front.iloc[0:0], objectives) == "front: none yet"
    assert eta(600.0, 4, 24) == "; about 50 min left"
    assert eta(30.0, 3, 4) == "; about 10 s left" and eta(30.0, 4, 4) == "" and eta(0.0, 0, 4) == ""


def test_final_front_table_shows_tied_trials_once(tmp_path, capsys):
    from speq_search.cli import _print_front

    rows = [{"trial_id": t, "status": "COMPLETED", "w_bits": 2, "val_acc": 0.95, "bitops": 6.5e6} for t in ("a", "b")]
    rows.append({"trial_id": "c", "status": "COMPLETED", "w_bits": 8, "val_acc": 0.99, "bitops": 9.0e7})
    import pandas as pd

    pd.DataFrame(rows).to_csv(tmp_path / "pareto.csv", index=False)
    _print_front({"run_dir": str(tmp_path), "objectives": [{"metric": "val_acc"}, {"metric": "bitops"}],
                  "n_completed": 3, "n_failed": 0, "n_stopped": 0, "n_trials": 3, "hypervolume": 0.5})
    out = capsys.readouterr().out
    assert "Pareto front (2 points; 1 tied trials not repeated):" in out
    table = out.split("not repeated):")[1].split("wrote")[0]
    assert len([line for line in table.splitlines() if line.strip()]) == 3  # header and two rows


# ----------------------------------------------------------------------------- export from a search
def test_export_a_trial_and_the_best_under_a_budget(tiny_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from speq_search.analysis.load import load_run
    from speq_search.analysis.select import budget_picks

    run_dir, _ = tiny_run
    trials = read_run_csv(run_dir / "trials.csv")
    trial = trials.sort_values("bitops").iloc[0]
    assert main(["export", str(run_dir), "--trial", trial["trial_id"], "--out", str(tmp_path / "t.onnx")]) == 0
    out = capsys.readouterr().out
    assert f"trial {trial['trial_id']} of {run_dir}" in out and (tmp_path / "t.onnx").exists()
    accuracy = float(re.search(r"images: ([0-9.]+) %", out).group(1))
    assert accuracy == pytest.approx(100 * trial["test_acc"], abs=0.01)  # the trial's own model, by its test score
    bound = float(trials["avg_bits"].median())
    expected = budget_picks(load_run(run_dir), "avg_bits", [bound]).iloc[0]["trial_id"]
    assert main(["export", str(run_dir), "--budget", f"avg_bits<={bound}", "--out", str(tmp_path / "b.onnx")]) == 0
    assert f"trial {expected} of {run_dir} (the best val_acc under avg_bits <= {bound:g}" in capsys.readouterr().out


@pytest.mark.parametrize("args,field,hint", [
    (["--trial", "0000dead"], "--trial", "the id of a completed trial"),
    (["--budget", "avg_bits<=0.5"], "--budget", "the cheapest has avg_bits"),
    (["--budget", "avg_bits < 3"], "--budget", "'METRIC <= NUMBER'"),
    (["--budget", "avg_bits >= 3"], "--budget", "'METRIC <= NUMBER'"),
    ([], "--trial/--budget", "one of them for a search run"),
])
def test_export_from_a_search_bad_input_exits_2(tiny_run, tmp_path, capsys, args, field, hint):
    pytest.importorskip("onnxruntime")
    run_dir, _ = tiny_run
    assert main(["export", str(run_dir), "--out", str(tmp_path / "m.onnx"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"error: {field}" in err and hint in err, err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("sampler", ["nsga2", "random", "gp", {"name": "NSGAIIISampler", "population_size": 4}])
def test_every_sampler_the_readme_offers_runs_a_search(sampler, tmp_path):
    """nsga2 crashed with Optuna 5.1 (its sampler holds a lock, and Ray Tune pickled the searcher)."""
    raw = dict(TINY, name="samplers", params={"w_bits": {"type": "choice", "values": [2, 4, 8]}},
               search={"num_samples": 2, "max_concurrent": 2, "seed": 0, "sampler": sampler})
    summary = run_search(parse_space(raw), tmp_path / "r", _quiet())
    assert summary["n_completed"] == 2 and not summary["interrupted"]
    study = optuna.load_study(study_name="samplers", storage=f"sqlite:///{tmp_path / 'r' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2


def test_a_finished_search_is_extended_with_resume_and_num_samples(tiny_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "extended"
    shutil.copytree(tiny_run[0], run_dir)
    assert main(["run", "--resume", str(run_dir), "--num-samples", "3"]) == 2  # fewer than the 4 it has
    assert "--num-samples" in capsys.readouterr().err
    assert main(["run", "--resume", str(run_dir), "--num-samples", "5"]) == 0
    trials = read_run_csv(run_dir / "trials.csv")
    assert len(trials) == 5 and set(trials["status"]) == {"COMPLETED"} and trials["trial_id"].is_unique
    assert load_space(str(run_dir / "space.yaml"), paths_relative_to_file=False).search.num_samples == 5
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 5  # the same study went on


def test_the_hints_name_the_command_as_it_was_started(monkeypatch):
    from speq_search.cli import invocation

    monkeypatch.setattr(sys, "argv", [".venv/bin/speq-search", "run"])
    assert invocation() == ".venv/bin/speq-search"
    monkeypatch.setattr(sys, "argv", ["/x/speq_search/cli.py", "run"])
    assert invocation() == f"{sys.executable} -m speq_search.cli"
