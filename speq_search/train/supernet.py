"""The one-shot supernet: one quantized network trained so that every assignment of a per-layer
space works, then evaluated at any assignment without rebuilding it.

Training follows the sandwich rule (BigNAS, OFA; for bit-widths Any-Precision networks,
Bit-Mixer, EQ-Net, One-Shot MPQ): at each step the shared weights run at the highest
assignment, the lowest and ``oneshot.paths`` random ones; the highest learns from the labels,
the others also from a teacher (``oneshot.teacher``); every path's gradients add up into one
optimiser step. Precision is data (:func:`speq_search.quant.set_layer_bits`), so a compiled
forward serves every draw. An evaluated assignment's BatchNorm statistics are re-estimated on
a few training batches at that assignment (``oneshot.bn: recalibrate``) or taken from each
batch (``batch``): the running statistics of training mix every precision.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from speq_search.compiling import compile_seconds, compiled_forward, resolve_config_compile
from speq_search.config import OneShotConfig, TrainConfig
from speq_search.costs import report_costs
from speq_search.data import Splits, iterate_batches
from speq_search.errors import ConfigError
from speq_search.quant import layer_bits, layer_bits_of, set_layer_bits
from speq_search.quant.scaling import check_weight_quantizer
from speq_search.speq import speq_loss_terms, teacher_logits
from speq_search.train.assignments import (
    Choices,
    apply_assignment,
    assignment_quant,
    check_choices,
    highest,
    layer_names,
    lowest,
    random_assignment,
)
from speq_search.train.checkpoints import atomic_torch_save, load_checkpoint, load_state, write_history
from speq_search.train.fp import full_precision_model
from speq_search.train.loop import open_run_folder
from speq_search.train.model import build_model, load_data, prepare_student, quantize_for, resolve_device
from speq_search.train.steps import cosine_schedule, evaluate, make_optimizer, quantized_values_per_step, run_epoch

SUPERNET_FORMAT = "speq-search-supernet/1"
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_CALIBRATION_SEED = 0  # every assignment's BatchNorm is estimated on the same batches (paired)
# What a supernet's weights are tied to: loading them for another model or space is refused.
_QUANT_IDENTITY = ("weight_quantizer", "per_channel", "per_bit_scales", "first_last_bits", "input_bits")


# ----------------------------------------------------------------------------- evaluation
def batch_norms(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _NORMS) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, split, batches: int, batch_size: int, device: torch.device) -> None:
    """Reset every BatchNorm's running statistics and estimate them anew, as the plain average over
    ``batches`` training batches (a fixed shuffle: the same batches every call) at the model's
    current precision. Nothing else changes; the model's mode is kept."""
    norms = batch_norms(model)
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: every batch weighs the same
    model.train()
    try:
        order = torch.Generator().manual_seed(_CALIBRATION_SEED)
        for i, (x, _) in enumerate(iterate_batches(split, batch_size, shuffle=True, generator=order)):
            if i == batches:
                break
            model(x.to(device))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


@contextlib.contextmanager
def kept_state(model: nn.Module) -> Iterator[nn.Module]:
    """Inside, the layers' bits and the BatchNorm statistics may change; on exit they are restored."""
    bits = layer_bits(model)
    saved = [(m, [b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)])
             for m in batch_norms(model)]
    try:
        yield model
    finally:
        set_layer_bits(model, bits)
        with torch.no_grad():
            for m, buffers in saved:
                for dst, src in zip((m.running_mean, m.running_var, m.num_batches_tracked), buffers):
                    dst.copy_(src)


def assignment_accuracy(model: nn.Module, splits: Splits, cfg: TrainConfig, oneshot: OneShotConfig,
                        device: torch.device, names: tuple[str, ...] = ("val",)) -> dict[str, float]:
    """``{name}_acc`` and ``{name}_loss`` on the splits ``names`` at the model's current bits, with
    BatchNorm as ``oneshot.bn`` says (``recalibrate`` changes the running statistics: see
    :func:`kept_state`)."""
    batch = oneshot.bn == "batch"
    if not batch:
        recalibrate_bn(model, splits.train, oneshot.calibration_batches, cfg.data.batch_size, device)
    out = {}
    for name in names:
        out[f"{name}_acc"], out[f"{name}_loss"] = evaluate(model, getattr(splits, name), device, batch_stats=batch)
    return out


def evaluate_assignment(model: nn.Module, group_bits: Mapping[str, Mapping[str, int]], splits: Splits,
                        cfg: TrainConfig, oneshot: OneShotConfig, device: torch.device,
                        test: bool = False) -> dict:
    """The supernet ``model`` at assignment ``group_bits``: ``val_acc``, ``val_loss`` (and
    ``test_acc``, ``test_loss`` when ``test``) and the costs of that assignment
    (:func:`speq_search.costs.report_costs`: avg bits, size, BitOps, ``layer_bits``...).

    Sets the bits in place over ``cfg.quant`` (:func:`apply_assignment`), handles BatchNorm as
    ``oneshot.bn`` says, validates; no module is rebuilt and no weight copied. The model's bits
    and BatchNorm statistics are restored afterwards, so evaluations do not depend on each other.
    """
    with kept_state(model):
        apply_assignment(model, cfg.quant, group_bits)
        out = assignment_accuracy(model, splits, cfg, oneshot, device, ("val", "test") if test else ("val",))
        out.update(report_costs(model, splits.train.x[:1].to(device), cfg.cost_model))
    return out


def _plain(value):
    """JSON's view of ``value`` (tuples as lists, sorted keys): what a supernet's identity is compared in."""
    return json.loads(json.dumps(value, sort_keys=True))


def _plain_choices(choices: Choices) -> dict:
    return {g: {k: sorted(set(v)) for k, v in kinds.items()} for g, kinds in _plain(choices).items()}


def supernet_identity(cfg: TrainConfig) -> dict:
    """What a supernet's weights belong to: the model, the data set, the quantizers' settings."""
    return _plain({"model": cfg.model.name, "width": cfg.model.width, "kwargs": cfg.model.kwargs,
                   "dataset": cfg.data.dataset, **{f"quant.{k}": getattr(cfg.quant, k) for k in _QUANT_IDENTITY}})


def load_supernet(path: str | Path, cfg: TrainConfig, splits: Splits | None = None, choices: Choices | None = None,
                  device: torch.device | None = None) -> tuple[nn.Module, dict]:
    """The supernet of ``supernet.pt`` at ``path``, built for ``cfg`` and on ``device`` (default:
    ``cfg.device``), in eval mode, and its ``meta`` (identity, ``choices``, ``granularity``,
    ``oneshot``, training ``metrics``). A supernet of another model, width, data set or quantizer
    settings, or of other ``choices`` (when given), is a one-line :class:`ConfigError` naming
    ``supernet``."""
    ckpt = load_checkpoint(path, "supernet")
    meta = ckpt.get("meta")
    if ckpt.get("format") != SUPERNET_FORMAT or not isinstance(meta, dict):
        raise ConfigError("supernet", str(path), "a supernet.pt written by train_supernet")
    want = dict(supernet_identity(cfg), **({"choices": _plain_choices(choices)} if choices is not None else {}))
    have = dict(meta["identity"], choices=meta["choices"])
    for key, value in want.items():
        if have.get(key) != value:
            raise ConfigError("supernet", str(path), f"a supernet of {key} {short(value)} (this one has "
                              f"{short(have.get(key))})")
    splits = splits if splits is not None else load_data(cfg)
    model = quantize_for(cfg, build_model(cfg, splits))
    load_state(model, ckpt["model"], "supernet", str(path))
    return model.to(device if device is not None else resolve_device(cfg.device)).eval(), meta


def short(value) -> str:
    """``value`` as compact JSON, cut to 60 characters (for one-line errors)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= 60 else text[:57] + "..."


# ----------------------------------------------------------------------------- training
# The statistics an epoch sums (times the batch size; accuracies as counts).
SUPERNET_SUMS = ("loss", "high_ce", "low_ce", "low_kd", "high_correct", "low_correct")


def sandwich_step(model: nn.Module, cfg: TrainConfig, oneshot: OneShotConfig,
                  paths: Callable[[], list[dict[str, dict[str, int]]]], teacher_gen: torch.Generator | None,
                  forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Callable:
    """The supernet's training step: ``step(x, y) -> (None, sums)`` (:data:`SUPERNET_SUMS`).

    ``paths()`` gives the step's layer bits, the highest first and the lowest second. Each path
    runs forward and backward at once (its graph freed before the next), so the gradients of
    all paths add up for the caller's one optimiser step. The highest learns from cross-entropy;
    the others from ``speq.ce_weight`` * CE + ``oneshot.kd_weight`` * distillation (SPEQ's
    ``speq.kd_loss`` and ``speq.temperature``) from the highest's detached logits (``inplace``),
    from SPEQ's stochastic teacher of that path (``stochastic``: a no-grad pass that changes no
    state), or none. ``forward`` runs the model (a compiled ``model`` serves every path).
    """
    forward = forward if forward is not None else model
    sp, kind, teacher = cfg.speq, cfg.speq.resolved_kd_loss, oneshot.teacher

    def step(x, y):
        b, target, losses, rows = len(y), None, [], []
        for i, bits in enumerate(paths()):
            set_layer_bits(model, bits)
            t_logits = target if teacher == "inplace" else None
            if i and teacher == "stochastic":
                t_logits = teacher_logits(model, x, sp.p_high, sp.high_bits, teacher_gen, sp.teacher_bn, forward)
            logits = forward(x)
            if i == 0:
                loss = ce = F.cross_entropy(logits, y)
                kd = torch.zeros_like(ce)
                target = logits.detach()
            else:
                loss, ce, kd = speq_loss_terms(logits, t_logits, y, sp.ce_weight, oneshot.kd_weight,
                                               sp.temperature, kind)
            loss.backward()
            losses.append(loss.detach())
            if i < 2:
                with torch.no_grad():
                    rows.append((ce.detach(), kd.detach(), (logits.argmax(1) == y).sum().float()))
        (hce, _, hc), (lce, lkd, lc) = rows
        return None, torch.stack([torch.stack(losses).mean() * b, hce * b, lce * b, lkd * b, hc, lc]).double()

    return step


class SupernetTraining:
    """What :func:`train_supernet` drives: the supernet, its optimiser and schedule, three random
    streams (data order, assignment draws, the stochastic teacher) and the history; made new
    (the float model quantized at the lowest assignment, clips calibrated) or restored from a
    checkpoint."""

    def __init__(self, cfg: TrainConfig, oneshot: OneShotConfig, choices: Choices, splits: Splits,
                 device: torch.device, state: dict | None = None, log: Callable[[str], None] = print) -> None:
        self.cfg, self.oneshot, self.splits, self.device, self.log = cfg, oneshot, splits, device, log
        self.choices = _plain_choices(choices)
        built = cfg.evolve({"quant": assignment_quant(cfg.quant, lowest(self.choices))}, trusted=True)
        if state is None:
            fp_model, self.fp_info = full_precision_model(cfg, splits, device, log)
            self.model = prepare_student(built, fp_model, splits, device)
        else:
            self.fp_info = state["fp_info"]
            self.model = quantize_for(built, build_model(cfg, splits)).to(device)
            load_state(self.model, state["model"], "resume", "checkpoint.pt")
        self.names = layer_names(self.model)
        self.high, self.low = self.bits_of(highest(self.choices)), self.bits_of(lowest(self.choices))
        self.data_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.teacher_gen = torch.Generator().manual_seed(cfg.seed + 2)
        self.draws = torch.Generator().manual_seed(cfg.seed + 3)
        self.optimizer = make_optimizer(self.model, cfg, oneshot.supernet_lr(cfg.optim))
        self.total_steps = oneshot.supernet_epochs * max(len(splits.train) // cfg.data.batch_size, 1)
        self.scheduler = cosine_schedule(self.optimizer, self.total_steps)
        self.history: list[dict] = []
        self.start_epoch = 0
        self.step_times: list[float] = []
        if state is not None:
            self._restore(state)
        self.compile_start = compile_seconds()
        self.compile_mode = resolve_config_compile(cfg.compile, device, self.total_steps * (2 + oneshot.paths),
                                                   quantized_values_per_step(cfg, self.model, splits, device))
        forward = compiled_forward(self.model, self.compile_mode)
        self.step = sandwich_step(self.model, cfg, oneshot, self.paths, self.teacher_gen, forward)
        self.t_run = time.perf_counter()

    def bits_of(self, assignment: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
        """The layer bits of ``assignment`` over ``cfg.quant``."""
        return layer_bits_of(self.names, assignment_quant(self.cfg.quant, assignment))

    def paths(self) -> list[dict[str, dict[str, int]]]:
        """One step's layer bits: the highest, the lowest, then ``oneshot.paths`` random assignments."""
        drawn = [self.bits_of(random_assignment(self.choices, self.draws)) for _ in range(self.oneshot.paths)]
        return [self.high, self.low, *drawn]

    def _restore(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for name in ("data_gen", "teacher_gen", "draws"):
            getattr(self, name).set_state(state["rng"][name])
        self.history = list(state["history"])
        self.start_epoch = int(state["epoch"])
        self.step_times = list(state["step_times"])

    def evaluate_bits(self, bits: dict[str, dict[str, int]], names: tuple[str, ...] = ("val",)) -> dict[str, float]:
        """Accuracy and loss at layer ``bits`` (BatchNorm per ``oneshot.bn``); no state changes."""
        with kept_state(self.model):
            set_layer_bits(self.model, bits)
            return assignment_accuracy(self.model, self.splits, self.cfg, self.oneshot, self.device, names)

    def epoch(self, epoch: int) -> dict:
        """Train one epoch, evaluate the highest and the lowest assignment; its row of metrics.csv."""
        cfg, t0 = self.cfg, time.perf_counter()
        totals, times = run_epoch(self.model, self.splits, self.optimizer, self.scheduler, self.step, self.data_gen,
                                  cfg.data.batch_size, self.device,
                                  f"supernet {epoch + 1}/{self.oneshot.supernet_epochs}", cfg.progress, SUPERNET_SUMS)
        self.step_times.extend(times)
        n = max(totals["n"], 1)
        row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], "train_loss": totals["loss"] / n,
               "high_train_ce": totals["high_ce"] / n, "low_train_ce": totals["low_ce"] / n,
               "low_train_kd": totals["low_kd"] / n, "high_train_acc": totals["high_correct"] / n,
               "low_train_acc": totals["low_correct"] / n}
        for label, bits in (("high", self.high), ("low", self.low)):
            r = self.evaluate_bits(bits)
            row[f"{label}_val_acc"], row[f"{label}_val_loss"] = r["val_acc"], r["val_loss"]
        row["epoch_time_s"] = time.perf_counter() - t0
        row["step_time_s"] = statistics.median(times) if times else float("nan")
        self.history.append(row)
        self.log(f"supernet epoch {epoch + 1}/{self.oneshot.supernet_epochs}  loss {row['train_loss']:.4f}  "
                 f"val highest {row['high_val_acc']:.4f}  lowest {row['low_val_acc']:.4f}")
        return row

    def save(self, out: Path, epoch: int) -> None:
        """``metrics.csv`` and a checkpoint that resumes after ``epoch``."""
        write_history(out / "metrics.csv", self.history)
        atomic_torch_save({
            "format": SUPERNET_FORMAT, "epoch": epoch + 1, "config": self.cfg.to_dict(),
            "oneshot": self.oneshot.to_dict(), "choices": self.choices, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "history": self.history, "fp_info": self.fp_info, "step_times": self.step_times,
            "rng": {name: getattr(self, name).get_state() for name in ("data_gen", "teacher_gen", "draws")},
        }, out / "checkpoint.pt")

    def finish(self, out: Path, granularity: str) -> dict:
        """The supernet's metrics (the last epoch's; test accuracy of the highest and lowest
        assignments, the test split's one use); writes ``supernet.pt`` and ``metrics.json``."""
        last = self.history[-1]
        metrics = {"high_val_acc": last["high_val_acc"], "low_val_acc": last["low_val_acc"]}
        for label, bits in (("high", self.high), ("low", self.low)):
            metrics[f"{label}_test_acc"] = self.evaluate_bits(bits, ("test",))["test_acc"]
        metrics.update({
            "epochs": len(self.history), "granularity": granularity,
            "step_time_s": statistics.median(self.step_times) if self.step_times else float("nan"),
            "train_time_s": round(time.perf_counter() - self.t_run, 3),
            "fp_val_acc": self.fp_info.get("fp_val_acc", float("nan")),
            "fp_test_acc": self.fp_info.get("fp_test_acc", float("nan")),
            "compile": self.compile_mode, "compile_s": round(compile_seconds() - self.compile_start, 2),
            "supernet": str(out / "supernet.pt"),
        })
        meta = {"identity": supernet_identity(self.cfg), "choices": self.choices, "granularity": granularity,
                "oneshot": self.oneshot.to_dict(), "seed": self.cfg.seed, "config": self.cfg.to_dict(),
                "metrics": metrics}
        atomic_torch_save({"format": SUPERNET_FORMAT, "model": self.model.state_dict(), "meta": meta},
                          out / "supernet.pt")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics


def train_supernet(cfg: TrainConfig, oneshot: OneShotConfig, choices: Choices, out_dir: str | Path,
                   resume: bool = False, callback: Callable[[dict], None] | None = None,
                   log: Callable[[str], None] | None = None, *, granularity: str | None = None) -> dict:
    """Train the supernet of a per-layer space; write its folder; return its metrics.

    ``choices``: ``{group: {"w_bits": [...], "a_bits": [...]}}`` (searchable kinds only; groups of
    :func:`speq_search.quant.layer_groups` at ``granularity``, default: the finest that holds
    them). From the cached float model, quantized with ``cfg.quant`` and calibrated, then
    ``oneshot.supernet_epochs`` epochs of :func:`sandwich_step` at ``oneshot.supernet_lr`` (cosine
    schedule). ``out_dir`` receives ``config.yaml``, ``metrics.csv`` (a row per epoch: losses, train
    accuracy of the highest/lowest path, their validation accuracy, step time), ``checkpoint.pt``
    (``resume=True`` continues from it exactly), at the end ``supernet.pt`` (:func:`load_supernet`)
    and ``metrics.json``. ``callback(row)`` after every epoch (after its checkpoint; the last one
    with the final metrics, after ``supernet.pt``).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    device = resolve_device(cfg.device)
    resolve_config_compile(cfg.compile, device, 0)  # a compile mode this machine cannot run fails before any work
    check_weight_quantizer(cfg.quant.weight_quantizer)
    if not isinstance(oneshot, OneShotConfig):
        raise ConfigError("oneshot", oneshot, "a OneShotConfig")
    if not cfg.quantized:
        raise ConfigError("speq.method", cfg.speq.method, "a quantized method (a supernet trains quantized paths)")
    splits = load_data(cfg)
    granularity = check_choices(choices, build_model(cfg, splits), cfg.quant.first_last_bits, granularity)
    out = Path(out_dir)
    state = open_run_folder(cfg, out, resume)
    if state is not None and (state.get("oneshot") != oneshot.to_dict() or state.get("choices") != _plain_choices(choices)):
        raise ConfigError("resume", str(out), "the oneshot settings and choices the supernet was started with")
    training = SupernetTraining(cfg, oneshot, choices, splits, device, state, log)
    epochs = oneshot.supernet_epochs
    for epoch in range(training.start_epoch, epochs):
        row = training.epoch(epoch)
        training.save(out, epoch)
        if callback is not None and epoch + 1 < epochs:
            callback(row)
    metrics = training.finish(out, granularity)
    if callback is not None:
        callback(dict(training.history[-1], **metrics))
    log(f"supernet: val highest {100 * metrics['high_val_acc']:.2f} %, lowest {100 * metrics['low_val_acc']:.2f} % "
        f"after {metrics['epochs']} epochs ({out / 'supernet.pt'})")
    return metrics
