from __future__ import annotations

import subprocess
import sys

import pytest

from speq_search.cli import main


@pytest.mark.parametrize("args, field", [
    (["--w-bits", "0"], "quant.w_bits"),
    (["--w-bits", "9"], "quant.w_bits"),
    (["--a-bits", "1"], "quant.a_bits"),
    (["--high-bits", "12"], "speq.high_bits"),
    (["--p-high", "1.5"], "speq.p_high"),
    (["--kd-schedule", "step"], "speq.kd_schedule"),
    (["--eval-draws", "-1"], "speq.eval_draws"),
    (["--eval-draws", "65"], "speq.eval_draws"),
    (["--set", "speq.kd_schedule=linear-decay", "--set", "speq.ce_weight=0"], "speq.ce_weight"),
    (["--model", "vgg16"], "model.name"),
    (["--method", "magic"], "speq.method"),
    (["--dataset", "mnist", "--data-dir", "/no/such/folder"], "data_dir"),
    (["--config", "/no/such/config.yaml"], "config"),
    (["--set", "optim.epochz=3"], "optim.epochz"),
    (["--set", "optim.epochs=0"], "optim.epochs"),
    (["--device", "tpu"], "device"),
    (["--compile", "fast"], "compile"),
    (["--cost-model", "no-such-table"], "cost_model"),
    (["--set", "quant.group_bits={features.4: {w_bits: 9}}"], "quant.group_bits.features.4.w_bits"),
    (["--set", "quant.group_bits={features.3: {w_bits: 4}}"], "quant.group_bits"),  # no such layer (issue 28)
])
def test_bad_input_is_one_line_naming_the_field_and_exit_2(tmp_path, capsys, args, field):
    assert main(["train", "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"error: {field}:" in err and "accepted:" in err
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_unreadable_config_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("quant: [unclosed")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert "config" in capsys.readouterr().err


def test_corrupt_checkpoint_on_resume(tmp_path, capsys, tiny_cfg):
    from speq_search import run_training as train

    train(tiny_cfg, tmp_path / "r", log=lambda m: None)
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"\x00" * 10)
    assert main(["train", "--out", str(tmp_path / "r"), "--resume"]) == 2
    assert "resume" in capsys.readouterr().err
    assert (tmp_path / "r" / "metrics.json").exists()  # earlier results kept


def test_usage_errors_are_one_line_with_exit_2():
    proc = subprocess.run([sys.executable, "-m", "speq_search.cli", "train", "--out", "x", "--w-bits", "abc"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--w-bits" in proc.stderr


def test_listings_and_help(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("mlp", "cnn-small", "resnet20", "mobilenetv2"))
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder"))
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "train" in capsys.readouterr().out


def test_set_accepts_yaml_values_for_overrides(tmp_path):
    rc = main(["train", "--out", str(tmp_path / "r"), "--epochs", "1", "--fp-epochs", "1", "--quiet",
               "--set", "quant.overrides={features.4: {w_bits: 4}}", "--set", "model.width=0.5"])
    assert rc == 0
    import yaml

    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert cfg["quant"]["overrides"] == {"features.4": {"w_bits": 4}}


def test_sensitivity_command(tmp_path, capsys):
    out = tmp_path / "sens.csv"
    assert main(["sensitivity", "default", "--set", "train.optim.fp_epochs=2", "--set", "train.model.width=0.5",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "features.0" in text and "classifier" in text and "base (every layer at 8 bits)" in text
    assert out.read_text().splitlines()[0].startswith("layer,shape_class,params,macs,val_acc,drop")
    assert main(["sensitivity", "default", "--bits", "9"]) == 2
    assert main(["sensitivity", "no-such-space"]) == 2


def test_a_wrong_set_key_is_named_as_the_key_with_the_one_meant(tmp_path, capsys):
    """`--set speq.method=speq` on run: the key lacks `train.`; the value is fine."""
    assert main(["run", "default", "--out-dir", str(tmp_path), "--set", "speq.method=speq"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("speq-search run: error: --set: got 'speq.method'; accepted: a key train.<section>.<field>, "
                   "params.<name>.<key>, search.<field> or name (did you mean train.speq.method?)")
    assert main(["run", "default", "--out-dir", str(tmp_path), "--set", "epochs=2"]) == 2
    assert "(did you mean train.epochs?)" in capsys.readouterr().err
    assert main(["run", "default", "--out-dir", str(tmp_path), "--set", "nope.x=1"]) == 2
    assert "did you mean" not in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_the_summary_counts_as_the_progress_line_does_and_names_only_files_written(tmp_path, capsys):
    """Two configurations with the same objectives are one point (as the last progress line says); an
    interrupted search says how many trials were asked; a file not written is not named."""
    import pandas as pd

    from speq_search.analysis.stats import add_intervals
    from speq_search.cli import _print_front
    from speq_search.search.progress import front_line
    from speq_search.space import Objective

    rows = [{"trial_id": "a", "status": "COMPLETED", "w_bits": 2, "a_bits": 8, "val_acc": 340 / 360, "bitops": 6.5e6},
            {"trial_id": "b", "status": "COMPLETED", "w_bits": 8, "a_bits": 2, "val_acc": 340 / 360, "bitops": 6.5e6},
            {"trial_id": "c", "status": "COMPLETED", "w_bits": 8, "a_bits": 8, "val_acc": 345 / 360, "bitops": 9.0e7}]
    front = add_intervals(pd.DataFrame(rows).assign(val_images=360))
    front.to_csv(tmp_path / "pareto.csv", index=False)
    (tmp_path / "trials.csv").write_text("x\n")
    _print_front({"run_dir": str(tmp_path), "objectives": [{"metric": "val_acc", "mode": "max"},
                                                           {"metric": "bitops", "mode": "min"}],
                  "n_completed": 3, "n_failed": 0, "n_stopped": 0, "n_trials": 3, "num_samples": 6,
                  "hypervolume": 0.5, "interrupted": True})
    out = capsys.readouterr().out
    progress = front_line(front, [Objective("val_acc", "max"), Objective("bitops", "min")])
    assert progress.startswith("front: 2 points") and "Pareto front (2 points, 3 configurations):" in out
    assert "of 3 trials (6 asked)" in out
    assert "wrote " + str(tmp_path) + "/ (trials.csv, pareto.csv)" in out and "pareto.html" not in out
    assert "val_acc 95%" in out and "[" in out.split("val_acc 95%")[1]
    assert "cheapest point within the 95 % interval of the most accurate one: trial a" in out
