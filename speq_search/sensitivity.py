"""Per-layer sensitivity: how much validation accuracy one layer costs when only it goes to few bits.

Post-training, no gradient: the full-precision model (cached) is quantized at ``base_bits``
everywhere, calibrated, and evaluated; then, one layer at a time, that layer alone takes
``probe_bits`` (weights and input activations; the first layer's input stays at
``input_bits``). The score is the drop in validation accuracy from the ``base_bits`` model.
A cheap first-order ranking (in the spirit of HAWQ's per-layer ranking, without the Hessian):
it is computed once per run and seeds the per-layer search.

:func:`bit_sensitivity` scores a per-layer space's choices the same way, one per group, kind
(weights or input activations) and bit-width: what :mod:`speq_search.proxy` turns into a proxy
front (issue 27).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

from speq_search.config import TrainConfig
from speq_search.costs import layer_costs


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str
    shape_class: str
    params: int
    macs: int
    val_acc: float  # with only this layer at probe_bits
    drop: float  # base accuracy minus val_acc: larger means more sensitive

    def as_dict(self) -> dict:
        return asdict(self)


class _Base(NamedTuple):
    splits: object
    device: object
    fp_model: object
    cfg: TrainConfig  # every layer at the base bits, QAT: what each probe changes one group of
    acc: float
    loss: float


def _base(cfg: TrainConfig, base_bits: int, log: Callable[[str], None]) -> _Base:
    """The data, the cached float model, and the model with every layer at ``base_bits`` with its
    validation accuracy and loss: what both sensitivities measure their probes against."""
    from speq_search.config import check_bits
    from speq_search.train import evaluate, full_precision_model, load_data, prepare_student, resolve_device

    check_bits(base_bits, "base_bits")
    device = resolve_device(cfg.device)
    splits = load_data(cfg)
    fp_model, _ = full_precision_model(cfg, splits, device, log)
    fp_model.to(device)
    base_cfg = cfg.replace(trusted=True, **{"quant.w_bits": base_bits, "quant.a_bits": base_bits, "quant.group_bits": {},
                              "quant.overrides": {}, "speq.method": "qat"})
    acc, loss = evaluate(prepare_student(base_cfg, fp_model, splits, device), splits.val, device)
    return _Base(splits, device, fp_model, base_cfg, float(acc), float(loss))


def layer_sensitivity(cfg: TrainConfig, probe_bits: int = 2, base_bits: int = 8,
                      log: Callable[[str], None] = lambda msg: None) -> tuple[float, list[LayerSensitivity]]:
    """``(base accuracy, one score per quantizable layer)`` for ``cfg``'s model and data."""
    from speq_search.config import check_bits
    from speq_search.quant import quantizable_layers
    from speq_search.train import build_model, evaluate, prepare_student

    check_bits(probe_bits, "probe_bits")  # checked here, where they enter: the configs below trust them
    base = _base(cfg, base_bits, log)
    splits, device, fp_model, base_cfg, base_acc = base.splits, base.device, base.fp_model, base.cfg, base.acc
    names = [n for n, _ in quantizable_layers(build_model(cfg, splits))]
    example = splits.train.x[:1]
    scores = []
    for i, name in enumerate(names):
        probe = base_cfg.replace(trusted=True, **{"quant.overrides": {name: {"w_bits": probe_bits, "a_bits": probe_bits}}})
        student = prepare_student(probe, fp_model, splits, device)
        acc, _ = evaluate(student, splits.val, device)
        lc = next(lc for lc in layer_costs(student.cpu(), example) if lc.name == name)
        scores.append(LayerSensitivity(name, lc.shape_class, lc.params, lc.macs, float(acc), float(base_acc - acc)))
        log(f"sensitivity {i + 1}/{len(names)} {name}: val acc {acc:.4f} (drop {base_acc - acc:+.4f})")
    return float(base_acc), scores


@dataclass(frozen=True)
class BitSensitivity:
    """The drop when one group's weights (``kind`` ``w_bits``) or input activations (``a_bits``) alone
    take ``bits``, every other layer at the base bits."""

    group: str
    kind: str
    bits: int
    val_acc: float
    drop: float  # base accuracy minus val_acc
    loss_increase: float = 0.0  # val_loss minus the base's: a smoother score than the drop (no ties)

    def as_dict(self) -> dict:
        return asdict(self)


def bit_sensitivity(cfg: TrainConfig, choices: dict[str, dict[str, Sequence[int]]], base_bits: int = 8,
                    log: Callable[[str], None] = lambda msg: None) -> tuple[float, list[BitSensitivity]]:
    """``(base accuracy, one score per group, kind and bit-width of choices)``, post-training.

    ``choices``: ``{group: {"w_bits": [...], "a_bits": [...]}}`` (a space's ``group_choices()``). A
    probe at ``base_bits`` is the base model itself (drop 0, not evaluated again); the first/last
    and input rules hold as in a search (a group's pinned layers keep their bits).
    """
    from speq_search.train import evaluate, prepare_student

    base = _base(cfg, base_bits, log)
    splits, device, fp_model, base_cfg = base.splits, base.device, base.fp_model, base.cfg
    base_acc, base_loss = base.acc, base.loss
    probes = [(g, kind, int(b)) for g, kinds in choices.items() for kind, bits in kinds.items() for b in bits]
    scores = []
    for i, (group, kind, bits) in enumerate(probes):
        acc, loss = base_acc, base_loss
        if bits != base_bits:
            probe = base_cfg.replace(trusted=True, **{"quant.group_bits": {group: {kind: bits}}})
            acc, loss = evaluate(prepare_student(probe, fp_model, splits, device), splits.val, device)
        scores.append(BitSensitivity(group, kind, bits, float(acc), float(base_acc - acc), float(loss - base_loss)))
        log(f"sensitivity {i + 1}/{len(probes)} {kind}@{group}={bits}: val acc {acc:.4f} (drop {base_acc - acc:+.4f})")
    return float(base_acc), scores


def write_sensitivity_csv(path, base_acc: float, scores: Sequence[LayerSensitivity], probe_bits: int) -> None:
    """The scores as a CSV table (``RUN_DIR/sensitivity.csv``), one row per layer."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*scores[0].as_dict(), "base_val_acc", "probe_bits"])
        writer.writeheader()
        writer.writerows(dict(s.as_dict(), base_val_acc=base_acc, probe_bits=probe_bits) for s in scores)


def write_bit_sensitivity_csv(path, base_acc: float, scores: Sequence[BitSensitivity]) -> None:
    """:func:`bit_sensitivity`'s scores as a CSV table (``RUN_DIR/sensitivity-bits.csv``), one row per probe."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["group", "kind", "bits", "val_acc", "drop", "loss_increase", "base_val_acc"])
        writer.writeheader()
        writer.writerows(dict(s.as_dict(), base_val_acc=base_acc) for s in scores)


def group_sensitivity(scores: Sequence[LayerSensitivity], groups: Sequence[str]) -> dict[str, float]:
    """Each per-layer search group's score: the largest drop among its layers."""
    out = {}
    for group in groups:
        drops = [s.drop for s in scores if s.layer == group or s.layer.startswith(group + ".")]
        out[group] = max(drops) if drops else 0.0
    return out


def sensitivity_seed(scores: Sequence[LayerSensitivity], choices: dict[str, Sequence[int]]) -> dict[str, int]:
    """A warm-start point: the less sensitive half of the groups at their fewest bits, the rest at their most.

    ``choices`` maps a per-layer parameter (``w_bits@layer1.0``) to its allowed bits.
    """
    groups = sorted({name.partition("@")[2] for name in choices})
    score = group_sensitivity(scores, groups)
    ranked = sorted(groups, key=lambda g: score[g])
    cheap = set(ranked[: len(ranked) // 2 + len(ranked) % 2])
    return {name: (min(bits) if name.partition("@")[2] in cheap else max(bits)) for name, bits in choices.items()}


__all__ = ["BitSensitivity", "LayerSensitivity", "bit_sensitivity", "group_sensitivity", "layer_sensitivity",
           "sensitivity_seed", "write_bit_sensitivity_csv", "write_sensitivity_csv"]
