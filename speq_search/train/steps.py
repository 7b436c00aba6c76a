"""The pieces of an epoch: the optimiser, the training step of each method, the epoch loop, evaluation."""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from speq_search.config import TrainConfig
from speq_search.data import Splits, iterate_batches
from speq_search.speq import drawn_precision, frozen_state, high_precision, speq_loss_terms, teacher_logits

EVAL_BATCH = 1024


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@torch.no_grad()
def evaluate(model: nn.Module, split, device: torch.device, batch_stats: bool = False,
             teacher: tuple[float, int, torch.Generator] | None = None) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model``; restores its mode.

    By default in eval mode (BatchNorm running statistics). ``batch_stats=True`` normalises
    with each evaluation batch's statistics and changes no state: that is how the SPEQ
    teacher sees the network during training, whose precision the running statistics
    (collected at the student's precision) do not match. ``teacher=(p_high, high_bits,
    generator)`` evaluates the stochastic teacher: every batch draws its activation precisions
    afresh from ``generator``, as every training step does.
    """
    was_training = model.training
    model.train(batch_stats)
    bn_mode = "batch" if batch_stats else "running"
    # Sums stay on the device and are read once: no host round trip per batch.
    correct = torch.zeros((), device=device, dtype=torch.long)
    loss_sum = torch.zeros((), device=device)
    # Batch statistics need batches that mix the classes, whatever order the split is in; the
    # order is fixed, so every batch-statistics evaluation sees the same batches (paired).
    order = torch.Generator().manual_seed(0) if batch_stats else None
    with frozen_state(model, "batch"):
        for x, y in iterate_batches(split, EVAL_BATCH, shuffle=batch_stats, generator=order):
            x, y = x.to(device), y.to(device)
            if teacher is None:
                logits = model(x)
            else:
                p_high, high_bits, generator = teacher
                with drawn_precision(model, p_high, high_bits, generator, bn_mode):
                    logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    n = max(len(split), 1)
    return correct.item() / n, loss_sum.item() / n


DIAGNOSTIC_COLUMNS = ("val_acc_batch", "high_val_acc", "teacher_val_acc", "high_gap", "teacher_gap")


def teacher_diagnostics(model: nn.Module, split, device: torch.device, cfg: TrainConfig,
                        val_acc: float | None = None) -> dict[str, float]:
    """Is the SPEQ teacher better than the student it teaches? Accuracies on ``split``.

    - ``val_acc_batch``: the student normalised with batch statistics (``val_acc``, the
      selection metric, uses running statistics);
    - ``high_val_acc``: every activation at ``speq.high_bits`` (the teacher at ``p_high=1``);
    - ``teacher_val_acc``: the stochastic teacher itself, the mean over ``speq.eval_draws``
      passes, each batch with a fresh draw at the run's ``p_high`` from a generator seeded by
      the run's seed and the pass (reproducible; the training draws are untouched);
    - ``high_gap``, ``teacher_gap``: those two minus the student **in the same BatchNorm
      mode** (``speq.teacher_bn``, the mode the teacher trains in). Distillation can only
      help where the gap is positive.

    No model state changes. ``val_acc`` is the student's running-statistics accuracy if already
    measured (saves a pass when ``teacher_bn`` is ``running``).
    """
    sp = cfg.speq
    batch = sp.teacher_bn == "batch"
    out = {"val_acc_batch": evaluate(model, split, device, batch_stats=True)[0]}
    if batch:
        student = out["val_acc_batch"]
    else:
        student = val_acc if val_acc is not None else evaluate(model, split, device)[0]
    with high_precision(model, sp.high_bits):
        out["high_val_acc"] = evaluate(model, split, device, batch_stats=batch)[0]
    draws = []
    for k in range(sp.eval_draws):
        generator = torch.Generator().manual_seed(1_000 * cfg.seed + 500 + k)
        draws.append(evaluate(model, split, device, batch_stats=batch,
                              teacher=(sp.p_high, sp.high_bits, generator))[0])
    out["teacher_val_acc"] = statistics.fmean(draws) if draws else float("nan")
    out["high_gap"] = out["high_val_acc"] - student
    out["teacher_gap"] = out["teacher_val_acc"] - student
    return out


def make_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """Weight decay on conv/linear weights only, not on BatchNorm, biases or learned clips."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() > 1 and not name.endswith(".clip") else no_decay).append(p)
    o = cfg.optim
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if o.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=o.momentum, nesterov=o.momentum > 0)


class _StepTimer:
    """Wall time of each training step, without making the host wait for the device.

    On CPU a step's time is read from the clock; on CUDA two events bracket each step and are
    read together at the end of the epoch (one synchronisation per epoch, not per step).
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def start(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def stop(self, started) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append((started, event))
        else:
            self.marks.append(time.perf_counter() - started)

    def seconds(self) -> list[float]:
        if not self.cuda:
            return list(self.marks)
        torch.cuda.synchronize()
        return [a.elapsed_time(b) / 1000 for a, b in self.marks]


# Loss, CE and KD are summed weighted by batch size; accuracy counts are summed; on the device.
_SUMS = ("loss", "ce", "kd", "correct", "teacher_correct")


READ_EVERY = 25  # steps between reads of the running sums (progress bar, divergence check)


def train_epoch(model, splits, optimizer, scheduler, step_fn, generator, batch_size, device, desc, progress):
    """One pass over the training split with a method's step (:func:`make_step`); returns summed
    statistics (:data:`_SUMS` and ``n``) and step times (see :func:`run_epoch`)."""
    no_teacher = torch.zeros((), device=device)

    def summed_step(x, y):
        loss, ce, kd, logits, t_logits = step_fn(x, y)
        with torch.no_grad():
            b = len(y)
            t_correct = (t_logits.argmax(1) == y).sum() if t_logits is not None else no_teacher
            correct = (logits.argmax(1) == y).sum()
            sums = torch.stack([loss * b, ce * b, kd * b, correct.float(), t_correct.float()]).double()
        return loss, sums

    return run_epoch(model, splits, optimizer, scheduler, summed_step, generator, batch_size, device, desc, progress,
                     _SUMS)


def run_epoch(model, splits, optimizer, scheduler, step_fn, generator, batch_size, device, desc, progress,
              names: tuple[str, ...]):
    """One pass over the training split; returns summed statistics (``names`` and ``n``) and step times.

    ``step_fn(x, y) -> (loss, sums)``: ``loss`` is backpropagated here (``None``: the step ran
    its own backward passes, whose gradients add up), ``sums`` a float64 tensor with one value
    per name of ``names``, the first being the loss times the batch size. One optimiser and
    scheduler step per batch. Nothing in a step waits for the device: statistics accumulate on
    it and are read every :data:`READ_EVERY` steps (a divergence is caught there) and at the end.
    """
    model.train()
    sums = torch.zeros(len(names), device=device, dtype=torch.float64)
    n = 0
    timer = _StepTimer(device)
    batches = iterate_batches(splits.train, batch_size, shuffle=True, generator=generator,
                              augment=splits.augment, drop_last=True)
    n_batches = max(len(splits.train) // batch_size, 1)
    bar = tqdm(batches, total=n_batches, desc=desc, leave=False, disable=not progress, file=sys.stderr)
    accuracy = next((k for k in names if k.endswith("correct")), None)

    def read() -> dict:
        values = dict(zip(names, sums.tolist()))
        if not math.isfinite(values[names[0]]):
            raise TrainingDiverged(f"loss became {values[names[0]] / max(n, 1)} in {desc}")
        return values

    for i, (x, y) in enumerate(bar):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        started = timer.start()
        optimizer.zero_grad(set_to_none=True)
        loss, step_sums = step_fn(x, y)
        if loss is not None:
            loss.backward()
        optimizer.step()
        scheduler.step()
        timer.stop(started)
        sums += step_sums
        n += len(y)
        if (i + 1) % READ_EVERY == 0:
            values = read()
            bar.set_postfix(loss=f"{values[names[0]] / n:.3f}",
                            **({"acc": f"{values[accuracy] / n:.3f}"} if accuracy else {}))
    totals = read()
    totals["n"] = n
    return totals, timer.seconds()


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))


def quantized_values_per_step(cfg: TrainConfig, model: nn.Module, splits: Splits, device: torch.device) -> int:
    """Activation values the fake-quantizers see per training step, which ``compile: auto`` weighs
    (one forward of two examples; 0 without ``auto``, which needs none)."""
    from speq_search.quant import act_quantizers

    quantizers = list(act_quantizers(model))
    if cfg.compile != "auto" or not quantizers:
        return 0
    seen = []
    hooks = [q.register_forward_pre_hook(lambda _m, args: seen.append(args[0][0].numel())) for q in quantizers]
    try:
        with torch.no_grad(), frozen_state(model, "batch"):
            model(splits.train.x[:2].to(device))
    finally:
        for h in hooks:
            h.remove()
    return sum(seen) * cfg.data.batch_size


def make_step(cfg: TrainConfig, student: nn.Module, fp_model: nn.Module | None,
              teacher_gen: torch.Generator, device: torch.device, forward: Callable | None = None,
              kd_scale: Callable[[], float] | None = None) -> Callable:
    """The forward part of one training step of ``cfg.speq.method``.

    Returns ``step(x, y) -> (loss, ce, kd, student_logits, teacher_logits or None)``; the
    caller runs backward and the optimiser. The SPEQ teacher pass comes first, under
    ``no_grad`` and with a fresh precision draw; ``kd-fp`` uses ``fp_model`` as teacher.
    ``forward`` runs the student (default: ``student`` itself; a compiled ``student``, see
    :func:`speq_search.compiling.compiled_forward`). ``kd_scale()`` multiplies ``kd_weight`` at
    each step (``speq.kd_schedule``; default: 1).
    """
    forward = forward if forward is not None else student
    sp = cfg.speq
    kd_kind = sp.resolved_kd_loss
    teacher = sp.teacher
    if teacher == "fp" and fp_model is None:
        raise ValueError(f"method {sp.method} needs the full-precision model (its teacher)")

    def step(x, y):
        t_logits = None
        if teacher == "self":
            t_logits = teacher_logits(student, x, sp.p_high, sp.high_bits, teacher_gen, sp.teacher_bn, forward)
        elif teacher == "fp":
            with torch.no_grad():
                t_logits = fp_model(x)
        logits = forward(x)
        kd_weight = sp.kd_weight * kd_scale() if kd_scale is not None else sp.kd_weight
        loss, ce, kd = speq_loss_terms(logits, t_logits, y, sp.ce_weight, kd_weight, sp.temperature, kd_kind)
        return loss, ce, kd, logits, t_logits

    return step
