"""The fair teacher diagnostic and the distillation-weight schedule (speq.kd_schedule)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from speq_search import TrainConfig, load_trained
from speq_search import run_training as train
from speq_search.errors import ConfigError
from speq_search.speq import kd_schedule_factor
from speq_search.train import DIAGNOSTIC_COLUMNS, evaluate, load_data, make_step, teacher_diagnostics

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A W2A2 SPEQ model trained for two epochs on digits, its config and its splits."""
    out = tmp_path_factory.mktemp("diag") / "run"
    cfg = TrainConfig(progress=False).replace(**{
        "optim.epochs": 2, "optim.fp_epochs": 2, "model.width": 0.5, "quant.w_bits": 2, "quant.a_bits": 2,
        "fp_cache_dir": str(out.parent / "fp"),
    })
    metrics = train(cfg, out, log=lambda m: None)
    return cfg, load_trained(out), load_data(cfg), out, metrics


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _bits(model):
    from speq_search.quant import act_quantizers

    return [q.bits for q in act_quantizers(model)]


def test_diagnostics_change_no_model_state(trained):
    cfg, model, splits, _, _ = trained
    model.train()
    before, bits = _state(model), _bits(model)
    evaluate(model, splits.val, CPU, batch_stats=True)
    teacher_diagnostics(model, splits.val, CPU, cfg.replace(**{"speq.eval_draws": 3}))
    teacher_diagnostics(model, splits.val, CPU, cfg.replace(**{"speq.teacher_bn": "running"}))
    after = _state(model)
    assert before.keys() == after.keys()
    for key in before:  # running statistics, num_batches_tracked, clips, weights
        assert torch.equal(before[key], after[key]), key
    assert _bits(model) == bits and model.training  # precisions and mode restored


def test_batch_statistics_evaluation_differs_from_running_statistics(trained):
    _, model, splits, _, _ = trained
    _, running_loss = evaluate(model, splits.val, CPU)
    _, batch_loss = evaluate(model, splits.val, CPU, batch_stats=True)
    assert running_loss != batch_loss  # the two modes are really two evaluations


def test_k_draw_teacher_accuracy_is_reproducible_for_a_seed(trained):
    cfg, model, splits, _, _ = trained
    cfg = cfg.replace(**{"speq.eval_draws": 3, "speq.high_bits": 32})
    first = teacher_diagnostics(model, splits.val, CPU, cfg)
    again = teacher_diagnostics(model, splits.val, CPU, cfg)
    assert first == again
    other_seed = teacher_diagnostics(model, splits.val, CPU, cfg.replace(seed=5))
    assert other_seed["high_val_acc"] == first["high_val_acc"]  # no draw in the all-high-bits network
    # The teacher is the student at p_high = 0 and the all-high-bits network at p_high = 1.
    at_zero = teacher_diagnostics(model, splits.val, CPU, cfg.replace(**{"speq.p_high": 0.0}))
    assert at_zero["teacher_val_acc"] == pytest.approx(at_zero["val_acc_batch"])
    assert at_zero["teacher_gap"] == pytest.approx(0.0, abs=1e-12)
    at_one = teacher_diagnostics(model, splits.val, CPU, cfg.replace(**{"speq.p_high": 1.0}))
    assert at_one["teacher_val_acc"] == pytest.approx(at_one["high_val_acc"])
    assert at_one["high_gap"] == pytest.approx(at_one["high_val_acc"] - at_one["val_acc_batch"])


def test_running_mode_compares_against_the_running_statistics_student(trained):
    cfg, model, splits, _, _ = trained
    cfg = cfg.replace(**{"speq.teacher_bn": "running", "speq.p_high": 0.0, "speq.eval_draws": 1})
    val_acc, _ = evaluate(model, splits.val, CPU)
    diag = teacher_diagnostics(model, splits.val, CPU, cfg)
    assert diag["teacher_val_acc"] == pytest.approx(val_acc) and diag["teacher_gap"] == pytest.approx(0.0, abs=1e-12)


def test_zero_draws_skip_the_stochastic_teacher(trained):
    cfg, model, splits, _, _ = trained
    diag = teacher_diagnostics(model, splits.val, CPU, cfg.replace(**{"speq.eval_draws": 0}))
    assert math.isnan(diag["teacher_val_acc"]) and math.isnan(diag["teacher_gap"])
    assert not math.isnan(diag["high_gap"])


def test_every_epoch_logs_the_diagnostic_and_metrics_json_summarises_it(trained):
    _, _, _, out, metrics = trained
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 2
    for row in rows:
        assert set(DIAGNOSTIC_COLUMNS) <= row.keys()
        assert float(row["teacher_gap"]) == pytest.approx(float(row["teacher_val_acc"]) - float(row["val_acc_batch"]))
    best = rows[metrics["best_epoch"] - 1]
    for key in DIAGNOSTIC_COLUMNS:
        assert metrics[key] == pytest.approx(float(best[key]))
    assert metrics["teacher_gap_mean"] == pytest.approx(sum(float(r["teacher_gap"]) for r in rows) / 2)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["teacher_gap"] == pytest.approx(metrics["teacher_gap"])


# ----------------------------------------------------------------------------- kd_schedule
@pytest.mark.parametrize("schedule, start, middle, end", [
    ("constant", 1.0, 1.0, 1.0),
    ("linear-decay", 1.0, 0.5, 0.0),
    ("cosine-decay", 1.0, 0.5, 0.0),
])
def test_kd_schedule_at_start_middle_and_end(schedule, start, middle, end):
    assert kd_schedule_factor(schedule, 0.0) == pytest.approx(start)
    assert kd_schedule_factor(schedule, 0.5) == pytest.approx(middle)
    assert kd_schedule_factor(schedule, 1.0) == pytest.approx(end, abs=1e-12)


def test_cosine_decay_stays_above_linear_early_and_below_late():
    assert kd_schedule_factor("cosine-decay", 0.25) > kd_schedule_factor("linear-decay", 0.25)
    assert kd_schedule_factor("cosine-decay", 0.75) < kd_schedule_factor("linear-decay", 0.75)


def test_unknown_schedule_is_refused():
    with pytest.raises(ConfigError, match="speq.kd_schedule"):
        kd_schedule_factor("step", 0.5)
    with pytest.raises(ConfigError, match="speq.kd_schedule"):
        TrainConfig().replace(**{"speq.kd_schedule": "exponential"})
    with pytest.raises(ConfigError, match="speq.eval_draws"):
        TrainConfig().replace(**{"speq.eval_draws": 2.5})


def test_the_step_scales_the_distillation_term(trained):
    cfg, model, splits, _, _ = trained
    x, y = splits.train.x[:64], splits.train.y[:64]

    def loss_at(scale):
        torch.manual_seed(0)
        step = make_step(cfg, model, None, torch.Generator().manual_seed(0), CPU, kd_scale=lambda: scale)
        loss, ce, kd, _, _ = step(x, y)
        return loss.item(), ce.item(), kd.item()

    model.train()
    full, half, none = loss_at(1.0), loss_at(0.5), loss_at(0.0)
    assert full[2] > 0
    assert full[0] == pytest.approx(full[1] + full[2], rel=1e-5)
    assert half[0] == pytest.approx(half[1] + 0.5 * half[2], rel=1e-5)
    assert none[0] == pytest.approx(none[1], rel=1e-5)


@pytest.mark.parametrize("schedule", ["linear-decay", "cosine-decay"])
def test_a_run_logs_its_decaying_distillation_weight(tmp_path, tiny_cfg, schedule):
    cfg = tiny_cfg.replace(**{"optim.epochs": 3, "speq.kd_weight": 2.0, "speq.kd_schedule": schedule})
    train(cfg, tmp_path / "r", log=lambda m: None)
    rows = list(csv.DictReader(open(tmp_path / "r" / "metrics.csv")))
    weights = [float(r["kd_weight"]) for r in rows]
    steps = len(load_data(cfg).train) // cfg.data.batch_size
    expected = [2.0 * kd_schedule_factor(schedule, (e * steps) / (3 * steps - 1)) for e in (1, 2, 3)]
    assert weights == pytest.approx(expected)
    assert weights[0] > weights[1] > weights[2] == pytest.approx(0.0, abs=1e-9)


def test_qat_logs_no_distillation_weight(tmp_path, tiny_cfg):
    train(tiny_cfg.replace(**{"speq.method": "qat"}), tmp_path / "q", log=lambda m: None)
    rows = list(csv.DictReader(open(tmp_path / "q" / "metrics.csv")))
    assert [float(r["kd_weight"]) for r in rows] == [0.0]
