"""Experiment tracking: TensorBoard (offline) and MLflow (a local file store) from a real search on
digits; W&B and bad settings refused in one line before anything starts."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from speq_search.cli import main

SPACE = """
name: tracked
train:
  data: {dataset: digits}
  model: {width: 0.25}
  optim: {epochs: 2, fp_epochs: 2}
  compile: "off"
params:
  w_bits: {type: choice, values: [2, 8]}
objectives: [{metric: val_acc, mode: max}, {metric: bitops, mode: min}]
search: {num_samples: 2, max_concurrent: 2, seed: 0}
"""


def _events(path: Path) -> list:
    """The records of a TensorBoard event file (TFRecord framing around Event protos)."""
    from tensorboardX.proto import event_pb2

    data, i, events = path.read_bytes(), 0, []
    while i < len(data):
        (length,) = struct.unpack("<Q", data[i:i + 8])
        event = event_pb2.Event()
        event.ParseFromString(data[i + 12:i + 12 + length])
        events.append(event)
        i += 12 + length + 4
    return events


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    pytest.importorskip("mlflow")
    tmp = tmp_path_factory.mktemp("tracking")
    space = tmp / "space.yaml"
    space.write_text(SPACE)
    uri = (tmp / "mlruns").as_uri()
    assert main(["run", str(space), "--out-dir", str(tmp / "runs"), "--name", "t", "--logger", "tensorboard",
                 "--logger", "mlflow", "--mlflow-uri", uri]) == 0
    yield tmp / "runs" / "t", uri
    import ray

    ray.shutdown()


def test_tensorboard_gets_every_epoch_and_each_trial_parameters(tracked_run):
    run_dir, _ = tracked_run
    files = sorted(run_dir.glob("ray/*/events.out.tfevents.*"))
    assert len(files) == 2
    for f in files:
        events = _events(f)
        val_acc = [v.simple_value for e in events for v in e.summary.value if v.tag == "ray/tune/val_acc"]
        bitops = [v.simple_value for e in events for v in e.summary.value if v.tag == "ray/tune/bitops"]
        assert len(val_acc) == 2 and all(0 < a <= 1 for a in val_acc)  # one point per epoch
        assert bitops and bitops[-1] > 0  # the costs
        assert b"w_bits" in f.read_bytes()  # the sampled parameters (hparams)


def test_mlflow_gets_each_trial_with_parameters_per_epoch_metrics_and_costs(tracked_run):
    import mlflow
    from mlflow.tracking import MlflowClient

    _, uri = tracked_run
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    assert sorted(r.data.params["w_bits"] for r in runs) == ["2", "8"]
    for r in runs:
        history = client.get_metric_history(r.info.run_id, "val_acc")
        assert len(history) == 2  # one value per epoch
        assert r.data.metrics["bitops"] > 0 and "avg_bits" in r.data.metrics and "test_acc" in r.data.metrics
    assert mlflow.__version__


@pytest.mark.parametrize("args,hint", [
    (["--logger", "comet"], "tensorboard | mlflow | wandb"),
    (["--mlflow-uri", "file:/tmp/x"], "only with --logger mlflow"),
])
def test_bad_tracking_settings_exit_2_before_anything_starts(tmp_path, capsys, args, hint):
    assert main(["run", "default", "--out-dir", str(tmp_path), "--name", "r", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and hint in err, err
    assert not (tmp_path / "r").exists()


def test_wandb_without_its_package_or_login_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert main(["run", "default", "--out-dir", str(tmp_path), "--name", "r", "--logger", "wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--logger" in err and ("pip install" in err or "wandb login" in err), err
    assert not (tmp_path / "r").exists()
