"""Per-layer and architecture spaces, group bits, the teacher's per-layer draws, cost tables, sensitivity."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from torch import nn

from speq_search.config import TrainConfig
from speq_search.costs import layer_costs, load_cost_table, report_costs
from speq_search.errors import ConfigError
from speq_search.models import create_model
from speq_search.quant import act_quantizers, layer_bits, quantizable_layers, quantize_model
from speq_search.sensitivity import group_sensitivity, layer_sensitivity, sensitivity_seed
from speq_search.space import fields_of, parse_space, per_layer_groups
from speq_search.speq import stochastic_precision
from speq_search.train import planned_costs

SPACE = {
    "name": "pl",
    "train": {"data": {"dataset": "digits"}, "model": {"name": "cnn-small"}, "optim": {"epochs": 1, "fp_epochs": 1}},
    "params": {"p_high": {"type": "uniform", "low": 0.2, "high": 0.8}},
    "per_layer": {"granularity": "layer", "w_bits": [2, 4, 8], "a_bits": [2, 8]},
    "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
    "search": {"num_samples": 4},
}


def _space(**changes):
    raw = copy.deepcopy(SPACE)
    for key, value in changes.items():
        node, parts = raw, key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return raw


# --- spaces ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("model,granularity,expected", [
    ("cnn-small", "layer", ["w_bits@features.4", "a_bits@features.4", "w_bits@features.8", "a_bits@features.8",
                            "a_bits@classifier"]),
    ("cnn-small", "stage", ["w_bits@features", "a_bits@features", "a_bits@classifier"]),
    ("mlp", "layer", ["w_bits@features.4", "a_bits@features.4", "a_bits@classifier"]),
    ("resnet20", "stage", ["w_bits@layer1", "a_bits@layer1", "w_bits@layer2", "a_bits@layer2", "w_bits@layer3",
                           "a_bits@layer3", "a_bits@fc"]),
])
def test_per_layer_spaces_expand_from_the_models_layers(model, granularity, expected):
    spec = parse_space(_space(**{"train.model.name": model, "per_layer.granularity": granularity}))
    names = [p.name for p in spec.params if "@" in p.name]
    assert names == expected
    assert all(p.values == ((2, 4, 8) if p.name.startswith("w") else (2, 8)) for p in spec.params if "@" in p.name)


def test_block_groups_cover_every_layer_of_resnet20_and_mobilenetv2():
    for model, n_blocks in (("resnet20", 9), ("mobilenetv2", 17)):
        train = TrainConfig().replace(**{"model.name": model})
        groups = per_layer_groups(train, "block")
        names = [n for n, _ in quantizable_layers(create_model(model))]
        # every layer belongs to exactly one group; the stem and the classifier are their own groups
        for n in names:
            assert sum(n == g or n.startswith(g + ".") for g in groups) == 1
        assert len(groups) == n_blocks + 2 + (model == "mobilenetv2")  # mobilenetv2 also has a 1x1 head conv
        first, last = names[0], names[-1]
        assert groups[first] == {"w_bits": False, "a_bits": False}
        assert groups[last] == {"w_bits": False, "a_bits": True}


def test_first_last_rule_off_makes_their_weights_searchable():
    train = TrainConfig().replace(**{"quant.first_last_bits": None})
    groups = per_layer_groups(train, "layer")
    assert groups["features.0"] == {"w_bits": True, "a_bits": False}
    assert groups["classifier"] == {"w_bits": True, "a_bits": True}


def test_trial_config_gathers_group_bits_and_round_trips():
    spec = parse_space(_space())
    cfg = spec.trial_config({"w_bits@features.4": 2, "a_bits@features.4": 8, "a_bits@classifier": 2, "p_high": 0.3})
    assert cfg.quant.group_bits == {"features.4": {"w_bits": 2, "a_bits": 8}, "classifier": {"a_bits": 2}}
    assert cfg.speq.p_high == 0.3
    again = parse_space(yaml.safe_load(yaml.safe_dump(spec.to_dict())))
    assert [p.name for p in again.params] == [p.name for p in spec.params]
    assert again.per_layer == spec.per_layer


def test_group_bits_reach_the_model_and_first_last_rules_win():
    cfg = parse_space(_space()).trial_config({"w_bits@features.4": 2, "a_bits@features.8": 2})
    from speq_search.train import quantize_for

    bits = layer_bits(quantize_for(cfg, create_model("cnn-small")))
    assert bits["features.4"] == {"w_bits": 2, "a_bits": 2}
    assert bits["features.8"]["a_bits"] == 2
    # (A group that matches no layer, once ignored here, is an error since issue 28: see
    # test_a_group_that_matches_no_layer_is_an_error_naming_the_layers.)
    net = quantize_model(create_model("cnn-small"), w_bits=4, a_bits=4, group_bits={"features": {"w_bits": 2, "a_bits": 2},
                                                                      "features.8": {"w_bits": 3}})
    bits = layer_bits(net)
    assert bits["features.0"] == {"w_bits": 8, "a_bits": 8}  # first layer: first/last and input rules win
    assert bits["features.4"] == {"w_bits": 2, "a_bits": 2}
    assert bits["features.8"] == {"w_bits": 3, "a_bits": 2}  # the longer key wins
    assert bits["classifier"] == {"w_bits": 8, "a_bits": 4}


def test_architecture_dimensions_build_the_right_models():
    raw = _space(**{"train.model.name": "resnet20", "params": {"depth": {"type": "choice", "values": [1, 2]},
                                                              "width": {"type": "choice", "values": [0.5, 1.0]}}})
    raw.pop("per_layer")
    spec = parse_space(raw)
    cfg = spec.trial_config({"depth": 2, "width": 0.5})
    assert cfg.model.kwargs == {"blocks": [2, 2, 2]} and cfg.model.width == 0.5
    model = create_model(cfg.model.name, width=cfg.model.width, **cfg.model.kwargs)
    assert len(model.layer1) == 2 and model.conv1.out_channels == 8
    mlp = parse_space(_space(**{"train.model.name": "mlp", "params": {"hidden": {"type": "choice",
                                                                                 "values": ["64", "128-64"]}}}))
    cfg = mlp.trial_config({"hidden": "128-64"})
    assert cfg.model.kwargs == {"hidden": [128, 64]}
    assert [m.out_features for m in create_model("mlp", **cfg.model.kwargs).modules()
            if isinstance(m, nn.Linear)] == [128, 64, 10]
    mb = parse_space(_space(**{"train.model.name": "mobilenetv2", "params": {"expansion": {"type": "choice",
                                                                                          "values": [2, 6]}}}))
    assert mb.trial_config({"expansion": 2}).model.kwargs == {"expansion": 2}


def test_a_model_declares_its_own_architecture_dimensions():
    from speq_search.models import Dim, register_model
    from speq_search.models._registry import MODELS

    @register_model("dims-net", "a plugin's model with its own dimensions", in_channels=1, input_size=8,
                    dims={"stages": Dim("depths", "per_stage", stages=2), "act": "activation"})
    def build(num_classes=10, in_channels=1, width=1.0, depths=(1, 1), activation="relu", input_size=8):
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        layers = [nn.Flatten(), nn.Linear(in_channels * input_size**2, 16), act()]
        for _ in range(sum(depths)):
            layers += [nn.Linear(16, 16), act()]
        return nn.Sequential(*layers, nn.Linear(16, num_classes))

    try:
        raw = _space(**{"train.model.name": "dims-net", "params": {
            "stages": {"type": "choice", "values": [1, 3]}, "act": {"type": "choice", "values": ["relu", "tanh"]}}})
        raw.pop("per_layer")
        cfg = parse_space(raw).trial_config({"stages": 3, "act": "tanh"})
        assert cfg.model.kwargs == {"depths": [3, 3], "activation": "tanh"}
        assert fields_of("stages") == ("model.kwargs.depths",) and fields_of("depth") == ("model.kwargs.blocks",)
        assert fields_of("noise") == ("noise",)  # a foreign column: neither a config name nor a dimension
        model = create_model(cfg.model.name, **cfg.model.kwargs)
        assert sum(isinstance(m, nn.Linear) for m in model) == 8 and isinstance(model[2], nn.Tanh)
        raw["params"] = {"depth": {"type": "choice", "values": [1, 2]}}  # resnet20's, not this model's
        with pytest.raises(ConfigError) as err:
            parse_space(raw)
        assert err.value.field == "params.depth.values[0]" and "dims-net declares (act, stages)" in str(err.value)
    finally:
        MODELS.unregister("dims-net")


def test_a_name_no_model_declares_is_refused_naming_the_dimensions_that_exist():
    with pytest.raises(ConfigError) as err:
        parse_space(_space(params={"depht": {"type": "choice", "values": [1, 2]}}))
    assert err.value.field == "params.depht" and "depth (resnet20)" in str(err.value)


def test_bits_alias_sets_weights_and_activations():
    spec = parse_space(_space(params={"bits": {"type": "choice", "values": [2, 4]}}, per_layer={}))
    cfg = spec.trial_config({"bits": 4})
    assert (cfg.quant.w_bits, cfg.quant.a_bits) == (4, 4)
    with pytest.raises(ConfigError, match="searched once"):
        parse_space(_space(params={"bits": {"type": "choice", "values": [2]}, "w_bits": {"type": "choice",
                                                                                         "values": [2]}}))


@pytest.mark.parametrize("key,value,field", [
    ("per_layer.granularity", "row", "per_layer.granularity"),
    ("per_layer.w_bits", [2, 9], "per_layer.w_bits[1]"),
    ("per_layer.depth", 3, "per_layer.depth"),
    ("per_layer.sensitivity", "yes", "per_layer.sensitivity"),
    ("constraints", ["size_bytes < 4096"], "constraints[0]"),
    ("constraints", ["val_acc >= 0.9"], "constraints[0].metric"),
    ("constraints", ["latency_ms <= 1"], "constraints[0]"),
    ("warm_start", "diagonal", "warm_start"),
    ("warm_start", [{"w_bits@features.4": 3}], "warm_start[0].w_bits@features.4"),
    ("warm_start", [{"lr": 0.1}], "warm_start[0].lr"),
    ("params", {"depth": {"type": "choice", "values": [1, 2]}}, "params.depth.values[0]"),  # cnn-small has no blocks
    ("params", {"hidden": {"type": "choice", "values": ["a-b"]}}, "params.hidden.values[0]"),
    ("params", {"w_bits@features.4": {"type": "choice", "values": [2]}}, "params.w_bits@features.4"),
])
def test_bad_per_layer_constraint_and_warm_start_entries_name_the_field(key, value, field):
    with pytest.raises(ConfigError) as err:
        parse_space(_space(**{key: value}))
    assert err.value.field == field


def test_latency_objective_needs_a_cost_table():
    raw = _space(objectives=[{"metric": "val_acc", "mode": "max"}, {"metric": "latency_ms", "mode": "min"}])
    with pytest.raises(ConfigError) as err:
        parse_space(raw)
    assert err.value.field == "objectives[1].metric"
    raw["train"]["cost_model"] = "int-accel"
    assert parse_space(raw).objectives[1].metric == "latency_ms"


def test_uniform_warm_start_and_constraints():
    spec = parse_space(_space(warm_start="uniform", constraints=["size_bytes <= 40000", "avg_bits >= 2"]))
    # a_bits allows only 2 and 8: the all-4 point sets only the weight groups
    assert [sorted(set(p.values())) for p in spec.warm_start] == [[2], [4], [8]]
    assert "a_bits@features.4" not in spec.warm_start[1] and spec.warm_start[1]["w_bits@features.4"] == 4
    v = spec.violations({"size_bytes": 50000, "avg_bits": 3})
    assert v == {"size_bytes <= 40000": pytest.approx(0.25), "avg_bits >= 2": pytest.approx(-0.5)}
    assert parse_space(yaml.safe_load(yaml.safe_dump(spec.to_dict()))).constraints == spec.constraints


# --- the teacher respects per-layer targets ---------------------------------------------------------

def test_teacher_draws_between_each_layers_own_target_and_high_bits():
    net = quantize_model(create_model("cnn-small"), w_bits=4, a_bits=4, group_bits={"features.4": {"a_bits": 2},
                                                                      "features.8": {"a_bits": 6}})
    targets = [q.bits for q in act_quantizers(net)]
    assert targets == [8, 2, 6, 4]
    gen = torch.Generator().manual_seed(0)
    seen = [set() for _ in targets]
    for _ in range(40):
        with stochastic_precision(net, p_high=0.5, high_bits=5, generator=gen) as drawn:
            for i, b in enumerate(drawn):
                seen[i].add(b)
    # each layer: its own target or max(target, high_bits), nothing else; a layer above high_bits keeps its bits
    assert seen == [{8}, {2, 5}, {6}, {4, 5}]
    assert [q.bits for q in act_quantizers(net)] == targets


# --- cost tables ----------------------------------------------------------------------------------

def _shapes_net():
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False),
                         nn.Conv2d(4, 2, 1, bias=False), nn.Flatten(), nn.Linear(2 * 4 * 4, 3, bias=False))


def test_shape_classes():
    layers = layer_costs(_shapes_net(), torch.randn(1, 2, 4, 4))
    assert [lc.shape_class for lc in layers] == ["conv", "depthwise", "pointwise", "linear"]


def _table(tmp_path, **changes):
    raw = {"metric": "energy", "bits": [4, 8], "per_layer": 1.0, "per_weight_byte": 0.5, "mac_unit": 0.1,
           "per_mac": {s: {4: [1.0, 2.0], 8: [3.0, 4.0]} for s in ("conv", "pointwise", "depthwise", "linear")}}
    raw["per_mac"]["depthwise"] = {4: [10.0, 20.0], 8: [30.0, 40.0]}
    raw.update(changes)
    path = tmp_path / f"t{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_cost_table_by_hand(tmp_path):
    table = load_cost_table(_table(tmp_path))
    net = quantize_model(_shapes_net(), w_bits=4, a_bits=8, first_last_bits=None, input_bits=8,
                         overrides={"1": {"w_bits": 3, "a_bits": 2}, "4": {"w_bits": 8, "a_bits": 32}})
    layers = layer_costs(net, torch.randn(1, 2, 4, 4))
    # conv 2->4 3x3 on 4x4: 16*4*18 = 1152 MACs, 72 weights at w4 (36 bytes), a8 -> 2.0
    # depthwise: 16*4*9 = 576 MACs, 36 weights; w3 -> 4, a2 -> 4: 10.0
    # pointwise 4->2: 16*2*4 = 128 MACs, 8 weights at w4, a8 -> 2.0
    # linear 32->3: 96 MACs, 96 weights at w8; a32 -> 8 x 32/8: 4.0 x 4
    expected = [1 + 1152 * 2.0 * 0.1 + 36 * 0.5, 1 + 576 * 10.0 * 0.1 + 36 * 3 / 8 * 0.5,
                1 + 128 * 2.0 * 0.1 + 4 * 0.5, 1 + 96 * 16.0 * 0.1 + 96 * 0.5]
    assert [table.layer_cost(lc) for lc in layers] == pytest.approx(expected)
    costs = report_costs(net, torch.randn(1, 2, 4, 4), _table(tmp_path))
    assert costs["energy"] == pytest.approx(sum(expected), abs=1e-5)
    assert costs["layer_bits"] == "0=4/8;1=3/2;2=4/8;4=8/32"


@pytest.mark.parametrize("change,field", [
    ({"metric": "watts"}, "metric"),
    ({"bits": [8, 4]}, "bits"),
    ({"per_mac": {"conv": {4: [1, 2]}}}, "per_mac.conv"),
    ({"speed": 1}, "speed"),
    ({"per_layer": -1}, "per_layer"),
])
def test_bad_cost_tables_name_the_key(tmp_path, change, field):
    with pytest.raises(ConfigError) as err:
        load_cost_table(_table(tmp_path, **change))
    assert err.value.field.endswith(field)
    with pytest.raises(ConfigError, match="int-accel"):
        load_cost_table("no-such-table")


def test_shipped_table_and_train_config_field():
    table = load_cost_table("int-accel")
    assert table.metric == "latency_ms" and table.bits == (2, 4, 8, 16)
    assert table.mac_cost("conv", 3, 2) == table.mac_cost("conv", 4, 2)
    assert table.mac_cost("conv", 2, 2) < table.mac_cost("conv", 8, 8) < table.mac_cost("depthwise", 8, 8)
    with pytest.raises(ConfigError) as err:
        planned_costs(TrainConfig().replace(cost_model="missing.yaml"))
    assert err.value.field == "cost_model"


# --- sensitivity ----------------------------------------------------------------------------------

def test_sensitivity_scores_every_layer(tmp_path):
    cfg = TrainConfig().replace(**{"optim.fp_epochs": 3, "progress": False, "model.width": 0.5})
    base, scores = layer_sensitivity(cfg, probe_bits=8)
    assert [s.layer for s in scores] == ["features.0", "features.4", "features.8", "classifier"]
    assert all(s.drop == 0 for s in scores)  # probing at the base precision changes nothing
    base2, scores2 = layer_sensitivity(cfg, probe_bits=2)
    assert base2 == base and any(s.drop != 0 for s in scores2)
    assert all(s.drop == pytest.approx(base - s.val_acc) for s in scores2)


def test_sensitivity_seed_gives_the_least_sensitive_half_the_fewest_bits():
    from speq_search.sensitivity import LayerSensitivity

    scores = [LayerSensitivity(n, "conv", 1, 1, 0.0, d) for n, d in
              (("a.0", 0.3), ("a.1", 0.01), ("b.0", 0.0), ("c", 0.2))]
    assert group_sensitivity(scores, ["a", "b", "c"]) == {"a": 0.3, "b": 0.0, "c": 0.2}
    seed = sensitivity_seed(scores, {"w_bits@a": [2, 8], "w_bits@b": [2, 4], "a_bits@c": [4, 8]})
    assert seed == {"w_bits@a": 8, "w_bits@b": 2, "a_bits@c": 4}


def test_fp_cache_key_follows_the_architecture_not_the_bits():
    from speq_search.train import fp_cache_key, load_data

    raw = _space(**{"train.model.name": "mlp", "params": {"hidden": {"type": "choice", "values": ["64", "128-64"]}}})
    spec = parse_space(raw)
    splits = load_data(spec.train)
    a = spec.trial_config({"hidden": "64", "w_bits@features.4": 2})
    b = spec.trial_config({"hidden": "64", "w_bits@features.4": 8})
    c = spec.trial_config({"hidden": "128-64", "w_bits@features.4": 2})
    assert fp_cache_key(a, splits) == fp_cache_key(b, splits) != fp_cache_key(c, splits)


def test_constraint_bounds_survive_the_round_trip_through_space_yaml():
    spec = parse_space(_space(constraints=["bitops <= 123456789", "avg_bits >= 2.5"]))
    again = parse_space(yaml.safe_load(yaml.safe_dump(spec.to_dict())))
    assert [c.bound for c in again.constraints] == [123456789.0, 2.5]


def test_a_group_that_matches_no_layer_is_an_error_naming_the_layers(tmp_path, tiny_cfg):
    """quant.group_bits {features.3: ...} on cnn-small (features.0/4/8, classifier) trained with no effect."""
    from speq_search.config import QuantConfig
    from speq_search.train import run as run_training

    with pytest.raises(ConfigError, match=r"^group_bits: got 'features.3'; accepted: .*features.0, features.4, "
                                          r"features.8, classifier"):
        quantize_model(create_model("cnn-small"), w_bits=4, a_bits=4, group_bits={"features.3": {"w_bits": 2}})
    with pytest.raises(ConfigError, match=r"^quant.group_bits: got 'features.3'"):
        quantize_model(create_model("cnn-small"), QuantConfig(group_bits={"features.3": {"w_bits": 2}}))
    with pytest.raises(ConfigError, match=r"^quant.group_bits: got 'features.3'"):
        run_training(tiny_cfg.replace(**{"quant.group_bits": {"features.3": {"w_bits": 4}}}), tmp_path / "r")
    assert not (tmp_path / "r").exists()  # refused before anything is written
    quantize_model(create_model("cnn-small"), w_bits=4, a_bits=4, group_bits={"features": {"w_bits": 2}})  # a prefix


def test_a_search_over_depth_leaves_out_the_groups_a_shallower_trial_lacks():
    from speq_search.space import parse_space

    spec = parse_space({"name": "d", "train": {"model": {"name": "resnet20", "width": 0.25}},
                        "params": {"depth": {"type": "choice", "values": [1, 3]}},
                        "per_layer": {"granularity": "block", "w_bits": [2, 4]},
                        "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}]})
    values = {p.name: p.values[0] for p in spec.params}
    shallow = spec.trial_config({**values, "depth": 1}).quant.group_bits
    deep = spec.trial_config({**values, "depth": 3}).quant.group_bits
    assert "layer1.2" in deep and "layer1.2" not in shallow and "layer1.0" in shallow
    from speq_search.config import QuantConfig

    quantize_model(create_model("resnet20", blocks=[1, 1, 1]), QuantConfig(group_bits=shallow))  # no error
    with pytest.raises(ConfigError, match="got .layer1.1."):
        quantize_model(create_model("resnet20", blocks=[1, 1, 1]), QuantConfig(group_bits=deep))
