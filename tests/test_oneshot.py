"""One-shot search: one supernet, searched by evaluation, the best fine-tuned (issue 26).

The space's `oneshot` section is checked when the space is parsed; the three phases run end to end
on a real local Ray instance (tiny: digits, cnn-small x0.25, a few epochs), resume in each phase,
and write a run folder whose front holds the fine-tuned trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from speq_search.analysis.load import read_run_csv
from speq_search.cli import main
from speq_search.errors import ConfigError
from speq_search.space import load_space, parse_space

ONESHOT = {
    "name": "tiny-oneshot",
    "train": {"data": {"dataset": "digits"}, "model": {"name": "cnn-small", "width": 0.25},
              "quant": {"per_bit_scales": True}, "speq": {"method": "qat"}, "optim": {"epochs": 1, "fp_epochs": 2},
              "compile": "off"},
    "per_layer": {"granularity": "layer", "w_bits": [2, 4, 8], "a_bits": [2, 4, 8]},
    "oneshot": {"supernet_epochs": 2, "paths": 1, "finetune_top": 3, "finetune_epochs": 1, "calibration_batches": 2},
    "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
    "search": {"num_samples": 10, "max_concurrent": 2, "sampler": "random", "seed": 0},
}


@pytest.mark.parametrize("change, field", [
    ({"per_layer": None, "params": {"w_bits": {"type": "choice", "values": [2, 4]}}}, "oneshot"),
    ({"params": {"lr": {"type": "choice", "values": [0.01, 0.02]}}}, "oneshot"),
    ({"oneshot": {"finetune_top": 11}}, "oneshot.finetune_top"),
    ({"oneshot": {"teacher": "fp"}}, "oneshot.teacher"),
    ({"oneshot": {"pathz": 2}}, "oneshot.pathz"),
    ({"oneshot": {"supernet_epochs": 0}}, "oneshot.supernet_epochs"),
])
def test_bad_oneshot_sections_are_one_line(change, field):
    raw = {**ONESHOT, **{k: v for k, v in change.items() if k != "oneshot"}}
    if "oneshot" in change:
        raw["oneshot"] = {**ONESHOT["oneshot"], **change["oneshot"]}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        parse_space(raw)
    assert err.value.field == field and "\n" not in str(err.value)


def test_bad_oneshot_sections_exit_2_from_the_cli(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(dict(ONESHOT, oneshot={**ONESHOT["oneshot"], "finetune_top": 50})))
    assert main(["run", str(space), "--out-dir", str(tmp_path / "runs"), "--name", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "oneshot.finetune_top" in err and "num_samples" in err
    assert not (tmp_path / "runs" / "x").exists()


def test_the_shipped_oneshot_spaces_parse_and_round_trip(tmp_path):
    from speq_search.space import dump_space

    for name in ("oneshot", "oneshot-fashion"):
        spec = load_space(name)
        assert spec.oneshot is not None and spec.train.quant.per_bit_scales
        dump_space(spec, tmp_path / f"{name}.yaml")
        again = load_space(str(tmp_path / f"{name}.yaml"), paths_relative_to_file=False)
        assert again.oneshot == spec.oneshot and again.group_choices() == spec.group_choices()


def _run(tmp_path, name: str, raw: dict | None = None, *extra: str, wait: bool = True):
    space = tmp_path / f"{name}.yaml"
    space.write_text(yaml.safe_dump(dict(raw or ONESHOT, name=name)))
    cmd = [sys.executable, "-m", "speq_search.cli", "run", str(space), "--out-dir", str(tmp_path / "runs"), "--name",
           name, *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def oneshot_run(tmp_path_factory):
    """A whole one-shot search: a 2-epoch supernet, 10 evaluations, the best 3 fine-tuned for an epoch."""
    folder = tmp_path_factory.mktemp("oneshot")
    proc = _run(folder, "whole", dict(ONESHOT, warm_start={"sensitivity": 2}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder / "runs" / "whole", proc.stderr + proc.stdout


def test_a_oneshot_search_runs_its_three_phases(oneshot_run):
    run_dir, log = oneshot_run
    assert "supernet epoch 2/2" in log and "fine-tuning the 3 best assignments" in log
    trials = read_run_csv(run_dir / "trials.csv")
    evaluated = trials[trials["fidelity"] == "supernet"]
    tuned = trials[trials["fidelity"] == "finetuned"]
    assert len(evaluated) == 10 and len(tuned) == 3 and set(trials["status"]) == {"COMPLETED"}
    assert (evaluated["epochs_done"] == 0).all() and (tuned["epochs_done"] == 1).all()
    # each fine-tuned assignment was evaluated first, and its prediction is beside its fine-tuned accuracy
    assert set(tuned["layer_bits"]) <= set(evaluated["layer_bits"]) and tuned["supernet_val_acc"].notna().all()
    front = read_run_csv(run_dir / "pareto.csv")
    assert len(front) >= 1 and set(front["fidelity"]) == {"finetuned"}  # the front holds fine-tuned trials only
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_evaluated"] == 10 and summary["n_finetuned"] == 3 and summary["hypervolume"] > 0
    assert (run_dir / "supernet.pt").exists()
    assert json.loads((run_dir / "run.json").read_text())["oneshot"]["phase"] == "done"
    storage = f"sqlite:///{run_dir / 'study.db'}"
    assert len(optuna.load_study(study_name="whole-supernet", storage=storage).trials) == 10
    assert [t.state.name for t in optuna.load_study(study_name="whole", storage=storage).trials] == ["COMPLETE"] * 3
    # warm_start: sensitivity: the proxy front's 2 points are the first assignments evaluated
    proxy = json.loads((run_dir / "run.json").read_text())["proxy_front"]
    first = sorted(optuna.load_study(study_name="whole-supernet", storage=storage).trials, key=lambda t: t.number)[:2]
    assert len(proxy) == 2 and [t.params for t in first] == proxy and (run_dir / "proxy-front.csv").exists()


def test_a_oneshot_run_reports_and_plots(oneshot_run, tmp_path):
    run_dir, _ = oneshot_run
    assert main(["plot", str(run_dir), "--kind", "oneshot", "--out", str(tmp_path / "oneshot.html")]) == 0
    assert (tmp_path / "oneshot.html").exists()
    assert main(["report", str(run_dir), "--out", str(tmp_path / "report")]) == 0


def test_a_trained_supernet_is_searched_again_and_one_of_another_space_refused(oneshot_run, tmp_path, capsys):
    run_dir, _ = oneshot_run
    again = dict(ONESHOT, oneshot={**ONESHOT["oneshot"], "supernet": str(run_dir / "supernet.pt"), "finetune_top": 1},
                 search={**ONESHOT["search"], "num_samples": 4})
    proc = _run(tmp_path, "again", again)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no supernet phase" in proc.stderr
    trials = read_run_csv(tmp_path / "runs" / "again" / "trials.csv")
    assert (trials["fidelity"] == "supernet").sum() == 4 and (trials["fidelity"] == "finetuned").sum() == 1
    other = dict(again, train={**ONESHOT["train"], "model": {"name": "cnn-small", "width": 0.5}})
    space = tmp_path / "other.yaml"
    space.write_text(yaml.safe_dump(dict(other, name="other")))
    assert main(["run", str(space), "--out-dir", str(tmp_path / "runs"), "--name", "other"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "supernet" in err and "width" in err, err
    assert not (tmp_path / "runs" / "other").exists()


def _interrupt(proc, marker: str) -> str:
    """Send Ctrl-C to a search once ``marker`` is in its output; return the output."""
    seen = ""
    deadline = time.time() + 400
    try:
        while marker not in seen and time.time() < deadline and proc.poll() is None:
            seen += proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        seen += proc.communicate(timeout=200)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return seen


def test_a_oneshot_search_resumes_in_each_phase(tmp_path):
    """Ctrl-C in the supernet's training, in the evaluations, between two phases and in the
    fine-tuning: each time `--resume` goes on from where it stopped, and the search ends whole."""
    raw = dict(ONESHOT, oneshot={**ONESHOT["oneshot"], "supernet_epochs": 2, "finetune_epochs": 1},
               search={**ONESHOT["search"], "num_samples": 6, "max_concurrent": 1})
    run_dir = tmp_path / "runs" / "stopped"
    resume = [sys.executable, "-m", "speq_search.cli", "run", "--resume", str(run_dir)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = _run(tmp_path, "stopped", raw, wait=False)
    for marker, phase in (("supernet epoch 1/", "supernet"), ("evaluate: ", "evaluate"),
                          ("fine-tuning the", "finetune"), ("finetune: ", "finetune")):
        out = _interrupt(proc, marker)
        assert proc.returncode == 130, out[-3000:]
        assert json.loads((run_dir / "run.json").read_text())["oneshot"]["phase"] == phase, out[-2000:]
        proc = subprocess.Popen(resume, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    out = proc.communicate(timeout=400)[0]
    assert proc.returncode == 0, out[-3000:]
    trials = read_run_csv(run_dir / "trials.csv")
    assert (trials["fidelity"] == "supernet").sum() == 6 and (trials["fidelity"] == "finetuned").sum() == 3
    assert set(trials["status"]) == {"COMPLETED"} and trials["trial_id"].is_unique
    assert json.loads((run_dir / "run.json").read_text())["oneshot"]["phase"] == "done"
    storage = f"sqlite:///{run_dir / 'study.db'}"
    assert [t.state.name for t in optuna.load_study(study_name="stopped", storage=storage).trials] == ["COMPLETE"] * 3
