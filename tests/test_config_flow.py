"""A value is checked once, where it enters: from a space file to the quantizer and the teacher."""

from __future__ import annotations

import sys

import pytest
import torch
import yaml

import speq_search.config as config
from speq_search.errors import ConfigError
from speq_search.quant import layer_bits
from speq_search.space import load_space
from speq_search.train import build_model, load_data, make_step, quantize_for

CHECKS = ("check_bits", "check_number", "check_choice")


@pytest.fixture()
def checked(monkeypatch):
    """Every ``(field, value)`` the config's checks see, wherever a module imported them."""
    seen: list[tuple[str, object]] = []
    for name in CHECKS:
        real = getattr(config, name)

        def counting(*args, _real=real, _name=name, **kwargs):
            field, value = (args[1] if len(args) > 1 else kwargs.get("field", "bits"), args[0]) \
                if _name == "check_bits" else (args[0], args[1])
            seen.append((field, value))
            return _real(*args, **kwargs)

        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("speq_search") and getattr(module, name, None) is real:
                monkeypatch.setattr(module, name, counting)
    return seen


def test_a_value_travels_from_a_space_file_to_the_quantizer_with_one_check(tmp_path, checked):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({
        "name": "flow", "train": {"optim": {"epochs": 1, "fp_epochs": 0}, "data": {"train_size": 200}},
        "params": {"w_bits": {"type": "choice", "values": [3, 5]}, "p_high": {"type": "uniform", "low": 0.25,
                                                                             "high": 0.75}},
        "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
        "search": {"sampler": "random", "num_samples": 2}}))
    spec = load_space(str(path))  # where the values enter: each choice and bound checked once
    assert checked.count(("quant.w_bits", 3)) == 1 and checked.count(("speq.p_high", 0.25)) == 1

    cfg = spec.trial_config({"w_bits": 3, "p_high": 0.4})  # a sampled point: from checked choices and ranges
    cfg = cfg.replace(fp_checkpoint=str(tmp_path / "fp.pt"))  # as the trainable adds its float model
    splits = load_data(cfg)
    student = quantize_for(cfg, build_model(cfg, splits))
    step = make_step(cfg, student, None, torch.Generator().manual_seed(0), torch.device("cpu"))
    loss, *_ = step(splits.train.x[:8], splits.train.y[:8])  # a SPEQ step: the teacher draws at p_high
    loss.backward()

    assert layer_bits(student)["features.4"]["w_bits"] == 3 and cfg.speq.p_high == 0.4
    bits_checks = [(f, v) for f, v in checked if f.endswith("w_bits") and v == 3]
    assert bits_checks == [("quant.w_bits", 3)], bits_checks  # once, at the file
    assert not [(f, v) for f, v in checked if v == 0.4]  # the sampled value: never re-checked as a field


def test_replace_checks_only_the_fields_it_changes(checked):
    cfg = config.TrainConfig()
    checked.clear()
    cfg.replace(**{"quant.w_bits": 4, "optim.lr": 0.1})
    assert sorted(f for f, _ in checked) == ["optim.lr", "quant.w_bits"]
    checked.clear()
    cfg.replace(trusted=True, **{"quant.w_bits": 4})
    assert checked == []
    with pytest.raises(ConfigError, match="speq.ce_weight"):  # checks across fields run even when trusted
        cfg.replace(trusted=True, **{"speq.ce_weight": 0, "speq.method": "qat"})


def test_config_is_a_leaf():
    """The config module imports no torch, no quantizer, no model or data registry and reads no file
    (the generic, plain-Python speq_search.registry holds its methods)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(config))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported <= {"__future__", "copy", "dataclasses", "functools", "math", "collections.abc", "pathlib",
                        "typing", "yaml", "speq_search.errors", "speq_search.plugins", "speq_search.registry",
                        "speq_search.yamlio"}, imported
    # an unknown model or a missing cost table is found where it is built, naming the field
    cfg = config.TrainConfig().replace(**{"model.name": "no-such-model", "cost_model": "missing.yaml"})
    from speq_search.train import planned_costs

    with pytest.raises(ConfigError) as err:
        planned_costs(cfg)
    assert err.value.field == "model.name"


def test_a_per_layer_run_reports_the_bits_that_ran(tmp_path, tiny_cfg):
    """Not the unused uniform defaults: its averages and its layer_bits, and no w_bits/a_bits."""
    from speq_search import run_training
    from speq_search.schema import decode_layer_bits

    uniform = run_training(tiny_cfg, tmp_path / "u", log=lambda m: None)
    assert (uniform["w_bits"], uniform["a_bits"]) == (2, 2)
    per_layer = run_training(tiny_cfg.replace(**{"quant.group_bits": {"features.4": {"w_bits": 5, "a_bits": 6}}}),
                             tmp_path / "p", log=lambda m: None)
    assert "w_bits" not in per_layer and "a_bits" not in per_layer
    bits = {name: (w, a) for name, w, a in decode_layer_bits(per_layer["layer_bits"])}
    assert bits["features.4"] == (5, 6) and per_layer["avg_w_bits"] > uniform["avg_w_bits"]
