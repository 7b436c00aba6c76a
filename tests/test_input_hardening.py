"""Bad input is one line and exit 2, writes nothing, and never expands or echoes a huge value."""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from speq_search.analysis.load import LoadError
from speq_search.analysis.report import markdown_table, md_escape, write_report
from speq_search.cli import main
from speq_search.config import TrainConfig
from speq_search.errors import ConfigError
from speq_search.schema import trial_id_of
from speq_search.space import load_space, parse_space

BOMB = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
    f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefgh", "bcdefghi")])

TINY = {
    "name": "tiny",
    "train": {"data": {"dataset": "digits"}, "model": {"width": 0.5}, "optim": {"epochs": 1, "fp_epochs": 0}},
    "params": {"w_bits": {"type": "choice", "values": [2, 4]}},
    "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
    "search": {"num_samples": 2},
}


@pytest.fixture
def readonly_dir(tmp_path) -> Path:
    """A folder this user cannot write into (root ignores file modes: a folder under /sys then)."""
    if os.geteuid() == 0:
        return Path("/sys/speq-search-test-readonly")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def _one_line_error(capsys, field: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"error: {field}" in err, err
    return err


# --- YAML: bombs, duplicates, binary files ---------------------------------------------------------------------
def test_yaml_bomb_is_refused_quickly_and_briefly(tmp_path, capsys):
    space = tmp_path / "bomb.yaml"
    space.write_text(BOMB)
    t0 = time.perf_counter()
    assert main(["run", str(space), "--out-dir", str(tmp_path / "runs")]) == 2
    assert time.perf_counter() - t0 < 5
    err = _one_line_error(capsys, "space")
    assert "aliases" in err and len(err) < 400
    assert not (tmp_path / "runs").exists()


def test_error_messages_cut_long_values():
    huge = ["x" * 1000] * 1000
    assert len(str(ConfigError("f", huge, "ok"))) < 300
    nested = [1]
    for _ in range(40):
        nested = [nested] * 10  # 10**40 leaves if expanded
    assert len(str(ConfigError("f", nested, "ok"))) < 300


def test_cost_table_that_is_not_a_table_is_not_echoed(tmp_path, capsys):
    table = tmp_path / "passwd"
    table.write_text("\n".join(f"user{i}:x:{i}:{i}:User {i}:/home/user{i}:/bin/sh" for i in range(200)))
    assert main(["train", "--out", str(tmp_path / "r"), "--cost-model", str(table)]) == 2
    err = _one_line_error(capsys, "cost_model")
    assert len(err) < 400 and "user150" not in err


def test_duplicate_keys_are_refused(tmp_path, capsys):
    space = tmp_path / "dup.yaml"
    space.write_text(yaml.safe_dump(TINY) + "name: again\n")
    assert main(["run", str(space), "--out-dir", str(tmp_path / "runs")]) == 2
    assert "name repeats on line" in _one_line_error(capsys, "space")
    config = tmp_path / "c.yaml"
    config.write_text("optim:\n  epochs: 2\n  epochs: 3\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    assert "epochs repeats" in _one_line_error(capsys, "config")


@pytest.mark.parametrize("command", ["space", "config", "cost_model"])
def test_binary_and_non_utf8_files_are_one_line(tmp_path, capsys, command):
    blob = tmp_path / "blob.yaml"
    blob.write_bytes(b"name: \xff\xfe\x00\x01binary")
    args = {"space": ["run", str(blob), "--out-dir", str(tmp_path / "runs")],
            "config": ["train", "--config", str(blob), "--out", str(tmp_path / "r")],
            "cost_model": ["train", "--cost-model", str(blob), "--out", str(tmp_path / "r")]}[command]
    assert main(args) == 2
    assert "UTF-8" in _one_line_error(capsys, command)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "r").exists()


def test_empty_config_is_refused(tmp_path, capsys):
    config = tmp_path / "empty.yaml"
    config.write_text("")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    assert "empty" in _one_line_error(capsys, "config")


# --- space and config values -----------------------------------------------------------------------------------
@pytest.mark.parametrize("change, field", [
    ({"params": [1, 2]}, "params"),
    ({"objectives": {"val_acc": "max", "bitops": "min"}}, "objectives"),
    ({"name": "../escape"}, "name"),
    ({"name": "a/b"}, "name"),
    ({"train": {"quant": {"overrides": 5}}}, "train.quant.overrides"),
    ({"train": {"model": {"kwargs": 5}}}, "train.model.kwargs"),
])
def test_space_values_of_the_wrong_kind(tmp_path, capsys, change, field):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(dict(TINY, **change)))
    assert main(["run", str(space), "--out-dir", str(tmp_path / "runs")]) == 2
    _one_line_error(capsys, field)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "escape").exists()


@pytest.mark.parametrize("setting, field", [
    ("objectives=1", "objectives"), ("constraints=5", "constraints"), ("train.quant.overrides=5", "train.quant.overrides"),
    ("train.model.kwargs=5", "train.model.kwargs"),
])
def test_set_values_of_the_wrong_kind(tmp_path, capsys, setting, field):
    assert main(["run", "default", "--out-dir", str(tmp_path), "--set", setting]) == 2
    _one_line_error(capsys, field)
    assert not any(tmp_path.iterdir())


def test_run_name_flag_cannot_leave_the_output_folder(tmp_path, capsys):
    assert main(["run", "default", "--out-dir", str(tmp_path / "runs"), "--name", "../../outside"]) == 2
    _one_line_error(capsys, "--name")
    assert not any(tmp_path.iterdir())


def test_integral_floats_are_taken_as_integers():
    spec = parse_space(dict(TINY, train={"optim": {"epochs": 2.0, "fp_epochs": 1.0}, "data": {"batch_size": 64.0}},
                            search={"num_samples": 3.0}))
    assert (spec.train.optim.epochs, spec.train.optim.fp_epochs, spec.train.data.batch_size) == (2, 1, 64)
    assert all(type(v) is int for v in (spec.train.optim.epochs, spec.train.data.batch_size, spec.search.num_samples))
    with pytest.raises(ConfigError, match="optim.epochs"):
        TrainConfig().replace(**{"optim.epochs": 1.5})
    assert list(range(spec.train.optim.epochs)) == [0, 1]


def test_train_validates_everything_before_writing(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--out", str(out), "--fp-epochs", "1", "--set",
                 "quant.overrides={no.such.layer: {w_bits: 4}}"]) == 2
    _one_line_error(capsys, "overrides")
    assert not out.exists()  # no config.yaml left behind


def test_resume_refuses_settings_it_would_ignore(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path), "--sampler", "random"]) == 2
    assert "--sampler" in _one_line_error(capsys, "--resume")  # --num-samples extends a search instead
    assert main(["train", "--out", str(tmp_path), "--resume", "--epochs", "3"]) == 2
    assert "--epochs" in _one_line_error(capsys, "--resume")


# --- read-only output folders ----------------------------------------------------------------------------------
def _finished_looking_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    pd.DataFrame([{"trial_id": "a1b2c3d4", "status": "COMPLETED", "w_bits": 2, "val_acc": 0.9, "bitops": 10.0,
                   "avg_bits": 2.0, "full_fidelity": True}]).to_csv(folder / "trials.csv", index=False)
    (folder / "summary.json").write_text(json.dumps({
        "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
        "n_trials": 1, "n_completed": 1, "full_precision_costs": {"bitops": 100.0}}))
    return folder


@pytest.mark.parametrize("command", ["run", "train", "plot", "report", "resume"])
def test_read_only_output_is_one_line(tmp_path, capsys, readonly_dir, command):
    run = _finished_looking_run(tmp_path / "done")
    args = {"run": ["run", "default", "--out-dir", str(readonly_dir / "runs")],
            "train": ["train", "--out", str(readonly_dir / "r"), "--epochs", "1"],
            "plot": ["plot", str(run), "--out", str(readonly_dir / "front.html")],
            "report": ["report", str(run), "--out", str(readonly_dir / "report")],
            "resume": ["run", "--resume", str(readonly_dir / "r")]}[command]
    assert main(args) == 2
    field = {"run": "--out-dir", "train": "--out", "plot": "--out", "report": "--out", "resume": "--resume"}[command]
    assert "write" in _one_line_error(capsys, field)


# --- picklable errors, trial ids, report text ------------------------------------------------------------------
def test_config_errors_survive_pickling_with_their_message():
    for cls in (ConfigError, LoadError):
        err = cls("quant.w_bits", 9, "an integer from 2 to 8")
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is cls and str(back) == str(err) and back.field == "quant.w_bits"


def test_trial_ids_of_current_ray_folder_names():
    name = "speq_trainable_a907fde2_2_a_bits=4,ce_weight=0.9723,w_bits=8_2026-11-28_00-06-16"
    assert trial_id_of(Path(name)) == "a907fde2"
    assert trial_id_of(Path("speq_trainable_ab12c_00003_w_bits=2")) == "ab12c_00003"
    assert trial_id_of(Path(name), {"trial_id": "from-result"}) == "from-result"


def test_collect_trials_names_a_failed_trial_by_its_id(tmp_path):
    from speq_search.search.results import collect_trials

    trial = tmp_path / "speq_trainable_0badf00d_1_w_bits=2_2026-11-28_00-06-16"
    trial.mkdir()
    (trial / "params.json").write_text(json.dumps({"w_bits": 2}))
    (trial / "error.txt").write_text("Traceback...\nConfigError: quant.w_bits: got 9")
    df = collect_trials(tmp_path, parse_space(TINY))
    assert list(df["trial_id"]) == ["0badf00d"] and list(df["status"]) == ["FAILED"]


def test_markdown_report_escapes_run_text(tmp_path):
    assert md_escape("a*b_c<script>|x\ny") == "a\\*b\\_c&lt;script&gt;\\|x y"
    table = markdown_table(pd.DataFrame({"method": ["**bold** [link](http://x)"], "w_bits": [2]}))
    assert "\\*\\*bold\\*\\* \\[link\\]\\(http://x\\)" in table
    run = _finished_looking_run(tmp_path / "run_<b>*x*</b>")
    write_report([load_run_for(run)], load_run_for(run).trials, tmp_path / "report", log=lambda m: None)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "<b>" not in md and "run\\_&lt;b&gt;\\*x\\*&lt;/b&gt;" in md


def load_run_for(folder: Path):
    from speq_search.analysis.load import load_run

    return load_run(folder)


def test_report_warns_when_trials_csv_and_summary_disagree(tmp_path):
    run = _finished_looking_run(tmp_path / "cut")
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps(dict(summary, n_trials=3, n_completed=3)))
    logs: list[str] = []
    loaded = load_run_for(run)
    write_report([loaded], loaded.trials, tmp_path / "report", log=logs.append)
    assert any("summary.json says 3" in m for m in logs)
    assert "summary.json says 3" in (tmp_path / "report" / "report.md").read_text().replace("\\", "")


def test_shipped_spaces_still_load():
    for name in ("default", "fashion-mnist"):
        assert load_space(name).name
