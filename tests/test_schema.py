"""One schema: metric names, trial statuses, Ray's trial folders and ``layer_bits`` are named once."""

from __future__ import annotations

import dataclasses
import json

import pytest

from speq_search import schema
from speq_search.analysis.load import expand_layer_bits, load_run
from speq_search.analysis.pareto import normalise
from speq_search.errors import ConfigError
from speq_search.search.results import collect_trials
from speq_search.space import parse_space

SPACE = {"name": "s", "train": {"optim": {"epochs": 2, "fp_epochs": 1}},
         "params": {"w_bits": {"type": "choice", "values": [2, 4]}},
         "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
         "search": {"sampler": "random", "num_samples": 2}}


def _trial(experiment, name: str, params: dict, results: list[dict], error: str = "") -> None:
    folder = experiment / name
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(params))
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in results))
    if error:
        (folder / "error.txt").write_text(f"Traceback...\n{error}\n")


def test_a_new_metric_is_one_entry(monkeypatch, tmp_path):
    """Adding a metric touches one place: it becomes an objective, a budget and a trials.csv column."""
    with pytest.raises(ConfigError, match="objectives\\[1\\].metric"):
        parse_space(dict(SPACE, objectives=[{"metric": "val_acc", "mode": "max"}, {"metric": "flash_kb", "mode": "min"}]))
    monkeypatch.setitem(schema.METRICS, "flash_kb", schema.Metric("flash_kb", "model", "flash (bytes)", objective=True,
                                                                  unit="bytes"))

    spec = parse_space(dict(SPACE, objectives=[{"metric": "val_acc", "mode": "max"}, {"metric": "flash_kb", "mode": "min"}],
                            constraints=["flash_kb <= 64"]))
    assert [o.metric for o in spec.objectives] == ["val_acc", "flash_kb"]
    assert str(spec.constraints[0]) == "flash_kb <= 64"
    _trial(tmp_path, "speq_trainable_a0000001_1_w_bits=2", {"w_bits": 2},
           [{"trial_id": "a0000001", "val_acc": 0.9, "flash_kb": 12.5, "full_fidelity": True, "test_acc": 0.9}])
    rows = collect_trials(tmp_path, spec)
    assert rows.loc[0, "flash_kb"] == 12.5 and rows.loc[0, "status"] == schema.COMPLETED
    # a cost of the float model too: normalised by the float model's value, as size and BitOps are
    assert normalise([[32.0]], ["flash_kb"], ["min"], {"flash_kb": 64.0})[0, 0] == 0.5
    assert "flash_kb" in schema.metric_columns() and "flash_kb" in schema.hidden_metrics()
    # and it reads in its unit wherever a person reads it: the search's progress line, the report
    from speq_search.analysis.plots import axis_title
    from speq_search.schema import format_value
    from speq_search.search.progress import cost_text as _cost_text

    assert _cost_text("flash_kb", 2048) == "2.0 KiB" and format_value("flash_kb", 2048) == "2.0 KiB"
    assert axis_title("flash_kb") == "flash (bytes)"


def test_one_formatter_reads_each_unit_in_a_table_and_in_a_sentence():
    from speq_search.search.progress import cost_text as _cost_text

    table = [("val_acc", 0.982), ("size_bytes", 27443), ("bitops", 15.4e6), ("macs", 2.5e9), ("avg_bits", 3.25),
             ("params", 12345), ("latency_ms", 1.23456), ("trial_id", "a1"), ("feasible", True), ("bitops", float("nan"))]
    assert [schema.format_value(m, v) for m, v in table] == [
        "98.20 %", "26.8 KiB", "15.40 M", "2.50 G", "3.25", "12345", "1.235", "a1", "True", ""]
    text = {"bitops": (15.4e6, "15.4 M BitOps"), "size_bytes": (27443, "26.8 KiB"), "avg_bits": (3.25, "3.25 avg bits"),
            "params": (12345, "12.3 k params"), "macs": (2.5e9, "2.50 G MACs"), "latency_ms": (1.5, "1.5 latency ms")}
    for metric, (value, expected) in text.items():
        assert schema.format_value(metric, value, style="text") == expected == _cost_text(metric, value)
    assert "M BitOps" in schema.format_value("bitops (run a)", 2e6, style="text")  # a comparison's column
    with pytest.raises(ValueError, match="style"):
        schema.format_value("bitops", 1.0, style="html")


def test_every_accuracy_is_a_score_and_nothing_else_is():
    for name, metric in schema.METRICS.items():
        assert (metric.kind == "score") == name.endswith("_acc"), name
        assert schema.is_score(name) == (schema.default_mode(name) == "max")
    assert schema.is_score("val_acc (run a)") and schema.is_score("other_tool_acc") and not schema.is_score("loss")


def test_every_cost_the_library_computes_is_a_metric():
    computed = {f.name for f in dataclasses.fields(schema.Costs)}
    assert computed <= set(schema.cost_metrics()) and computed <= set(schema.objective_metrics())
    assert set(schema.bit_metrics()) | set(schema.model_cost_metrics()) == computed
    assert "test_acc" not in schema.objective_metrics()  # the sampler never sees the test split


@pytest.mark.parametrize("last, error, stopped, live, status", [
    ({}, "", False, True, "INCOMPLETE"),
    ({"val_acc": 0.5}, "ValueError: x", False, True, "FAILED"),
    ({"feasible": False, "full_fidelity": True}, "", False, True, "INFEASIBLE"),
    ({"full_fidelity": True, "test_acc": 0.9}, "", False, True, "COMPLETED"),
    ({"full_fidelity": False}, "", False, True, "INCOMPLETE"),
    ({"full_fidelity": False, "done": True}, "", False, True, "STOPPED"),
    ({"full_fidelity": False}, "", True, True, "STOPPED"),
    ({"full_fidelity": False}, "", False, False, "STOPPED"),
    ({"val_acc": 0.5}, "", False, True, "COMPLETED"),  # a trial of another tool
])
def test_trial_status(last, error, stopped, live, status):
    assert schema.trial_status(last, error, stopped, live) == status


@pytest.mark.parametrize("retried", [True, False])
def test_an_error_the_trial_reported_results_after_is_a_retry_not_a_failure(tmp_path, retried):
    """A lost node leaves error.txt; Ray retries the trial from its checkpoint and it goes on to its last
    epoch: COMPLETED. An error written after the last result is the trial's failure."""
    import os
    import time

    folder = tmp_path / "speq_trainable_a0000001_1_w_bits=2_2026-12-06"
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps({"w_bits": 2}))
    errored = int(time.time()) - 100
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(errored))
    (folder / "error.txt").write_text(f"Failure # 1 (occurred at {stamp})\nActorUnavailableError: the node died\n")
    later = errored + 200  # a sync of the experiment rewrites the file: its time says nothing
    os.utime(folder / "error.txt", (later, later))
    last = errored + 50 if retried else errored - 50
    (folder / "result.json").write_text(json.dumps({"trial_id": "a0000001", "val_acc": 0.9, "bitops": 4,
                                                    "full_fidelity": retried, "timestamp": int(last)}) + "\n")
    trial = schema.read_trial_folder(folder)
    assert trial.status(live=False) == ("COMPLETED" if retried else "FAILED")
    assert bool(trial.retried_after) == retried and bool(trial.error) != retried


def test_the_search_and_the_analysis_read_trial_folders_alike(tmp_path):
    """The run files (search) and a bare Ray experiment (analysis) give every finished trial the same status."""
    experiment = tmp_path / "ray"
    _trial(experiment, "speq_trainable_a0000001_1_w_bits=2_2026-11-30", {"w_bits": 2},
           [{"val_acc": 0.5, "full_fidelity": False}, {"val_acc": 0.9, "full_fidelity": True, "test_acc": 0.9}])
    _trial(experiment, "speq_trainable_a0000002_2_w_bits=4_2026-11-30", {"w_bits": 4}, [{"val_acc": 0.5,
                                                                                       "full_fidelity": False}],
           error="TrainingDiverged: loss became nan")
    _trial(experiment, "speq_trainable_a0000003_3_w_bits=4_2026-11-30", {"w_bits": 4},
           [{"feasible": False, "full_fidelity": True, "bitops": 10}])
    _trial(experiment, "speq_trainable_a0000004_4_w_bits=2_2026-11-30", {"w_bits": 2},
           [{"val_acc": 0.4, "full_fidelity": False, "done": True}])
    search = collect_trials(experiment, parse_space(SPACE)).set_index("trial_id")["status"].to_dict()
    analysis = load_run(experiment).trials.set_index("trial_id")["status"].to_dict()
    assert search == analysis == {"a0000001": "COMPLETED", "a0000002": "FAILED", "a0000003": "INFEASIBLE",
                                  "a0000004": "STOPPED"}


@pytest.mark.parametrize("state, constraints, status", [
    ("COMPLETE", {}, "COMPLETED"), ("COMPLETE", {"bitops <= 8": 0.0}, "COMPLETED"),
    ("COMPLETE", {"bitops <= 8": 0.25}, "INFEASIBLE"), ("FAIL", {}, "FAILED"), ("PRUNED", {}, "STOPPED"),
    ("PRUNED", {"bitops <= 8": 0.25}, "STOPPED"), ("RUNNING", {}, "INCOMPLETE"), ("WAITING", None, "INCOMPLETE"),
])
def test_optuna_trial_status(state, constraints, status):
    assert schema.optuna_trial_status(state, constraints) == status


def test_the_study_and_the_trial_folders_give_each_trial_the_same_status(tmp_path):
    """A run's study.db (as the search tells it) and its Ray trial folders read alike: completed,
    failed, infeasible (over budget) and stopped trials."""

    from speq_search.search.searcher import StudySearcher

    ends = {  # each trial's last result (as its folder holds it) and its error
        "a0000001": ({"val_acc": 0.9, "bitops": 4, "full_fidelity": True, "test_acc": 0.9}, ""),
        "a0000002": ({"val_acc": 0.5, "bitops": 4, "full_fidelity": False}, "TrainingDiverged: loss became nan"),
        "a0000003": ({"feasible": False, "full_fidelity": True, "bitops": 10}, ""),
        "a0000004": ({"val_acc": 0.4, "bitops": 2, "full_fidelity": False, "done": True}, ""),
    }
    experiment = tmp_path / "ray"
    url = f"sqlite:///{tmp_path / 'study.db'}"
    spec = parse_space(dict(SPACE, name="s", params={"w_bits": {"type": "choice", "values": [2, 4]}},
                            objectives=[{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
                            constraints=["bitops <= 8"], search={"sampler": "random"}))
    searcher = StudySearcher(spec, tmp_path / "study.db")
    for n, (trial_id, (last, error)) in enumerate(ends.items(), start=1):
        params = searcher.suggest(trial_id)
        _trial(experiment, f"speq_trainable_{trial_id}_{n}_w_bits={params['w_bits']}_2026-11-30", params,
               [{"trial_id": trial_id, **last}], error=error)
        searcher.on_trial_complete(trial_id, last, error=bool(error))
    folders = load_run(experiment).trials["status"].tolist()
    study = load_run(url + "#s").trials["status"].tolist()
    assert folders == study == ["COMPLETED", "FAILED", "INFEASIBLE", "STOPPED"]


def test_layer_bits_round_trip():
    layers = {"features.0": (8, 8), "layer1.0.conv1": (2, 3), "fc": (8, 32)}
    text = schema.encode_layer_bits(layers)
    assert text == "features.0=8/8;layer1.0.conv1=2/3;fc=8/32"
    assert schema.decode_layer_bits(text) == [(n, w, a) for n, (w, a) in layers.items()]
    assert schema.encode_layer_bits([("a", 2, 4)]) == "a=2/4"
    import pandas as pd

    long = expand_layer_bits(pd.DataFrame({"trial_id": ["t"], "layer_bits": [text]}))
    assert long[["layer", "w_bits", "a_bits"]].values.tolist() == [[n, w, a] for n, (w, a) in layers.items()]
