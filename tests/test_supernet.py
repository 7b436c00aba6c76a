"""The one-shot supernet: assignments applied in place, sandwich training, evaluation at an
assignment, resume, identity checks, fine-tuning from its weights (issue 26)."""

from __future__ import annotations

import copy
import csv
import json

import pytest
import torch

from speq_search import compiling
from speq_search.config import OneShotConfig, QuantConfig, TrainConfig
from speq_search.errors import ConfigError
from speq_search.quant import act_quantizers, layer_bits, layer_bits_of, layer_groups, quantize_model, set_layer_bits
from speq_search.quant.primitives import per_bit_index
from speq_search.train import (
    SupernetTraining,
    apply_assignment,
    assignment_quant,
    build_model,
    check_choices,
    evaluate,
    evaluate_assignment,
    highest,
    load_data,
    load_supernet,
    lowest,
    quantize_for,
    random_assignment,
    recalibrate_bn,
    run,
    train_supernet,
)
from speq_search.train.supernet import batch_norms, sandwich_step

CPU = torch.device("cpu")
BITS = [2, 3, 4, 8]
needs_compiler = pytest.mark.skipif(not compiling.has_cxx_compiler(), reason="torch.compile needs g++ and Python.h")
QUIET = {"log": lambda m: None}


@pytest.fixture
def sn_cfg(tiny_cfg):
    """cnn-small x0.5 on digits, per-bit-width scales, eager."""
    return tiny_cfg.replace(**{"quant.per_bit_scales": True, "compile": "off"})


def choices_of(cfg, splits, values=BITS, granularity="layer"):
    groups = layer_groups(build_model(cfg, splits), granularity, cfg.quant.first_last_bits)
    out = {g: {k: list(values) for k, searchable in kinds.items() if searchable} for g, kinds in groups.items()}
    return {g: kinds for g, kinds in out.items() if kinds}


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _equal_states(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- assignments
def test_layer_bits_of_is_the_rule_quantize_model_builds_with(sn_cfg):
    splits = load_data(sn_cfg)
    quant = QuantConfig(w_bits=4, a_bits=3, group_bits={"features": {"w_bits": 2}, "features.4": {"a_bits": 5}},
                        overrides={"features.8": {"w_bits": 6}}, first_last_bits=8, input_bits=7)
    model = quantize_model(build_model(sn_cfg, splits), quant)
    names = [n for n, _ in model.named_modules() if n in layer_bits(model)]
    assert layer_bits_of(names, quant) == layer_bits(model) == {
        "features.0": {"w_bits": 8, "a_bits": 7},  # first layer: first/last and input rules win over the group
        "features.4": {"w_bits": 2, "a_bits": 5},  # the longer group key wins
        "features.8": {"w_bits": 6, "a_bits": 3},  # an override wins over everything
        "classifier": {"w_bits": 8, "a_bits": 3},
    }


def test_set_layer_bits_equals_building_at_those_bits(sn_cfg):
    """With per-bit scales a model quantized at one assignment and switched in place computes what a
    model quantized at the other computes (same weights and clips)."""
    splits = load_data(sn_cfg)
    torch.manual_seed(0)
    float_model = build_model(sn_cfg, splits)
    a = QuantConfig(w_bits=2, a_bits=2, per_bit_scales=True)
    b = assignment_quant(a, {"features.4": {"w_bits": 8, "a_bits": 3}, "features.8": {"w_bits": 4, "a_bits": 8}})
    switched = quantize_model(copy.deepcopy(float_model), a).eval()
    built = quantize_model(copy.deepcopy(float_model), b).eval()
    for q in [*act_quantizers(switched), *act_quantizers(built)]:
        q.clip.data.fill_(0.5)  # the default clip (6) rounds this untrained network's activations to 0
    x = splits.val.x[:64]
    assert not torch.equal(switched(x), built(x))
    set_layer_bits(switched, layer_bits_of(list(layer_bits(switched)), b))
    assert layer_bits(switched) == layer_bits(built)
    assert torch.equal(switched(x), built(x))
    with pytest.raises(KeyError):
        set_layer_bits(switched, {"features.0": {"w_bits": 8, "a_bits": 8}})  # every layer must be given


def test_highest_lowest_and_seeded_random_assignments():
    choices = {"a": {"w_bits": [4, 2, 8], "a_bits": [3, 8]}, "b": {"a_bits": [2, 4]}}
    assert highest(choices) == {"a": {"w_bits": 8, "a_bits": 8}, "b": {"a_bits": 4}}
    assert lowest(choices) == {"a": {"w_bits": 2, "a_bits": 3}, "b": {"a_bits": 2}}
    draws = [random_assignment(choices, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert draws[0] == draws[1]  # a seeded generator: the same draw
    gen = torch.Generator().manual_seed(0)
    seen = {json.dumps(random_assignment(choices, gen), sort_keys=True) for _ in range(300)}
    assert len(seen) == 3 * 2 * 2  # every combination, nothing outside the choices
    for text in seen:
        a = json.loads(text)
        assert a["a"]["w_bits"] in (2, 4, 8) and a["a"]["a_bits"] in (3, 8) and set(a["b"]) == {"a_bits"}


def test_assignment_quant_lays_the_assignment_over_the_config():
    quant = QuantConfig(w_bits=4, a_bits=4, group_bits={"x": {"w_bits": 3, "a_bits": 5}})
    merged = assignment_quant(quant, {"x": {"a_bits": 2}, "y": {"w_bits": 8}})
    assert merged.group_bits == {"x": {"w_bits": 3, "a_bits": 2}, "y": {"w_bits": 8}}
    assert quant.group_bits == {"x": {"w_bits": 3, "a_bits": 5}}  # the config itself unchanged
    with pytest.raises(ConfigError, match=r"quant\.group_bits\.y\.w_bits"):
        assignment_quant(quant, {"y": {"w_bits": 9}})
    with pytest.raises(ConfigError, match=r"quant\.group_bits\.y"):
        assignment_quant(quant, {"y": 4})


def test_choices_are_checked_against_the_models_groups(sn_cfg):
    splits = load_data(sn_cfg)
    model = build_model(sn_cfg, splits)
    assert check_choices(choices_of(sn_cfg, splits), model, 8) == "layer"
    assert check_choices({"features": {"a_bits": [2, 4]}}, model, 8) == "stage"
    with pytest.raises(ConfigError, match="choices") as err:
        check_choices({"layer9": {"w_bits": [2]}}, model, 8)
    assert "features.4" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="choices"):  # the first layer's weights are at first_last_bits
        check_choices({"features.0": {"w_bits": [2, 4]}}, model, 8)
    with pytest.raises(ConfigError, match=r"choices\.features\.4\.w_bits"):
        check_choices({"features.4": {"w_bits": [2, 9]}}, model, 8)
    with pytest.raises(ConfigError, match=r"choices\.features\.4"):
        check_choices({"features.4": {"bits": [2]}}, model, 8)


# ----------------------------------------------------------------------------- training
def _training(cfg, oneshot=None, **kw):
    splits = load_data(cfg)
    choices = choices_of(cfg, splits)
    return SupernetTraining(cfg, oneshot or OneShotConfig(supernet_epochs=2), choices, splits, CPU, log=lambda m: None,
                            **kw), splits, choices


def _recorded_forwards(model):
    """Layer bits of every forward that builds a graph (the training paths; not the no-grad
    teacher, calibration or evaluation passes)."""
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(layer_bits(m)) if torch.is_grad_enabled() else None)
    return seen


@pytest.mark.parametrize("per_bit_scales", [True, False])
def test_the_sandwich_visits_the_highest_and_lowest_every_step(sn_cfg, per_bit_scales):
    cfg = sn_cfg.replace(**{"quant.per_bit_scales": per_bit_scales})
    sn, splits, choices = _training(cfg, OneShotConfig(supernet_epochs=1, paths=2))
    seen = _recorded_forwards(sn.model)
    sn.epoch(0)
    steps = len(splits.train) // cfg.data.batch_size
    assert len(seen) == steps * 4
    high, low = sn.bits_of(highest(choices)), sn.bits_of(lowest(choices))
    assert high["features.4"] == {"w_bits": 8, "a_bits": 8} and low["features.4"] == {"w_bits": 2, "a_bits": 2}
    for s in range(steps):
        assert seen[4 * s] == high and seen[4 * s + 1] == low
    drawn = {json.dumps(b, sort_keys=True) for i, b in enumerate(seen) if i % 4 >= 2}
    assert len(drawn) > steps  # random paths differ from step to step


def test_the_stochastic_teacher_pass_changes_no_state(sn_cfg):
    """One step's BatchNorm statistics and bits are those of its training paths alone: the same with
    SPEQ's stochastic teacher (a pass per path) as without a teacher."""
    runs = []
    for teacher in ("stochastic", "none"):
        sn, splits, _ = _training(sn_cfg, OneShotConfig(teacher=teacher, paths=2))
        before = batch_norms(sn.model)[0].num_batches_tracked.item()
        sn.step(splits.train.x[:64], splits.train.y[:64])
        assert batch_norms(sn.model)[0].num_batches_tracked.item() == before + 4  # four paths, no more
        runs.append((_state(sn.model), layer_bits(sn.model)))
    buffers = [{k: v for k, v in state.items() if "running" in k or "num_batches" in k} for state, _ in runs]
    assert _equal_states(*buffers)
    assert runs[0][1] == runs[1][1]


def test_per_bit_clips_learn_only_at_the_bits_used(sn_cfg):
    sn, splits, choices = _training(sn_cfg, OneShotConfig(paths=1))
    paths = sn.paths()
    step = sandwich_step(sn.model, sn_cfg, sn.oneshot, lambda: paths, None)
    sn.optimizer.zero_grad(set_to_none=True)
    step(splits.train.x[:64], splits.train.y[:64])
    for name, layer in sn.model.named_modules():
        if name not in paths[0]:
            continue
        for kind, q in (("w_bits", layer.weight_quant), ("a_bits", layer.act_quant)):
            used = {per_bit_index(p[name][kind]) for p in paths}
            per_bit = q.clip.grad.reshape(7, -1).abs().sum(dim=1)
            assert {i for i in range(7) if per_bit[i] > 0} == used, (name, kind, paths)


@pytest.mark.parametrize("teacher", ["inplace", "stochastic"])
def test_training_lowers_the_loss_of_both_extremes(sn_cfg, teacher):
    sn, splits, choices = _training(sn_cfg, OneShotConfig(supernet_epochs=3, teacher=teacher))
    before = [sn.evaluate_bits(b)["val_loss"] for b in (sn.high, sn.low)]
    rows = [sn.epoch(e) for e in range(3)]
    after = [sn.evaluate_bits(b)["val_loss"] for b in (sn.high, sn.low)]
    assert after[0] < before[0] and after[1] < before[1]
    assert rows[-1]["low_train_ce"] < rows[0]["low_train_ce"] and rows[-1]["low_train_kd"] > 0
    assert rows[-1]["low_val_acc"] > 0.8


def test_resume_equals_an_uninterrupted_supernet(tmp_path, sn_cfg):
    splits = load_data(sn_cfg)
    choices = choices_of(sn_cfg, splits)
    oneshot = OneShotConfig(supernet_epochs=3, teacher="stochastic")
    full = train_supernet(sn_cfg, oneshot, choices, tmp_path / "full", **QUIET)

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_supernet(sn_cfg, oneshot, choices, tmp_path / "cut", callback=stop_after_first, **QUIET)
    assert not (tmp_path / "cut" / "supernet.pt").exists()
    with pytest.raises(ConfigError, match="out"):  # a folder holding a run is not started anew
        train_supernet(sn_cfg, oneshot, choices, tmp_path / "cut", **QUIET)
    with pytest.raises(ConfigError, match="resume"):  # nor resumed with other settings
        train_supernet(sn_cfg, oneshot.evolve({"paths": 3}), choices, tmp_path / "cut", resume=True, **QUIET)
    resumed = train_supernet(sn_cfg, oneshot, choices, tmp_path / "cut", resume=True, **QUIET)
    for key in ("high_val_acc", "low_val_acc", "high_test_acc", "low_test_acc", "epochs"):
        assert resumed[key] == full[key]
    timing = {"epoch_time_s", "step_time_s"}
    rows = [[{k: v for k, v in r.items() if k not in timing} for r in csv.DictReader(open(tmp_path / d / "metrics.csv"))]
            for d in ("full", "cut")]
    assert rows[0] == rows[1] and len(rows[0]) == 3
    states = [torch.load(tmp_path / d / "supernet.pt", weights_only=True)["model"] for d in ("full", "cut")]
    assert _equal_states(*states)


def test_callback_gets_every_epoch_and_supernet_pt_exists_at_the_last(tmp_path, sn_cfg):
    splits = load_data(sn_cfg)
    rows = []

    def callback(row):
        rows.append(dict(row, written=(tmp_path / "s" / "supernet.pt").exists()))

    metrics = train_supernet(sn_cfg, OneShotConfig(supernet_epochs=2, paths=0), choices_of(sn_cfg, splits),
                             tmp_path / "s", callback=callback, **QUIET)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["written"] for r in rows] == [False, True]
    assert rows[-1]["high_val_acc"] == metrics["high_val_acc"] and metrics["granularity"] == "layer"
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["epochs"] == 2
    assert (tmp_path / "s" / "checkpoint.pt").exists() and (tmp_path / "s" / "config.yaml").exists()


def test_train_supernet_refuses_bad_input(tmp_path, sn_cfg):
    splits = load_data(sn_cfg)
    with pytest.raises(ConfigError, match="choices"):
        train_supernet(sn_cfg, OneShotConfig(), {"nope": {"w_bits": [2]}}, tmp_path / "a", **QUIET)
    with pytest.raises(ConfigError, match="speq.method"):
        train_supernet(sn_cfg.replace(**{"speq.method": "fp"}), OneShotConfig(), choices_of(sn_cfg, splits),
                       tmp_path / "b", **QUIET)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@needs_compiler
@pytest.mark.parametrize("mode", ["kernels", "on"])
def test_sandwich_draws_compile_once(sn_cfg, mode):
    """Every path of every step (weight and activation bits drawn per layer) and every stochastic
    teacher pass run in the graphs compiled at the first steps."""
    sn, splits, _ = _training(sn_cfg.replace(compile=mode), OneShotConfig(teacher="stochastic", paths=2))
    assert sn.compile_mode == mode
    x, y = splits.train.x[:32], splits.train.y[:32]
    seen = _recorded_forwards(sn.model) if mode == "kernels" else None

    def one_step():
        sn.optimizer.zero_grad(set_to_none=True)
        sn.step(x, y)
        sn.optimizer.step()

    one_step()
    one_step()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(50):  # 200 training paths, 150 teacher passes
            one_step()
    if seen is not None:
        assert len({json.dumps(b, sort_keys=True) for b in seen}) > 50


# ----------------------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def supernet(tmp_path_factory):
    """A supernet trained once for this module's evaluation tests: (supernet.pt, splits, choices, config)."""
    cache = tmp_path_factory.getbasetemp() / "cache" / "fp"  # conftest's cache (its fixture is per test)
    cfg = TrainConfig(progress=False).replace(**{
        "optim.epochs": 1, "optim.fp_epochs": 2, "model.width": 0.5, "quant.w_bits": 2, "quant.a_bits": 2,
        "quant.per_bit_scales": True, "compile": "off", "fp_cache_dir": str(cache)})
    out = tmp_path_factory.mktemp("supernet") / "run"
    splits = load_data(cfg)
    choices = choices_of(cfg, splits)
    train_supernet(cfg, OneShotConfig(supernet_epochs=2), choices, out, **QUIET)
    return out / "supernet.pt", splits, choices, cfg


@pytest.mark.parametrize("bn", ["recalibrate", "batch"])
def test_evaluate_assignment_equals_a_model_built_at_it(supernet, bn):
    path, splits, choices, sn_cfg = supernet
    oneshot = OneShotConfig(bn=bn, calibration_batches=4)
    model, meta = load_supernet(path, sn_cfg, splits, choices)
    before = _state(model)
    gen = torch.Generator().manual_seed(3)
    assignments = [random_assignment(choices, gen) for _ in range(3)]
    results = [evaluate_assignment(model, a, splits, sn_cfg, oneshot, CPU, test=True) for a in assignments]
    assert _equal_states(before, _state(model))  # no state left behind: evaluations are independent
    assert evaluate_assignment(model, assignments[0], splits, sn_cfg, oneshot, CPU, test=True) == results[0]
    assert len({r["val_loss"] for r in results}) == 3
    for a, r in zip(assignments, results):
        cfg = sn_cfg.evolve({"quant": assignment_quant(sn_cfg.quant, a)})
        built = quantize_for(cfg, build_model(cfg, splits))
        built.load_state_dict(torch.load(path, weights_only=True)["model"])
        if bn == "recalibrate":
            recalibrate_bn(built, splits.train, 4, cfg.data.batch_size, CPU)
        batch = bn == "batch"
        assert (r["val_acc"], r["val_loss"]) == evaluate(built, splits.val, CPU, batch_stats=batch)
        assert (r["test_acc"], r["test_loss"]) == evaluate(built, splits.test, CPU, batch_stats=batch)
        assert r["layer_bits"] == ";".join(f"{n}={b['w_bits']}/{b['a_bits']}" for n, b in layer_bits(built).items())
        assert 2 <= r["avg_w_bits"] <= 8 and r["bitops"] > 0


def test_a_supernet_of_another_model_or_space_is_refused_in_one_line(supernet, tmp_path):
    path, splits, choices, sn_cfg = supernet
    _, meta = load_supernet(path, sn_cfg, splits)
    assert meta["choices"] == choices and meta["granularity"] == "layer" and meta["identity"]["width"] == 0.5
    other = {"model.width": 0.25, "quant.per_bit_scales": False, "quant.weight_quantizer": "sawb",
             "data.dataset": "random32"}
    for key, value in other.items():
        with pytest.raises(ConfigError, match="supernet") as err:
            load_supernet(path, sn_cfg.replace(**{key: value}), splits)
        assert "\n" not in str(err.value) and key.removeprefix("model.").removeprefix("data.") in str(err.value)
    fewer = {g: {k: v[:2] for k, v in kinds.items()} for g, kinds in choices.items()}
    with pytest.raises(ConfigError, match="choices"):
        load_supernet(path, sn_cfg, splits, fewer)
    run_dir = tmp_path / "plain"
    run(sn_cfg, run_dir, **QUIET)
    with pytest.raises(ConfigError, match="supernet"):  # a run's checkpoint is not a supernet
        load_supernet(run_dir / "checkpoint.pt", sn_cfg, splits)


# ----------------------------------------------------------------------------- fine-tuning
def test_init_checkpoint_starts_run_from_the_supernets_weights(supernet, tmp_path):
    path, splits, choices, sn_cfg = supernet
    a = random_assignment(choices, torch.Generator().manual_seed(1))
    cfg = sn_cfg.replace(init_checkpoint=str(path), **{"optim.lr": 1e-9, "speq.method": "qat"})
    cfg = cfg.evolve({"quant": assignment_quant(cfg.quant, a)})
    metrics = run(cfg, tmp_path / "ft", **QUIET)
    tuned = torch.load(tmp_path / "ft" / "checkpoint.pt", weights_only=True)["model"]
    start = torch.load(path, weights_only=True)["model"]
    run(sn_cfg.replace(**{"optim.lr": 1e-9, "speq.method": "qat"}), tmp_path / "fresh", **QUIET)
    calibrated = torch.load(tmp_path / "fresh" / "checkpoint.pt", weights_only=True)["model"]
    for key in start:
        if key.endswith(("weight", "clip")):
            torch.testing.assert_close(tuned[key], start[key], atol=1e-6, rtol=0)
    assert any(not torch.allclose(calibrated[k], start[k], atol=1e-3) for k in start if k.endswith("weight"))
    assert f"features.8={a['features.8']['w_bits']}/{a['features.8']['a_bits']}" in metrics["layer_bits"]


@pytest.mark.parametrize("case", ["missing", "corrupt", "other-width"])
def test_a_bad_init_checkpoint_is_one_line_before_anything_is_written(supernet, tmp_path, case):
    path, splits, _, sn_cfg = supernet
    bad = {"missing": str(tmp_path / "nope.pt"), "corrupt": str(tmp_path / "bad.pt"), "other-width": str(path)}[case]
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    cfg = sn_cfg.replace(init_checkpoint=bad, **({"model.width": 0.25} if case == "other-width" else {}))
    with pytest.raises(ConfigError, match="init_checkpoint") as err:
        run(cfg, tmp_path / "out", **QUIET)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_apply_assignment_sets_the_bits_in_place(supernet):
    path, splits, choices, sn_cfg = supernet
    model, _ = load_supernet(path, sn_cfg, splits)
    weights = [p.data_ptr() for p in model.parameters()]
    bits = apply_assignment(model, sn_cfg.quant, lowest(choices))
    assert layer_bits(model) == bits and bits["features.8"] == {"w_bits": 2, "a_bits": 2}
    assert [p.data_ptr() for p in model.parameters()] == weights  # nothing rebuilt or copied


# ----------------------------------------------------------------------------- other models
@pytest.mark.parametrize("model,granularity", [("resnet20", "block"), ("mobilenetv2", "stage"), ("plugin", "layer")])
def test_a_supernet_of_every_kind_of_model_trains_and_evaluates(tmp_path, model, granularity):
    """Issue 26: one-shot works at each granularity on resnet20, mobilenetv2 and a plugin's model: the
    supernet trains, its highest and lowest assignments evaluate to their own costs, and the saved
    supernet loads with its choices."""
    from torch import nn

    from speq_search.models import register_model
    from speq_search.models._registry import MODELS

    if model == "plugin":
        @register_model("oneshot-plugin-mlp", in_channels=1, input_size=8)
        def _mlp(num_classes=10, in_channels=1, width=1.0, input_size=8):  # no docstring: a user's plugin
            return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size**2, 32), nn.ReLU(),
                                 nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, num_classes))

        changes = {"model.name": "oneshot-plugin-mlp", "data.dataset": "digits"}
    else:
        changes = {"model.name": model, "data.dataset": "random32", "data.train_size": 256, "model.width": 0.25}
    cfg = TrainConfig(progress=False, compile="off", fp_cache_dir=str(tmp_path / "fp")).replace(**{
        "optim.fp_epochs": 1, "quant.per_bit_scales": True, "data.batch_size": 64, **changes})
    try:
        splits = load_data(cfg)
        choices = choices_of(cfg, splits, values=[2, 8], granularity=granularity)
        groups = layer_groups(build_model(cfg, splits), granularity, cfg.quant.first_last_bits)
        assert set(choices) <= set(groups) and len(choices) >= 2
        metrics = train_supernet(cfg, OneShotConfig(supernet_epochs=1, paths=1, calibration_batches=2), choices,
                                 tmp_path / "sn", granularity=granularity, **QUIET)
        assert metrics["granularity"] == granularity
        sn, meta = load_supernet(tmp_path / "sn" / "supernet.pt", cfg, splits, choices)
        assert meta["choices"] == choices
        ends = [evaluate_assignment(sn, a, splits, cfg, OneShotConfig(calibration_batches=2), CPU)
                for a in (highest(choices), lowest(choices))]
        assert all(0.0 <= e["val_acc"] <= 1.0 for e in ends)
        assert ends[0]["bitops"] > ends[1]["bitops"] and ends[0]["avg_bits"] > ends[1]["avg_bits"]
    finally:
        MODELS.unregister("oneshot-plugin-mlp")
