from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F

from speq_search import TrainConfig, load_trained
from speq_search import run_training as train
from speq_search.cli import main
from speq_search.errors import ConfigError
from speq_search.train import TrainingDiverged, evaluate, fp_cache_dir, load_data

COST_KEYS = {"val_acc", "test_acc", "avg_w_bits", "avg_a_bits", "size_bytes", "bitops", "step_time_s", "method"}


def test_cli_train_writes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--out", str(out), "--epochs", "2", "--fp-epochs", "2", "--width", "0.5",
               "--w-bits", "2", "--a-bits", "2", "--quiet"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert COST_KEYS <= metrics.keys()
    assert metrics["method"] == "speq" and metrics["epochs"] == 2
    assert 0.5 < metrics["test_acc"] <= 1.0  # 2-bit digits model learned something
    assert 2 <= metrics["avg_w_bits"] < 8 and metrics["bitops"] > 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"teacher_train_acc", "high_val_acc", "val_acc", "train_kd"} <= rows[0].keys()
    assert "test_acc" not in rows[0]  # the test split is not looked at while training
    best = max(rows, key=lambda r: float(r["val_acc"]))
    assert metrics["val_acc"] == pytest.approx(float(best["val_acc"]))  # selected on validation only
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and "best_model" in ckpt
    cfg = TrainConfig.load(out / "config.yaml")
    assert cfg.quant.w_bits == 2 and cfg.optim.epochs == 2
    model = load_trained(out)
    val_acc, _ = evaluate(model, load_data(cfg).val, torch.device("cpu"))
    assert val_acc == pytest.approx(metrics["val_acc"])


def test_config_yaml_repeats_the_run(tmp_path, tiny_cfg):
    first = train(tiny_cfg, tmp_path / "a", log=lambda m: None)
    assert main(["train", "--config", str(tmp_path / "a" / "config.yaml"), "--out", str(tmp_path / "b")]) == 0
    second = json.loads((tmp_path / "b" / "metrics.json").read_text())
    for key in ("val_acc", "test_acc", "bitops", "size_bytes"):
        assert second[key] == first[key]


def test_full_precision_model_is_trained_once_and_reused(tmp_path, tiny_cfg):
    cfg = tiny_cfg.replace(fp_cache_dir=str(tmp_path / "fp"))
    logs: list[str] = []
    train(cfg, tmp_path / "a", log=logs.append)
    train(cfg.replace(**{"speq.method": "qat"}), tmp_path / "b", log=logs.append)
    assert sum("training" in m for m in logs if m.startswith("full-precision")) == 1
    assert sum("cached" in m for m in logs) == 1
    assert len(list(fp_cache_dir(cfg).glob("*.pt"))) == 1


@pytest.mark.parametrize("kd_schedule", ["constant", "cosine-decay"])  # a schedule follows the restored step
def test_resume_matches_an_uninterrupted_run(tmp_path, tiny_cfg, kd_schedule):
    cfg = tiny_cfg.replace(**{"optim.epochs": 3, "speq.kd_schedule": kd_schedule})
    full = train(cfg, tmp_path / "full", log=lambda m: None)

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", callback=stop_after_first, log=lambda m: None)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    assert main(["train", "--out", str(tmp_path / "cut"), "--resume"]) == 0
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    for key in ("val_acc", "test_acc", "best_epoch", "epochs"):
        assert resumed[key] == full[key]
    rows = list(csv.DictReader(open(tmp_path / "cut" / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    full_rows = list(csv.DictReader(open(tmp_path / "full" / "metrics.csv")))
    assert [r["kd_weight"] for r in rows] == [r["kd_weight"] for r in full_rows]


@pytest.mark.parametrize("method", ["fp", "qat", "kd-kl", "kd-fp"])
def test_every_method_trains(tmp_path, tiny_cfg, method):
    metrics = train(tiny_cfg.replace(**{"speq.method": method}), tmp_path / method, log=lambda m: None)
    assert metrics["method"] == method
    assert metrics["test_acc"] > 0.3
    if method == "fp":
        assert metrics["avg_w_bits"] == 32 and metrics["avg_a_bits"] == 32
    else:
        assert metrics["avg_w_bits"] < 8


def test_a_method_is_one_registration_that_the_step_reads(tiny_cfg):
    from speq_search.config import METHODS, Method
    from speq_search.speq import distillation_loss
    from speq_search.train import build_model, make_step, quantize_for

    METHODS.register("kd-fp-kl", Method(teacher="fp", kd_loss="kl", fixed_kd_loss=True), description="test")
    try:
        cfg = tiny_cfg.replace(**{"speq.method": "kd-fp-kl", "speq.kd_loss": "cosine"})
        assert (cfg.speq.teacher, cfg.speq.resolved_kd_loss, cfg.quantized) == ("fp", "kl", True)
        splits = load_data(cfg)
        fp_model = build_model(cfg, splits).eval()
        student = quantize_for(cfg, build_model(cfg, splits))
        step = make_step(cfg, student, fp_model, torch.Generator().manual_seed(0), torch.device("cpu"))
        x = splits.train.x[:16]
        _, _, kd, logits, t_logits = step(x, splits.train.y[:16])
        assert torch.equal(t_logits, fp_model(x))  # the float model teaches
        assert torch.allclose(kd, distillation_loss(t_logits, logits, "kl"))  # with the method's own loss
    finally:
        METHODS.unregister("kd-fp-kl")
    with pytest.raises(ConfigError, match="speq.method"):
        tiny_cfg.replace(**{"speq.method": "kd-fp-kl"})


def test_kd_weight_zero_is_plain_qat(tmp_path, tiny_cfg):
    qat = train(tiny_cfg.replace(**{"speq.method": "qat"}), tmp_path / "q", log=lambda m: None)
    zero = train(tiny_cfg.replace(**{"speq.kd_weight": 0.0}), tmp_path / "z", log=lambda m: None)
    assert zero["val_acc"] == qat["val_acc"] and zero["test_acc"] == qat["test_acc"]


def test_nan_loss_raises_training_diverged(tmp_path, tiny_cfg, monkeypatch):
    real = F.cross_entropy
    monkeypatch.setattr(F, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(TrainingDiverged, match="nan"):
        train(tiny_cfg.replace(fp_cache_dir=str(tmp_path / "fresh")), tmp_path / "nan", log=lambda m: None)


def test_existing_run_folder_is_not_overwritten(tmp_path, tiny_cfg):
    train(tiny_cfg, tmp_path / "r", log=lambda m: None)
    before = (tmp_path / "r" / "metrics.json").read_text()
    with pytest.raises(ConfigError, match="resume=True"):  # from Python: the argument, not the flag
        train(tiny_cfg, tmp_path / "r", log=lambda m: None)
    assert main(["train", "--out", str(tmp_path / "r")]) == 2  # from the command line: the flag
    assert (tmp_path / "r" / "metrics.json").read_text() == before


def test_fp_checkpoint_is_used_and_a_corrupt_one_refused(tmp_path, tiny_cfg):
    fp = train(tiny_cfg.replace(**{"speq.method": "fp"}), tmp_path / "fp", log=lambda m: None)
    ckpt = tmp_path / "fp" / "checkpoint.pt"
    logs: list[str] = []
    train(tiny_cfg.replace(fp_checkpoint=str(ckpt)), tmp_path / "q", log=logs.append)
    assert not any(m.startswith("full-precision") for m in logs)
    assert fp["test_acc"] > 0.3
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="fp_checkpoint"):
        train(tiny_cfg.replace(fp_checkpoint=str(bad)), tmp_path / "x", log=lambda m: None)
    other = tiny_cfg.replace(**{"model.name": "mlp", "fp_checkpoint": str(ckpt)})
    with pytest.raises(ConfigError, match="fp_checkpoint"):
        train(other, tmp_path / "y", log=lambda m: None)


def test_fp_cache_key_changes_with_the_data_contents(tiny_cfg):
    from speq_search.train import fp_cache_key

    splits = load_data(tiny_cfg)
    key = fp_cache_key(tiny_cfg, splits)
    assert key == fp_cache_key(tiny_cfg, load_data(tiny_cfg))
    splits.train.x[0, 0, 0, 0] += 1.0  # same folder, same settings, other pixels
    splits.train.y = splits.train.y.flip(0)
    assert fp_cache_key(tiny_cfg, splits) != key
    assert fp_cache_key(tiny_cfg.replace(seed=1), load_data(tiny_cfg)) != key


def test_concurrent_writers_of_one_cache_file_do_not_collide(tmp_path):
    # Two trials training the same new architecture both save its FP model to one cache path.
    import threading

    from speq_search.train import atomic_torch_save

    path = tmp_path / "fp.pt"
    errors = []

    def writer(k):
        try:
            for i in range(15):
                atomic_torch_save({"w": torch.full((2000,), float(k * 100 + i))}, path)
        except Exception as err:  # noqa: BLE001 - any failure of a writer fails the test
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert torch.load(path, weights_only=True)["w"].shape == (2000,)
    assert [p.name for p in tmp_path.iterdir()] == ["fp.pt"]  # no temporary file left behind


def test_callback_reports_each_epochs_own_accuracy_beside_the_selected_one(tmp_path, tiny_cfg):
    rows = []
    train(tiny_cfg.replace(**{"optim.epochs": 4, "optim.lr": 0.5}), tmp_path / "r", callback=rows.append,
          log=lambda m: None)
    history = list(csv.DictReader(open(tmp_path / "r" / "metrics.csv")))
    own = [float(r["val_acc"]) for r in history]
    assert [r["epoch_val_acc"] for r in rows] == pytest.approx(own)
    assert [r["val_acc"] for r in rows] == pytest.approx([max(own[:i + 1]) for i in range(4)])


def test_the_log_says_the_float_models_accuracy_and_a_rounded_result(tmp_path, tiny_cfg):
    import re

    logs: list[str] = []
    train(tiny_cfg.replace(fp_cache_dir=str(tmp_path / "fp")), tmp_path / "r", log=logs.append)
    assert any(re.fullmatch(r"full-precision model: val \d+\.\d\d % after 2 epochs", m) for m in logs), logs
    result = [m for m in logs if m.startswith("result:")]
    assert len(result) == 1
    assert re.fullmatch(r"result: speq W2A2: val \d+\.\d\d %, test \d+\.\d\d % \(float: \d+\.\d\d %\), avg bits "
                        r"\d\.\d\d/\d\.\d\d \(w/a\), \d+\.\d KiB, \d+\.\d M BitOps per image", result[0]), result[0]
