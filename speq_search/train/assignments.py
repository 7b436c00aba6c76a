"""Assignments of a per-layer space: the bits of each group, drawn, ordered and applied in place.

An assignment is ``{group: {"w_bits": b, "a_bits": b}}`` (a ``quant.group_bits``), its groups
those of :func:`speq_search.quant.layer_groups`. A space's ``choices`` are
``{group: {"w_bits": [...], "a_bits": [...]}}``, the searchable kinds only; what a group does
not search keeps the base config's bits (and the first/last and input rules still win).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from speq_search.config import QuantConfig, check_bits
from speq_search.errors import ConfigError
from speq_search.quant import GRANULARITIES, layer_bits_of, layer_groups, quantizable_layers, set_layer_bits

Choices = Mapping[str, Mapping[str, list[int]]]
Assignment = dict[str, dict[str, int]]


def highest(choices: Choices) -> Assignment:
    """Every searched kind of every group at its largest choice."""
    return {g: {kind: max(values) for kind, values in kinds.items()} for g, kinds in choices.items()}


def lowest(choices: Choices) -> Assignment:
    """Every searched kind of every group at its smallest choice."""
    return {g: {kind: min(values) for kind, values in kinds.items()} for g, kinds in choices.items()}


def random_assignment(choices: Choices, generator: torch.Generator | None = None) -> Assignment:
    """One choice per searched kind of every group, uniformly, drawn from ``generator`` (CPU):
    a seeded generator gives the same sequence of assignments."""
    sizes = [len(values) for kinds in choices.values() for values in kinds.values()]
    picks = iter((torch.rand(len(sizes), generator=generator) * torch.tensor(sizes)).long().tolist())
    return {g: {kind: values[next(picks)] for kind, values in kinds.items()} for g, kinds in choices.items()}


def assignment_quant(quant: QuantConfig, group_bits: Mapping[str, Mapping[str, int]]) -> QuantConfig:
    """``quant`` with ``group_bits`` laid over its own (per group and kind): the config a
    stand-alone run of that assignment trains with (values checked, named ``quant.group_bits``)."""
    merged = {g: dict(b) for g, b in quant.group_bits.items()}
    if not isinstance(group_bits, Mapping):
        raise ConfigError("quant.group_bits", group_bits, "a mapping {group: {w_bits: B, a_bits: B}}")
    for group, bits in group_bits.items():
        if not isinstance(bits, Mapping):
            raise ConfigError(f"quant.group_bits.{group}", bits, "a mapping with w_bits and/or a_bits")
        merged.setdefault(group, {}).update(bits)
    return quant.evolve({"group_bits": merged}, prefix="quant.")


def layer_names(model: nn.Module) -> list[str]:
    """The names of ``model``'s conv and linear layers, in the order the per-layer rule reads them."""
    return [n for n, _ in quantizable_layers(model)]


def apply_assignment(model: nn.Module, quant: QuantConfig, group_bits: Mapping[str, Mapping[str, int]],
                     names: list[str] | None = None) -> dict[str, dict[str, int]]:
    """Set ``model``'s quantizers in place to ``quant`` with ``group_bits`` laid over it; returns the
    layer bits set. No module is rebuilt and no weight copied (``names``: :func:`layer_names`,
    if already known)."""
    bits = layer_bits_of(names if names is not None else layer_names(model), assignment_quant(quant, group_bits))
    set_layer_bits(model, bits)
    return bits


def check_choices(choices: Any, model: nn.Module, first_last_bits: int | None,
                  granularity: str | None = None) -> str:
    """``choices`` checked against ``model``'s per-layer groups; returns the granularity they are
    groups of (``granularity`` if given, else the finest that holds them all)."""
    if not isinstance(choices, Mapping) or not choices:
        raise ConfigError("choices", choices, "a mapping {group: {w_bits: [B, ...], a_bits: [B, ...]}}")
    for group, kinds in choices.items():
        if not isinstance(kinds, Mapping) or not kinds or set(kinds) - {"w_bits", "a_bits"}:
            raise ConfigError(f"choices.{group}", kinds, "a mapping with w_bits and/or a_bits: lists of bit-widths")
        for kind, values in kinds.items():
            if not isinstance(values, (list, tuple)) or not values:
                raise ConfigError(f"choices.{group}.{kind}", values, "a non-empty list of bit-widths")
            for v in values:
                check_bits(v, f"choices.{group}.{kind}")
    if granularity is not None and granularity not in GRANULARITIES:
        raise ConfigError("granularity", granularity, " | ".join(GRANULARITIES))
    for g in [granularity] if granularity else GRANULARITIES:
        groups = layer_groups(model, g, first_last_bits)
        if all(group in groups and all(groups[group][k] for k in kinds) for group, kinds in choices.items()):
            return g
    where = f"at granularity {granularity}" if granularity else "at any granularity"
    raise ConfigError("choices", sorted(choices), f"searchable groups of this model {where} "
                      f"({', '.join(layer_groups(model, granularity or 'layer', first_last_bits))})")
