"""Costs of a (quantized) model: average bits, model size and BitOps.

Measured with forward hooks on one example input, so any architecture and any per-layer bit
assignment is counted the same way. A plain ``nn.Conv2d``/``nn.Linear`` counts as 32 bits.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from speq_search.errors import ConfigError
from speq_search.quant.modules import QUANT_LAYERS
from speq_search.quant.primitives import FULL_PRECISION
from speq_search.schema import Costs, encode_layer_bits, table_metrics
from speq_search.yamlio import load_yaml


@dataclass(frozen=True)
class LayerCost:
    """One conv or linear layer, per example."""

    name: str
    kind: str  # "conv" | "linear"
    shape_class: str  # "conv" (k x k) | "pointwise" (1 x 1) | "depthwise" | "linear": what a cost table keys on
    w_bits: int
    a_bits: int
    params: int  # weights only
    activations: int  # elements of the layer's (quantized) input
    macs: int
    scales: int  # stored weight scales (one per output channel, or one) plus the activation clip


def layer_costs(model: nn.Module, example: torch.Tensor) -> list[LayerCost]:
    """Per-layer shapes and bits, from one forward pass of ``example`` (batch of 1 used)."""
    records: list[LayerCost] = []
    hooks = []

    def hook(name: str):
        def fn(module: nn.Module, inputs, output):
            x = inputs[0]
            per_example_out = output[0].numel()
            if isinstance(module, nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
                macs, kind = per_example_out * k, "conv"
                if module.groups > 1 and module.groups == module.in_channels:
                    shape = "depthwise"
                else:
                    shape = "pointwise" if module.kernel_size == (1, 1) else "conv"
            else:
                macs, kind, shape = per_example_out * module.in_features, "linear", "linear"
            quantized = isinstance(module, QUANT_LAYERS)
            w_bits = module.weight_quant.bits if quantized else FULL_PRECISION
            a_bits = module.act_quant.bits if quantized else FULL_PRECISION
            scales = 0
            if quantized:
                wq = module.weight_quant
                scales = (module.out_channels if isinstance(module, nn.Conv2d) else module.out_features) if (
                    wq.per_channel and w_bits < FULL_PRECISION) else int(w_bits < FULL_PRECISION)
                scales += 1  # the activation clip
            records.append(LayerCost(name, kind, shape, w_bits, a_bits, module.weight.numel(), x[0].numel(), macs, scales))

        return fn

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return records


def model_costs(model: nn.Module, example: torch.Tensor, layers: list[LayerCost] | None = None) -> Costs:
    """Aggregate :func:`layer_costs` (computed here unless given) into the costs a run reports."""
    layers = layers if layers is not None else layer_costs(model, example)
    weights = sum(lc.params for lc in layers)
    acts = sum(lc.activations for lc in layers)
    avg_w = sum(lc.params * lc.w_bits for lc in layers) / max(weights, 1)
    avg_a = sum(lc.activations * lc.a_bits for lc in layers) / max(acts, 1)
    layer_weight_ids = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    clip_ids = {id(p) for n, p in model.named_parameters() if n.endswith(".clip")}
    other = sum(p.numel() for p in model.parameters() if id(p) not in layer_weight_ids and id(p) not in clip_ids)
    weight_bits = sum(lc.params * lc.w_bits for lc in layers)
    size = (weight_bits + 7) // 8 + 4 * sum(lc.scales for lc in layers) + 4 * other
    return Costs(
        avg_w_bits=round(avg_w, 4),
        avg_a_bits=round(avg_a, 4),
        avg_bits=round((avg_w + avg_a) / 2, 4),
        size_bytes=int(size),
        bitops=int(sum(lc.macs * lc.w_bits * lc.a_bits for lc in layers)),
        macs=int(sum(lc.macs for lc in layers)),
        params=int(sum(p.numel() for p in model.parameters())),
    )


def layer_bits_string(layers: list[LayerCost]) -> str:
    """``name=w/a`` for every layer, ``;``-separated: one compact trials.csv column
    (:func:`speq_search.schema.encode_layer_bits`)."""
    return encode_layer_bits((lc.name, lc.w_bits, lc.a_bits) for lc in layers)


def report_costs(model: nn.Module, example: torch.Tensor, cost_model: str | None = None) -> dict:
    """What a trial reports about its model: :class:`Costs`, ``layer_bits`` and the cost table's metric."""
    layers = layer_costs(model, example)
    out: dict = model_costs(model, example, layers).as_dict()
    out["layer_bits"] = layer_bits_string(layers)
    if cost_model:
        table = load_cost_table(cost_model)
        out[table.metric] = round(table.model_cost(layers), 6)
    return out


# ----------------------------------------------------------------------------- cost tables
SHIPPED_TABLES = Path(__file__).resolve().parent / "cost_tables"
SHAPE_CLASSES = ("conv", "pointwise", "depthwise", "linear")


@dataclass(frozen=True)
class CostTable:
    """A table-driven latency or energy model of an integer accelerator (see cost_tables/README.md).

    A layer costs ``per_layer + macs * per_mac[shape][w][a] * mac_unit + weight_bytes * per_weight_byte``.
    Bits round up to the next precision the hardware has (``bits``); above the widest, the cost
    of the widest is scaled by ``bits / widest`` (e.g. 32-bit on a 16-bit datapath takes 2x).
    """

    name: str
    metric: str
    bits: tuple[int, ...]
    per_mac: dict  # shape class -> {w_bits: [cost per a_bits in `bits` order]}
    mac_unit: float = 1.0
    per_layer: float = 0.0
    per_weight_byte: float = 0.0

    def _native(self, b: int) -> tuple[int, float]:
        for n in self.bits:
            if b <= n:
                return n, 1.0
        return self.bits[-1], b / self.bits[-1]

    def mac_cost(self, shape: str, w_bits: int, a_bits: int) -> float:
        (w, sw), (a, sa) = self._native(w_bits), self._native(a_bits)
        return float(self.per_mac[shape][w][self.bits.index(a)]) * sw * sa * self.mac_unit

    def layer_cost(self, lc: LayerCost) -> float:
        return (self.per_layer + lc.macs * self.mac_cost(lc.shape_class, lc.w_bits, lc.a_bits)
                + lc.params * lc.w_bits / 8 * self.per_weight_byte)

    def model_cost(self, layers: list[LayerCost]) -> float:
        return float(sum(self.layer_cost(lc) for lc in layers))


def shipped_cost_tables() -> dict[str, str]:
    """``{name: description}`` of the tables in ``speq_search/cost_tables/``."""
    out = {}
    for path in sorted(SHIPPED_TABLES.glob("*.yaml")):
        out[path.stem] = (load_yaml(path, "cost_model") or {}).get("description", "")
    return out


@functools.lru_cache(maxsize=32)
def load_cost_table(name_or_path: str) -> CostTable:
    """A shipped table by name (``int-accel``) or a YAML file; errors name the bad key."""
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        shipped = SHIPPED_TABLES / f"{name_or_path}.yaml"
        if "/" in str(name_or_path) or not shipped.is_file():
            raise ConfigError("cost_model", name_or_path, "a cost table YAML file or a shipped table: "
                              + ", ".join(shipped_cost_tables()))
        path = shipped
    raw = load_yaml(path, "cost_model")
    where = f"cost_model {path.name}"
    if not isinstance(raw, dict):
        raise ConfigError(where, raw, "a mapping with metric, bits, per_mac")
    known = {"name", "description", "metric", "unit", "bits", "per_mac", "mac_unit", "per_layer", "per_weight_byte"}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{where}: {key}", raw[key], "a key among " + ", ".join(sorted(known)))
    metric = raw.get("metric")
    if metric not in table_metrics():  # schema's metrics of kind "table"
        raise ConfigError(f"{where}: metric", metric, " | ".join(table_metrics()))
    bits = raw.get("bits")
    if not isinstance(bits, list) or not bits or any(not isinstance(b, int) or not 1 <= b <= 32 for b in bits) or (
            sorted(set(bits)) != bits):
        raise ConfigError(f"{where}: bits", bits, "an increasing list of integer precisions, e.g. [2, 4, 8, 16]")
    per_mac = raw.get("per_mac")
    if not isinstance(per_mac, dict):
        raise ConfigError(f"{where}: per_mac", per_mac, "a mapping of " + ", ".join(SHAPE_CLASSES))
    table = {}
    for shape in SHAPE_CLASSES:
        rows = per_mac.get(shape)
        if not isinstance(rows, dict) or sorted(rows) != bits:
            raise ConfigError(f"{where}: per_mac.{shape}", rows, f"one row per weight precision {bits}")
        for w, row in rows.items():
            if not isinstance(row, list) or len(row) != len(bits) or any(
                    not isinstance(v, (int, float)) or v < 0 for v in row):
                raise ConfigError(f"{where}: per_mac.{shape}.{w}", row,
                                  f"{len(bits)} costs >= 0, one per activation precision {bits}")
        table[shape] = {int(w): [float(v) for v in row] for w, row in rows.items()}
    for key in ("mac_unit", "per_layer", "per_weight_byte"):
        v = raw.get(key, 1.0 if key == "mac_unit" else 0.0)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"{where}: {key}", v, "a number >= 0")
    return CostTable(str(raw.get("name", path.stem)), metric, tuple(bits), table, float(raw.get("mac_unit", 1.0)),
                     float(raw.get("per_layer", 0.0)), float(raw.get("per_weight_byte", 0.0)))
