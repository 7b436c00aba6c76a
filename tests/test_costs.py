from __future__ import annotations

import torch
from torch import nn

from speq_search import layer_costs, model_costs, quantize_model


def _net():
    # conv: 1->2 channels, 3x3, on 4x4 -> 2x2 output; linear: 8 -> 3
    return nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))


def test_costs_by_hand_for_a_quantized_net():
    net = quantize_model(_net(), w_bits=2, a_bits=4, first_last_bits=None, overrides={"3": {"w_bits": 8}})
    layers = layer_costs(net, torch.randn(1, 1, 4, 4))
    conv, fc = layers
    assert (conv.params, conv.activations, conv.macs, conv.w_bits, conv.a_bits) == (18, 16, 2 * 2 * 2 * 9, 2, 8)
    assert (fc.params, fc.activations, fc.macs, fc.w_bits, fc.a_bits) == (24, 8, 24, 8, 4)
    costs = model_costs(net, torch.randn(1, 1, 4, 4))
    assert costs.avg_w_bits == round((18 * 2 + 24 * 8) / 42, 4)
    assert costs.avg_a_bits == round((16 * 8 + 8 * 4) / 24, 4)
    assert costs.bitops == 72 * 2 * 8 + 24 * 8 * 4
    assert costs.macs == 96
    # weights: 36 + 192 bits = 29 bytes (rounded up); scales: (2 channel clips + 1 act clip) + (3 + 1),
    # 4 bytes each; the 3 biases at 32 bits.
    assert costs.size_bytes == 29 + 4 * 7 + 4 * 3


def test_float_model_counts_32_bits():
    costs = model_costs(_net(), torch.randn(1, 1, 4, 4))
    assert costs.avg_w_bits == 32 and costs.avg_a_bits == 32
    assert costs.bitops == 96 * 32 * 32
    assert costs.size_bytes == 4 * (18 + 24 + 3)


def test_costs_leave_the_model_unchanged():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model_costs(net, torch.randn(5, 1, 4, 4))
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_the_metrics_a_cost_table_may_report_are_schemas(monkeypatch, tmp_path):
    """A metric of kind "table" in speq_search.schema is one a cost table may report: no second list."""
    import pytest
    import yaml

    from speq_search import schema
    from speq_search.costs import load_cost_table, report_costs
    from speq_search.errors import ConfigError

    shapes = ("conv", "pointwise", "depthwise", "linear")
    path = tmp_path / "dram.yaml"
    path.write_text(yaml.safe_dump({"metric": "dram_reads", "bits": [8, 32],
                                    "per_mac": {s: {8: [1.0, 2.0], 32: [3.0, 4.0]} for s in shapes}}))
    with pytest.raises(ConfigError, match="latency_ms \\| energy"):
        load_cost_table(str(path))
    monkeypatch.setitem(schema.METRICS, "dram_reads", schema.Metric("dram_reads", "table", "DRAM reads per image"))
    load_cost_table.cache_clear()
    assert load_cost_table(str(path)).metric == "dram_reads"
    # a float model: conv 72 and linear 24 MACs, all at 32 bits (4.0 per MAC)
    assert report_costs(_net(), torch.randn(1, 1, 4, 4), str(path))["dram_reads"] == (72 + 24) * 4.0
    load_cost_table.cache_clear()
