"""Pareto-aware successive halving (speq_search/search/scheduler.py): the rule, and live searches with
``scheduler: asha`` that stop trials, say why, and resume after Ctrl-C and after ``kill -9``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
import yaml

from speq_search.analysis.load import read_run_csv
from speq_search.cli import main
from speq_search.search import RunOptions, run_search
from speq_search.search.scheduler import ParetoASHA, ParetoRungs, milestones, reported_curves, rung_order
from speq_search.space import parse_space

OBJECTIVES = [("val_acc", "max"), ("bitops", "min")]

TINY = {
    "name": "pasha",
    "train": {"data": {"dataset": "digits"}, "model": {"width": 0.5}, "speq": {"method": "qat"},
              "optim": {"epochs": 4, "fp_epochs": 2}},
    # lr 10 diverges: such trials are dominated at their first rung and stopped
    "params": {"w_bits": {"type": "choice", "values": [2, 4, 8]}, "lr": {"type": "choice", "values": [0.02, 10.0]}},
    "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
    "search": {"sampler": "grid", "max_concurrent": 1, "seed": 0, "scheduler": "asha", "grace_period": 1,
               "reduction_factor": 2},
}


def _quiet():
    return RunOptions(log=lambda msg: None)


def test_rungs_lie_below_the_last_epoch():
    assert milestones(8, 1, 3) == (1, 3)
    assert milestones(9, 1, 3) == (1, 3)
    assert milestones(10, 1, 3) == (1, 3, 9)
    assert milestones(4, 1, 2) == (1, 2)
    assert milestones(1, 1, 3) == ()


def test_rung_order_ranks_by_non_dominated_sorting_then_contribution():
    points = np.array([[-0.9, 8.0], [-0.8, 2.0], [-0.85, 9.0], [-0.5, 3.0], [float("nan"), 1.0]])  # -acc, bits
    ranks, order = rung_order(points)
    assert list(ranks[:4]) == [0, 0, 1, 1]
    assert ranks[4] == 0  # the cheapest, even with an accuracy that diverged: cost is exact
    assert set(order[:3]) == {0, 1, 4} and set(order[3:]) == {2, 3}


def test_a_cheap_trial_on_its_rungs_front_is_never_stopped():
    """Whatever came before, a trial no other trial at its rung dominates goes on; accuracy-only
    ranking would stop the cheapest trials here, as they are the least accurate."""
    rng = np.random.default_rng(0)
    rungs = ParetoRungs(OBJECTIVES, (1, 3), reduction_factor=3)
    stopped_on_front, stopped = 0, 0
    for key in range(200):
        bits = float(rng.choice([2, 3, 4, 8]) * rng.choice([2, 3, 4, 8]))
        acc = 0.5 + 0.05 * np.log2(bits) + rng.normal(0, 0.03)  # more bits, more accurate
        for epoch in (1, 2, 3):
            decision = rungs.record(key, epoch, {"val_acc": acc, "bitops": bits * 1e6})
            if decision is None:
                continue
            at = rungs.recorded[decision.rung]
            values = np.array(list(at.values()))
            me = np.array(at[key])
            on_front = not np.any(np.all(values <= me, axis=1) & np.any(values < me, axis=1))
            stopped += decision.stop
            stopped_on_front += decision.stop and on_front
            assert not (decision.stop and on_front), decision
            if decision.stop:
                assert "outside the top" in decision.reason and f"rung {decision.rung}" in decision.reason
                break
    assert stopped > 50 and stopped_on_front == 0
    # the cheapest configuration (W2A2: 4 bit-products) with the lowest accuracy seen at rung 1 goes on
    decision = rungs.record("cheap", 1, {"val_acc": 0.0, "bitops": 1.0})
    assert decision.stop is False and "non-dominated front" in decision.reason


def test_a_trial_is_decided_once_per_rung_and_at_the_highest_rung_it_reached():
    rungs = ParetoRungs(OBJECTIVES, (1, 3), reduction_factor=3)
    assert rungs.record("a", 1, {"val_acc": 0.9, "bitops": 5}).rung == 1
    assert rungs.record("a", 1, {"val_acc": 0.9, "bitops": 5}) is None
    assert rungs.record("a", 2, {"val_acc": 0.9, "bitops": 5}) is None
    assert rungs.record("b", 4, {"val_acc": 0.9, "bitops": 5}).rung == 3  # a trial continued from a checkpoint
    assert rungs.record("b", 5, {"val_acc": 0.9, "bitops": 5}) is None


def test_pareto_asha_search_stops_trials_says_why_and_never_puts_them_on_the_front(tmp_path):
    run_dir = tmp_path / "pasha"
    summary = run_search(parse_space(TINY), run_dir, _quiet())
    trials = read_run_csv(run_dir / "trials.csv")
    stopped = trials[trials["status"] == "STOPPED"]
    assert summary["n_stopped"] == len(stopped) >= 1
    assert (stopped["epochs_done"] < 4).all()
    assert stopped["stopped_at_rung"].notna().all() and stopped["stop_reason"].str.contains("outside the top").all()
    assert (stopped["epochs_done"] == stopped["stopped_at_rung"]).all()
    front = read_run_csv(run_dir / "pareto.csv")
    assert not set(front["trial_id"]) & set(stopped["trial_id"])
    study = optuna.load_study(study_name="pasha", storage=f"sqlite:///{run_dir / 'study.db'}")
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) == len(stopped)
    assert all(t.user_attrs["stopped_at_rung"] in (1, 2) and "outside the top" in t.user_attrs["stop_reason"]
               for t in pruned)
    # every stopped trial was dominated at its rung by a trial recorded there before it
    curves = reported_curves(run_dir, parse_space(TINY))
    for t in pruned:
        rung = t.user_attrs["stopped_at_rung"]
        mine = next(r for r in curves[t.number] if r["epochs_done"] == rung)
        others = [next(r for r in rows if r["epochs_done"] == rung) for n, rows in curves.items()
                  if n != t.number and any(r["epochs_done"] == rung for r in rows)]
        assert any(o["val_acc"] >= mine["val_acc"] and o["bitops"] <= mine["bitops"] and
                   (o["val_acc"] > mine["val_acc"] or o["bitops"] < mine["bitops"]) for o in others)
    assert summary["scheduler"] == "asha"
    import ray

    ray.shutdown()


def test_asha_first_keeps_rays_asha_on_the_first_objective():
    from ray.tune.schedulers import ASHAScheduler

    from speq_search.search.tuner import _scheduler

    first = parse_space(dict(TINY, search=dict(TINY["search"], scheduler="asha-first")))
    assert isinstance(_scheduler(first), ASHAScheduler)
    assert isinstance(_scheduler(parse_space(TINY)), ParetoASHA)
    with pytest.raises(Exception, match="search.scheduler"):
        parse_space(dict(TINY, search=dict(TINY["search"], scheduler="hyperband")))


def _run_cli(space, out, name, env=None, **popen):
    cmd = [sys.executable, "-m", "speq_search.cli", "run", str(space), "--out-dir", str(out), "--name", name]
    return subprocess.Popen(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, **popen)


def _check_resumed(run_dir, before: dict):
    """After a resume: every Optuna trial once, each ended; the rungs kept what was recorded before."""
    trials = read_run_csv(run_dir / "trials.csv")
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"COMPLETED", "STOPPED"}
    study = optuna.load_study(study_name="pasha", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert [t.state.is_finished() for t in study.trials] == [True] * 6
    after = ParetoASHA.for_space(parse_space(TINY), run_dir)
    for rung, keys in before.items():
        assert set(keys) <= set(after.rungs.recorded[rung]), rung
    stopped = trials[trials["status"] == "STOPPED"]
    assert stopped["stop_reason"].notna().all()


def test_pareto_asha_search_resumes_after_ctrl_c(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(TINY))
    run_dir = tmp_path / "runs" / "r"
    proc = _run_cli(space, tmp_path / "runs", "r")
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if (run_dir / "trials.csv").exists() and len(read_run_csv(run_dir / "trials.csv")) >= 3:
                break
            if proc.poll() is not None:
                pytest.fail("search ended before it could be interrupted:\n" + proc.stdout.read().decode()[-2000:])
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    restored = ParetoASHA.for_space(parse_space(TINY), run_dir)
    before = {rung: set(at) for rung, at in restored.rungs.recorded.items()}
    assert before[1], "the rungs are rebuilt from what the interrupted trials reported"
    assert main(["run", "--resume", str(run_dir)]) == 0
    _check_resumed(run_dir, before)
    import ray

    ray.shutdown()


def test_pareto_asha_search_resumes_after_kill_9(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(TINY))
    run_dir = tmp_path / "runs" / "k"
    env = {"SPEQ_SEARCH_TEST_KILL_AFTER_TELL": "3", "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    proc = _run_cli(space, tmp_path / "runs", "k", env)
    out = proc.communicate(timeout=400)[0].decode()
    assert proc.returncode == -signal.SIGKILL, out[-2000:]
    study = optuna.load_study(study_name="pasha", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert sum(t.state.is_finished() for t in study.trials) == 3  # told, then killed
    restored = ParetoASHA.for_space(parse_space(TINY), run_dir)
    before = {rung: set(at) for rung, at in restored.rungs.recorded.items()}
    assert len(before[1]) >= 3  # from the experiment's result lines and the study's val_acc_by_epoch
    assert main(["run", "--resume", str(run_dir)]) == 0
    _check_resumed(run_dir, before)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_completed"] + summary["n_stopped"] == 6
    import ray

    ray.shutdown()
