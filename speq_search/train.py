"""Training: the full-precision phase (cached) and the quantized phase (QAT, KD or SPEQ).

Knows nothing of Ray or Optuna: the search layer calls :func:`run` with a callback.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import inspect
import json
import math
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from speq_search.compiling import cache_root, compile_seconds, compiled_forward, resolve_compile, use_compile_cache
from speq_search.config import TrainConfig
from speq_search.costs import report_costs
from speq_search.data import Splits, create_dataset, iterate_batches
from speq_search.errors import ConfigError
from speq_search.models import create_model
from speq_search.models._registry import _MODELS
from speq_search.quant import calibrating, quantize_model
from speq_search.quant.primitives import FULL_PRECISION
from speq_search.speq import frozen_state, high_precision, kd_schedule_factor, speq_loss_terms, stochastic_precision, teacher_logits

CHECKPOINT_FORMAT = "speq-search-checkpoint/1"
EVAL_BATCH = 1024


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    """``auto`` takes CUDA when present; asking for ``cuda`` without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", name, "cpu | auto (no CUDA device is visible)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (model initialisation)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_data(cfg: TrainConfig) -> Splits:
    """The data of ``cfg`` (the fixed split, the training subset)."""
    d = cfg.data
    return create_dataset(d.dataset, data_dir=d.data_dir, download=d.download, train_size=d.train_size,
                          val_fraction=d.val_fraction)


def build_model(cfg: TrainConfig, splits: Splits) -> nn.Module:
    """The float model of ``cfg``, shaped for ``splits``."""
    kwargs = dict(cfg.model.kwargs)
    builder = _MODELS.get(cfg.model.name)
    if builder is not None and "input_size" in inspect.signature(builder).parameters:
        kwargs.setdefault("input_size", splits.image_size)
    return create_model(cfg.model.name, num_classes=splits.num_classes, in_channels=splits.in_channels,
                        width=cfg.model.width, **kwargs)


def quantize_for(cfg: TrainConfig, model: nn.Module) -> nn.Module:
    """Quantize ``model`` in place as ``cfg.quant`` says."""
    q = cfg.quant
    return quantize_model(model, w_bits=q.w_bits, a_bits=q.a_bits, overrides=q.overrides,
                          first_last_bits=q.first_last_bits, group_bits=q.group_bits, input_bits=q.input_bits,
                          weight_quantizer=q.weight_quantizer, per_channel=q.per_channel)


def planned_costs(cfg: TrainConfig, splits: Splits | None = None) -> dict:
    """The costs a run of ``cfg`` will report, without training: budgets are checked with these."""
    splits = splits if splits is not None else load_data(cfg)
    model = build_model(cfg, splits)
    if cfg.speq.method != "fp":
        quantize_for(cfg, model)
    return report_costs(model, splits.train.x[:1], cfg.cost_model)


# ----------------------------------------------------------------------------- evaluation
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
                with stochastic_precision(model, p_high, high_bits, generator, bn_mode):
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


# ------------------------------------------------------------------------------ optimiser
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


def _epoch(model, splits, optimizer, scheduler, step_fn, generator, batch_size, device, desc, progress):
    """One pass over the training split; returns summed statistics and step times.

    Nothing in a step waits for the device: statistics accumulate on it and are read every
    :data:`READ_EVERY` steps (a divergence is caught there) and at the end.
    """
    model.train()
    sums = torch.zeros(len(_SUMS), device=device, dtype=torch.float64)
    n = 0
    timer = _StepTimer(device)
    batches = iterate_batches(splits.train, batch_size, shuffle=True, generator=generator,
                              augment=splits.augment, drop_last=True)
    n_batches = max(len(splits.train) // batch_size, 1)
    bar = tqdm(batches, total=n_batches, desc=desc, leave=False, disable=not progress, file=sys.stderr)

    def read() -> dict:
        values = dict(zip(_SUMS, sums.tolist()))
        if not math.isfinite(values["loss"]):
            raise TrainingDiverged(f"loss became {values['loss'] / max(n, 1)} in {desc}")
        return values

    no_teacher = torch.zeros((), device=device)
    for i, (x, y) in enumerate(bar):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        started = timer.start()
        loss, ce, kd, logits, t_logits = step_fn(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        timer.stop(started)
        with torch.no_grad():
            b = len(y)
            t_correct = (t_logits.argmax(1) == y).sum() if t_logits is not None else no_teacher
            correct = (logits.argmax(1) == y).sum()
            sums += torch.stack([loss * b, ce * b, kd * b, correct.float(), t_correct.float()]).double()
        n += b
        if (i + 1) % READ_EVERY == 0:
            values = read()
            bar.set_postfix(loss=f"{values['loss'] / n:.3f}", acc=f"{values['correct'] / n:.3f}")
    totals = read()
    totals["n"] = n
    return totals, timer.seconds()


def _cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))


# ------------------------------------------------------------------ full-precision phase
def data_fingerprint(splits: Splits) -> str:
    """A cheap hash of the training split's contents (every label, a sample of the pixels).

    Part of the FP cache key, so that files rewritten in the same folder never meet a model
    trained on their old contents (whose training images may now be test images).
    """
    h = hashlib.sha256()
    x = splits.train.x
    h.update(str(tuple(x.shape)).encode())
    h.update(splits.train.y.numpy().tobytes())
    h.update(x.flatten()[:: max(x.numel() // 100_000, 1)].numpy().tobytes())
    return h.hexdigest()[:16]


def fp_cache_key(cfg: TrainConfig, splits: Splits) -> str:
    """What the full-precision model depends on; runs that agree on it share one model."""
    d, m, o = cfg.data, cfg.model, cfg.optim
    key = {
        "data": data_fingerprint(splits),
        "dataset": d.dataset, "data_dir": str(Path(d.data_dir).expanduser().resolve()) if d.data_dir else None,
        "train_size": d.train_size, "val_fraction": d.val_fraction, "batch_size": d.batch_size,
        "model": m.name, "width": m.width, "kwargs": m.kwargs, "seed": cfg.seed,
        "fp_epochs": o.fp_epochs, "fp_lr": o.fp_lr, "optimizer": o.optimizer, "momentum": o.momentum,
        "weight_decay": o.weight_decay,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{d.dataset}-{m.name}-w{m.width:g}-s{cfg.seed}-e{o.fp_epochs}-{digest}"


def fp_cache_dir(cfg: TrainConfig) -> Path:
    """``cfg.fp_cache_dir``, else ``$SPEQ_SEARCH_CACHE/fp``, else ``~/.cache/speq-search/fp``."""
    if cfg.fp_cache_dir:
        return Path(cfg.fp_cache_dir).expanduser()
    return cache_root() / "fp"


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temporary file, then rename: a crash never leaves half a checkpoint.

    The temporary name is unique per writer: concurrent trials that train the same new
    architecture both write its cached FP model, and a shared name let one rename the other's
    file away (the second rename then failed, and its trial with it).
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, field: str = "checkpoint") -> dict:
    """``torch.load(weights_only=True)`` with a one-line error for a missing or corrupt file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(field, str(p), "an existing checkpoint file written by speq-search")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle error, wrong file type...
        raise ConfigError(field, str(p), f"a readable torch checkpoint ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or not any(k in ckpt for k in ("model", "best_model", "state_dict")):
        raise ConfigError(field, str(p), "a checkpoint holding 'model' or 'state_dict' (written by speq-search)")
    return ckpt


def _load_state(model: nn.Module, state: dict, field: str, path: str) -> None:
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0][:160]
        raise ConfigError(field, path, f"a checkpoint of this model and width ({first})") from None


def full_precision_model(cfg: TrainConfig, splits: Splits, device: torch.device, log=print) -> tuple[nn.Module, dict]:
    """The trained float model ``cfg`` starts from: loaded, cached, or trained now and cached."""
    seed_everything(cfg.seed)
    model = build_model(cfg, splits).to(device)
    if cfg.fp_checkpoint:
        ckpt = load_checkpoint(cfg.fp_checkpoint, "fp_checkpoint")
        state = ckpt.get("state_dict") or ckpt.get("best_model") or ckpt.get("model")
        _load_state(model, state, "fp_checkpoint", cfg.fp_checkpoint)
        return model, _fp_info(model, splits, device, "checkpoint")
    path = fp_cache_dir(cfg) / f"{fp_cache_key(cfg, splits)}.pt"
    if path.exists():
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(ckpt["state_dict"])
            info = dict(ckpt["info"], source="cache")
            log(f"full-precision model: cached {path} (val {100 * info['fp_val_acc']:.2f} %)")
            return model, info
        except Exception as err:  # a corrupt cache entry is retrained, not fatal
            log(f"full-precision cache {path} unreadable ({type(err).__name__}); retraining")
    if cfg.optim.fp_epochs > 0:
        log(f"full-precision model: training {cfg.optim.fp_epochs} epochs")
        _train_fp(model, cfg, splits, device, log)
    info = _fp_info(model, splits, device, "trained")
    log(f"full-precision model: val {100 * info['fp_val_acc']:.2f} % after {cfg.optim.fp_epochs} epochs")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "state_dict": model.state_dict(), "info": info}, path)
    return model, info


def _fp_info(model, splits, device, source: str) -> dict:
    val_acc, _ = evaluate(model, splits.val, device)
    test_acc, _ = evaluate(model, splits.test, device)
    return {"fp_val_acc": val_acc, "fp_test_acc": test_acc, "source": source}


def _train_fp(model: nn.Module, cfg: TrainConfig, splits: Splits, device: torch.device, log=print) -> None:
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = make_optimizer(model, cfg, cfg.optim.fp_lr)
    steps = cfg.optim.fp_epochs * max(len(splits.train) // cfg.data.batch_size, 1)
    scheduler = _cosine_schedule(optimizer, steps)
    zero = torch.zeros((), device=device)
    mode = resolve_compile(cfg.compile, device, steps, _auto_values(cfg, model, splits, device))
    forward = compiled_forward(model, mode)
    if mode != "off":
        log(f"full-precision phase: compile {mode}")

    def step(x, y):
        logits = forward(x)
        ce = F.cross_entropy(logits, y)
        return ce, ce, zero, logits, None

    for epoch in range(cfg.optim.fp_epochs):
        _epoch(model, splits, optimizer, scheduler, step, generator, cfg.data.batch_size, device,
               f"fp {epoch + 1}/{cfg.optim.fp_epochs}", cfg.progress)


def _auto_values(cfg: TrainConfig, model: nn.Module, splits: Splits, device: torch.device) -> int:
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


# ----------------------------------------------------------------------- quantized phase
def prepare_student(cfg: TrainConfig, fp_model: nn.Module, splits: Splits, device: torch.device) -> nn.Module:
    """A copy of the float model, quantized and calibrated (``fp`` method: just the copy)."""
    student = copy.deepcopy(fp_model)
    if cfg.speq.method == "fp":
        return student
    quantize_for(cfg, student).to(device)
    student.train()
    with calibrating(student):
        # Calibrate on a fixed slice of training data: the run's RNG streams stay untouched.
        x = splits.train.x[: max(cfg.data.batch_size, 256)].to(device)
        student(x)
    return student


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
        raise ValueError("method kd-fp needs the full-precision model")

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


def run(
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callback: Callable[[dict], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train as ``cfg`` says; write the run folder; return the final metrics.

    ``out_dir`` receives ``config.yaml``, ``metrics.csv`` (a row per epoch), ``metrics.json``
    and ``checkpoint.pt``. ``resume=True`` continues from ``out_dir/checkpoint.pt``.
    ``callback(row)`` is called after every epoch (the search layer reports from it): the epoch's
    row, the costs and the selected epoch's metrics (``val_acc`` is the best epoch's so far, the
    objective; ``epoch_val_acc`` is this epoch's own, what learning curves draw).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    device = resolve_device(cfg.device)
    resolve_compile(cfg.compile, device, 0)  # a compile mode this machine cannot run fails before any work
    compile_start = compile_seconds()
    splits = load_data(cfg)  # bad data settings fail before anything is written
    if not resume:
        planned_costs(cfg, splits)  # so do a model that does not build or quantize, and a bad cost table
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / "checkpoint.pt" if out else None
    state = None
    if out is not None:
        if resume:
            if not ckpt_path.exists():
                raise ConfigError("resume", str(out), "a run folder holding checkpoint.pt")
            state = load_checkpoint(ckpt_path, "resume")
        elif (out / "metrics.json").exists() or (ckpt_path and ckpt_path.exists()):
            raise ConfigError("out", str(out), "a new folder (this one holds a run: resume=True continues it)")
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.yaml")

    sp = cfg.speq
    needs_fp = state is None or sp.teacher == "fp"
    fp_model, fp_info = full_precision_model(cfg, splits, device, log) if needs_fp else (None, state["fp_info"])
    if state is None:
        student = prepare_student(cfg, fp_model, splits, device)
    else:
        seed_everything(cfg.seed)
        student = build_model(cfg, splits)
        if sp.method != "fp":
            quantize_for(cfg, student)
        _load_state(student, state["model"], "resume", str(ckpt_path))
        student.to(device)
    if fp_model is not None:
        fp_model.eval()

    generator = torch.Generator().manual_seed(cfg.seed + 1)
    teacher_gen = torch.Generator().manual_seed(cfg.seed + 2)
    optimizer = make_optimizer(student, cfg, cfg.optim.lr)
    steps_per_epoch = max(len(splits.train) // cfg.data.batch_size, 1)
    scheduler = _cosine_schedule(optimizer, cfg.optim.epochs * steps_per_epoch)
    history: list[dict] = []
    best = {"epoch": 0, "val_acc": -1.0, "state": None, "row": None}
    start_epoch = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["rng"]["data"])
        teacher_gen.set_state(state["rng"]["teacher"])
        history = list(state["history"])
        best = dict(state["best"], state=state["best_model"])
        start_epoch = int(state["epoch"])
        log(f"resuming {out} after epoch {start_epoch}")

    quantized = sp.method != "fp"
    total_steps = cfg.optim.epochs * steps_per_epoch
    compile_mode = resolve_compile(cfg.compile, device, total_steps, _auto_values(cfg, student, splits, device))
    if compile_mode == "on":
        # A worker process runs trial after trial: start each whole-model compile from an empty
        # in-memory cache (the on-disk one makes it quick), so graphs of earlier trials' models
        # never fill dynamo's per-function limit and send this one back to eager. The reset also
        # zeroes dynamo's compile clock: keep this run's seconds so far.
        so_far = compile_seconds() - compile_start
        torch._dynamo.reset()
        compile_start = compile_seconds() - so_far
    forward = compiled_forward(student, compile_mode)
    if compile_mode != "off":
        log(f"{sp.method}: compile {compile_mode} ({total_steps} steps, compiled artefacts in {use_compile_cache()})")

    def kd_scale() -> float:  # the scheduler counts steps, and is restored on resume
        return kd_schedule_factor(sp.kd_schedule, scheduler.last_epoch / max(total_steps - 1, 1))

    step = make_step(cfg, student, fp_model, teacher_gen, device, forward, kd_scale)

    example = splits.train.x[:1].to(device)
    all_times: list[float] = list(state.get("step_times", [])) if state else []
    t_run = time.perf_counter()
    for epoch in range(start_epoch, cfg.optim.epochs):
        t0 = time.perf_counter()
        totals, times = _epoch(student, splits, optimizer, scheduler, step, generator, cfg.data.batch_size,
                               device, f"{sp.method} {epoch + 1}/{cfg.optim.epochs}", cfg.progress)
        all_times.extend(times)
        kd_weight_now = sp.kd_weight * kd_scale() if sp.teacher else 0.0  # for the next step
        val_acc, val_loss = evaluate(student, splits.val, device)
        diagnostics = dict.fromkeys(DIAGNOSTIC_COLUMNS, float("nan"))
        if quantized:
            diagnostics = teacher_diagnostics(student, splits.val, device, cfg, val_acc)
        n = max(totals["n"], 1)
        row = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": totals["loss"] / n,
            "train_ce": totals["ce"] / n,
            "train_kd": totals["kd"] / n,
            "train_acc": totals["correct"] / n,
            "teacher_train_acc": totals["teacher_correct"] / n if sp.teacher else float("nan"),
            "kd_weight": kd_weight_now,
            "val_acc": val_acc,
            "val_loss": val_loss,
            **diagnostics,
            "epoch_time_s": time.perf_counter() - t0,
            "step_time_s": statistics.median(times) if times else float("nan"),
        }
        history.append(row)
        if val_acc > best["val_acc"]:  # ties keep the earlier epoch; the test split never chooses
            best = {"epoch": epoch + 1, "val_acc": val_acc, "state": copy.deepcopy(student.state_dict()), "row": row}
        log(f"epoch {epoch + 1}/{cfg.optim.epochs}  loss {row['train_loss']:.4f}  train {row['train_acc']:.4f}  "
            f"val {val_acc:.4f}"
            + (f"  teacher-student ({sp.teacher_bn} stats) {100 * diagnostics['teacher_gap']:+.2f}"
               f"  high-bits-student {100 * diagnostics['high_gap']:+.2f}" if quantized else "")
            + (f"  teacher train {row['teacher_train_acc']:.4f}" if sp.teacher else ""))
        if out is not None:
            _write_history(out / "metrics.csv", history)
            atomic_torch_save({
                "format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "config": cfg.to_dict(),
                "model": student.state_dict(), "best_model": best["state"], "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "history": history, "fp_info": fp_info,
                "best": {k: v for k, v in best.items() if k != "state"}, "step_times": all_times,
                "rng": {"data": generator.get_state(), "teacher": teacher_gen.get_state()},
            }, ckpt_path)
        compiled = {"compile": compile_mode, "compile_s": round(compile_seconds() - compile_start, 2)}
        if callback is not None and epoch + 1 < cfg.optim.epochs:
            # val_acc is the selected (best so far) epoch's, the objective; epoch_val_acc this epoch's own.
            callback(dict(row, **_costs_now(cfg, student, best, example, fp_info, all_times, history, t_run),
                          **compiled, epoch_val_acc=val_acc))

    student.load_state_dict(best["state"])
    metrics = _costs_now(cfg, student, best, example, fp_info, all_times, history, t_run)
    metrics.update(compile=compile_mode, compile_s=round(compile_seconds() - compile_start, 2))
    # The test split is evaluated once, on the model the validation split chose.
    metrics["test_acc"], _ = evaluate(student, splits.test, device)
    if callback is not None:
        callback(dict(history[-1], **metrics, epoch_val_acc=history[-1]["val_acc"]))
    if out is not None:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log(f"result: {metrics['method']} W{metrics['w_bits']}A{metrics['a_bits']}: val {100 * metrics['val_acc']:.2f} %, "
        f"test {100 * metrics['test_acc']:.2f} % (float: {100 * metrics['fp_test_acc']:.2f} %), "
        f"avg bits {metrics['avg_w_bits']:.2f}/{metrics['avg_a_bits']:.2f} (w/a), {metrics['size_bytes'] / 1024:.1f} KiB, "
        f"{metrics['bitops'] / 1e6:.1f} M BitOps per image")
    return metrics


def _costs_now(cfg, model, best, example, fp_info, step_times, history, t_run) -> dict:
    """Metrics of the selected (best validation) epoch and the model's costs; test accuracy comes last."""
    costs = report_costs(model, example, cfg.cost_model)
    row = best["row"] or {}
    train_time_s = time.perf_counter() - t_run
    return {
        "method": cfg.speq.method,
        "w_bits": cfg.quant.w_bits if cfg.speq.method != "fp" else FULL_PRECISION,
        "a_bits": cfg.quant.a_bits if cfg.speq.method != "fp" else FULL_PRECISION,
        "val_acc": row.get("val_acc", float("nan")),
        **{key: row.get(key, float("nan")) for key in DIAGNOSTIC_COLUMNS},
        # Over every epoch so far: does the teacher lead the student through training?
        "teacher_gap_mean": _mean_of(history, "teacher_gap"),
        "high_gap_mean": _mean_of(history, "high_gap"),
        "best_epoch": best["epoch"],
        "epochs": len(history),
        **costs,
        "step_time_s": statistics.median(step_times) if step_times else float("nan"),
        "train_time_s": round(train_time_s, 3),
        "fp_val_acc": fp_info.get("fp_val_acc", float("nan")),
        "fp_test_acc": fp_info.get("fp_test_acc", float("nan")),
    }


def _mean_of(history: list[dict], key: str) -> float:
    values = [r[key] for r in history if key in r and math.isfinite(r[key])]
    return statistics.fmean(values) if values else float("nan")


def _write_history(path: Path, history: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def load_trained(run_dir: str | Path, splits: Splits | None = None) -> nn.Module:
    """The selected model of a finished run folder, rebuilt from its config and checkpoint.

    ``splits`` (the run's data, if already loaded) saves loading it again to learn its shapes.
    """
    run_dir = Path(run_dir)
    cfg = TrainConfig.load(run_dir / "config.yaml")
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    splits = splits if splits is not None else load_data(cfg)
    model = build_model(cfg, splits)
    if cfg.speq.method != "fp":
        quantize_for(cfg, model)
    _load_state(model, ckpt.get("best_model") or ckpt["model"], "checkpoint", str(run_dir / "checkpoint.pt"))
    return model.eval()

