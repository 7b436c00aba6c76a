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
from pathlib import Path

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
