"""SPEQ: the stochastic-precision teacher and the distillation loss.

The teacher is the student itself: same weights, but each activation quantizer draws, per
step, either ``high_bits`` (with probability ``p_high``) or its own target precision.
See the README section "The method" for what is the paper's and what
is this project's choice.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from speq_search.config import KD_LOSSES, KD_SCHEDULES, TEACHER_BN_MODES, check_bits, check_choice
from speq_search.errors import ConfigError
from speq_search.quant.convert import act_quantizers

# The public functions below check their arguments (a Python call is where a value enters);
# the training step passes values a SpeqConfig already checked to the unchecked cores
# (drawn_precision, kd_factor, speq_loss_terms; _frozen, _distillation), once per step.


@contextlib.contextmanager
def _frozen(model: nn.Module, running: bool) -> Iterator[nn.Module]:
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    for m in norms:
        if running:
            m.eval()
        elif m.training:
            # With no running-stat tracking, train-mode BatchNorm uses batch statistics
            # and touches no buffer (see torch.nn.modules.batchnorm._BatchNorm.forward).
            m.track_running_stats = False
    try:
        yield model
    finally:
        for m, (training, track) in zip(norms, saved):
            m.train(training)
            m.track_running_stats = track


def frozen_state(model: nn.Module, bn_mode: str = "batch"):
    """Forward passes inside change no buffer of ``model``.

    In train mode BatchNorm normalises with the batch's statistics (``bn_mode="batch"``) or
    with its running statistics (``"running"``), and in both cases neither the running
    statistics nor ``num_batches_tracked`` move.
    """
    check_choice("teacher_bn", bn_mode, TEACHER_BN_MODES)
    return _frozen(model, bn_mode == "running")


@contextlib.contextmanager
def drawn_precision(model: nn.Module, p_high: float, high_bits: int, generator: torch.Generator | None,
                    teacher_bn: str) -> Iterator[list[int]]:
    """:func:`stochastic_precision` without its checks: for values a
    :class:`~speq_search.config.SpeqConfig` already checked (the training step, evaluation)."""
    quantizers = list(act_quantizers(model))
    targets = [q.bits for q in quantizers]
    draws = torch.rand(len(quantizers), generator=generator) < p_high
    drawn = [max(t, high_bits) if hi else t for t, hi in zip(targets, draws.tolist())]
    try:
        for q, b in zip(quantizers, drawn):
            q.set_checked_bits(b)
        with _frozen(model, teacher_bn == "running"):
            yield drawn
    finally:
        for q, t in zip(quantizers, targets):
            q.set_checked_bits(t)


def stochastic_precision(
    model: nn.Module,
    p_high: float = 0.5,
    high_bits: int = 8,
    generator: torch.Generator | None = None,
    teacher_bn: str = "batch",
):
    """Draw one activation precision per quantizer; restore every target on exit.

    On entry each activation quantizer independently takes ``max(target, high_bits)`` with
    probability ``p_high``, else keeps its target. Forward passes inside use those
    precisions and change no model state (see :func:`frozen_state`; ``teacher_bn`` is its
    ``bn_mode``). Yields the drawn bits, one per quantizer, in registration order. Draws come
    from ``generator`` (CPU), so a seeded generator makes the teacher reproducible.
    """
    if isinstance(p_high, bool) or not isinstance(p_high, (int, float)) or not 0.0 <= p_high <= 1.0:
        raise ConfigError("p_high", p_high, "a probability from 0 to 1")
    check_bits(high_bits, "high_bits")
    check_choice("teacher_bn", teacher_bn, TEACHER_BN_MODES)
    return drawn_precision(model, p_high, high_bits, generator, teacher_bn)


def high_precision(model: nn.Module, high_bits: int, teacher_bn: str = "batch"):
    """Every activation quantizer at ``max(target, high_bits)``: the teacher with ``p_high=1``.

    A diagnostic: distillation can only help where this network beats the student.
    ``high_bits`` and ``teacher_bn`` as a :class:`~speq_search.config.SpeqConfig` holds them.
    """
    return drawn_precision(model, 1.0, high_bits, None, teacher_bn)


def teacher_logits(
    model: nn.Module,
    x: torch.Tensor,
    p_high: float,
    high_bits: int,
    generator: torch.Generator | None,
    teacher_bn: str = "batch",
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """One SPEQ teacher pass: no gradient, a fresh precision draw, no state change.

    Runs at every training step with the values of a :class:`~speq_search.config.SpeqConfig`
    (checked when it was made; :func:`stochastic_precision` checks values given by hand).
    ``forward`` runs the model (default: ``model``; a compiled ``model`` serves every draw).
    """
    with torch.no_grad(), drawn_precision(model, p_high, high_bits, generator, teacher_bn):
        return (forward if forward is not None else model)(x)


def distillation_loss(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    kd_loss: str = "cosine",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Distillation term, averaged over the batch; the teacher is treated as a constant.

    - ``"cosine"``: ``1 - cos(softmax(z_t / T), softmax(z_s / T))`` (SPEQ's loss);
    - ``"cosine-logits"``: ``1 - cos(z_t, z_s)`` (T has no effect: cosine ignores scale);
    - ``"kl"``: ``T**2 * KL(softmax(z_t / T) || softmax(z_s / T))`` (Hinton's KD).
    """
    _check_distillation(kd_loss, temperature)
    return _distillation(teacher_logits, student_logits, kd_loss, temperature)


def _check_distillation(kd_loss: str, temperature: float) -> None:
    check_choice("kd_loss", kd_loss, KD_LOSSES)
    if temperature <= 0:
        raise ConfigError("temperature", temperature, "a number > 0")


def _distillation(teacher_logits: torch.Tensor, student_logits: torch.Tensor, kd_loss: str,
                  temperature: float) -> torch.Tensor:
    zt = teacher_logits.detach()
    if kd_loss == "cosine-logits":
        return (1.0 - F.cosine_similarity(zt, student_logits, dim=1)).mean()
    if kd_loss == "cosine":
        pt = F.softmax(zt / temperature, dim=1)
        ps = F.softmax(student_logits / temperature, dim=1)
        return (1.0 - F.cosine_similarity(pt, ps, dim=1)).mean()
    log_ps = F.log_softmax(student_logits / temperature, dim=1)
    log_pt = F.log_softmax(zt / temperature, dim=1)
    return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True) * temperature**2


def kd_schedule_factor(schedule: str, progress: float) -> float:
    """The distillation weight's multiplier at ``progress`` (0 = first step, 1 = last) of training.

    ``constant`` keeps 1; ``linear-decay`` falls as ``1 - progress``; ``cosine-decay`` as
    ``(1 + cos(pi * progress)) / 2``. The decays let the soft targets weigh most early and
    leave cross-entropy alone at the end (the authors' earlier "gradual soft loss reducing").
    """
    return kd_factor(check_choice("speq.kd_schedule", schedule, KD_SCHEDULES), progress)


def kd_factor(schedule: str, progress: float) -> float:
    """:func:`kd_schedule_factor` without its check: for a schedule a SpeqConfig already checked."""
    t = min(max(float(progress), 0.0), 1.0)
    if schedule == "linear-decay":
        return 1.0 - t
    if schedule == "cosine-decay":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0


class LossTerms(NamedTuple):
    """The SPEQ loss and its two terms (the terms are logged every epoch)."""

    total: torch.Tensor
    ce: torch.Tensor
    kd: torch.Tensor  # zero when there is no distillation term


def speq_loss_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor,
    ce_weight: float = 1.0,
    kd_weight: float = 1.0,
    temperature: float = 1.0,
    kd_loss: str = "cosine",
) -> LossTerms:
    """``ce_weight * CE(z_s, y) + kd_weight * KD(z_t, z_s)`` and its terms; no teacher means plain QAT.

    Runs at every training step with the values of a :class:`~speq_search.config.SpeqConfig`
    (checked when it was made; :func:`speq_loss` checks values given by hand)."""
    ce = F.cross_entropy(student_logits, targets)
    if teacher_logits is None or kd_weight == 0:
        return LossTerms(ce_weight * ce, ce, torch.zeros((), device=ce.device))
    kd = _distillation(teacher_logits, student_logits, kd_loss, temperature)
    return LossTerms(ce_weight * ce + kd_weight * kd, ce, kd)


def speq_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor,
    ce_weight: float = 1.0,
    kd_weight: float = 1.0,
    temperature: float = 1.0,
    kd_loss: str = "cosine",
) -> torch.Tensor:
    """``ce_weight * CE(z_s, y) + kd_weight * KD(z_t, z_s)``; no teacher means plain QAT."""
    if teacher_logits is not None and kd_weight != 0:  # as distillation_loss checks them
        _check_distillation(kd_loss, temperature)
    return speq_loss_terms(student_logits, teacher_logits, targets, ce_weight, kd_weight, temperature, kd_loss).total
