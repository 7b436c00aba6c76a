"""The run files of a large search: rewritten from an in-memory table, hypervolume history incremental,
no private Optuna API. No Ray: synthetic trial folders in the layout a search writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from speq_search.analysis import pareto
from speq_search.search.results import TrialTable, collect_trials, write_outputs
from speq_search.space import parse_space

SPACE = parse_space({
    "name": "synthetic",
    "train": {"data": {"dataset": "digits"}, "optim": {"epochs": 2}},
    "params": {"w_bits": {"type": "choice", "values": [2, 4, 8]}},
    "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
})


def _trial(experiment: Path, i: int, epochs: int = 2, acc: float = 0.9) -> Path:
    folder = experiment / f"speq_trainable_{i:08x}_{i}_w_bits=4_2026-11-30_00-00-00"
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps({"w_bits": 4}))
    for e in range(1, epochs + 1):
        _report(folder, i, e, acc)
    return folder


def _report(folder: Path, i: int, epoch: int, acc: float) -> None:
    row = {"trial_id": f"{i:08x}", "epochs_done": epoch, "epochs_total": 2, "full_fidelity": epoch == 2,
           "val_acc": acc, "bitops": 1000 * i, "timestamp": 100 * i + epoch, "time_total_s": epoch}
    if epoch == 2:
        row["test_acc"] = acc
    with open(folder / "result.json", "a") as f:
        f.write(json.dumps(row) + "\n")


def test_a_refresh_reads_only_the_trials_whose_files_changed(tmp_path):
    folders = [_trial(tmp_path, i, epochs=2 if i < 4 else 1) for i in range(1, 6)]
    table = TrialTable()
    first = collect_trials(tmp_path, SPACE, table)
    assert table.reads == 5 and list(first["status"]) == ["COMPLETED"] * 3 + ["INCOMPLETE"] * 2
    again = collect_trials(tmp_path, SPACE, table)
    assert table.reads == 5
    pd.testing.assert_frame_equal(first, again)
    _report(folders[3], 4, 2, 0.95)  # trial 4 finishes
    (folders[4] / "error.txt").write_text("Traceback ...\nValueError: bad\n")  # trial 5 fails
    _trial(tmp_path, 6)  # a new trial
    now = collect_trials(tmp_path, SPACE, table)
    assert table.reads == 8
    status = dict(zip(now["trial_id"], now["status"]))
    assert status["00000004"] == "COMPLETED" and status["00000005"] == "FAILED" and status["00000006"] == "COMPLETED"
    assert now.loc[now["trial_id"] == "00000004", "val_acc"].item() == 0.95
    pd.testing.assert_frame_equal(now, collect_trials(tmp_path, SPACE))  # the same as reading every trial


def test_run_files_from_the_table_equal_those_from_reading_everything(tmp_path):
    experiment = tmp_path / "ray"
    experiment.mkdir()
    table = TrialTable()
    for i in range(1, 30):
        _trial(experiment, i, acc=0.5 + 0.4 * ((i * 7) % 29) / 29)
        write_outputs(tmp_path, SPACE, experiment, {"bitops": 40_000}, plots=False, table=table)
    kept = {name: (tmp_path / name).read_text() for name in ("trials.csv", "pareto.csv", "summary.json")}
    write_outputs(tmp_path, SPACE, experiment, {"bitops": 40_000}, plots=False)
    assert kept == {name: (tmp_path / name).read_text() for name in kept}
    assert table.reads == 29  # each trial read once


@pytest.mark.parametrize("objectives", [2, 3])
def test_incremental_hypervolume_history_equals_every_prefix_from_scratch(objectives, monkeypatch):
    rng = np.random.default_rng(objectives)
    metrics = ["val_acc", "bitops", "size_bytes"][:objectives]
    modes = ["max", "min", "min"][:objectives]
    values = np.round(rng.random((120, objectives)), 1) * [1, 1e6, 1e4][:objectives]
    values[5] = np.nan  # a failed trial
    values[7] = values[3]  # a duplicate
    reference = {"bitops": 1.2e6, "size_bytes": 1.1e4}
    loss = pareto.normalise(values, metrics, modes, reference)
    expected = [pareto._hypervolume_of_losses(loss[:k]) for k in range(1, len(loss) + 1)]
    measured = []
    real = pareto._hypervolume_of_losses
    monkeypatch.setattr(pareto, "_hypervolume_of_losses", lambda loss: measured.append(len(loss)) or real(loss))
    history = pareto.hypervolume_history(values, metrics, modes, reference)
    assert history == pytest.approx(expected, abs=1e-12)
    # Measured again only when a point joins the front, and then only the front.
    assert len(measured) < len(values) / 2 and max(measured) < len(values) / 4
    assert all(b >= a for a, b in zip(history, history[1:])) and history[-1] > 0


def test_the_hypervolume_ignores_infinite_rows_and_uses_no_private_optuna_api():
    code = ("import sys, numpy as np; from speq_search.analysis import pareto; "
            "v = np.array([[0.9, 10.0], [0.8, 5.0], [0.7, 0.0]]); "
            "hv = pareto.box_hypervolume(v, ideal=[1.0, 1.0], reference=[0.0, 100.0], log_axes=[1]); "
            "assert np.isfinite(hv) and hv > 0, hv; "
            "assert not [m for m in sys.modules if m.startswith('optuna')], 'optuna imported'; print(hv)")
    # In a fresh process: log10 of a zero cost is -inf, which must never reach the C library.
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
