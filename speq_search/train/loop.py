"""A training run: the float model, then the quantized phase, epoch by epoch, resumable."""

from __future__ import annotations

import copy
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from speq_search.compiling import compile_seconds, compiled_forward, resolve_config_compile, use_compile_cache
from speq_search.config import FULL_PRECISION, TrainConfig
from speq_search.costs import report_costs
from speq_search.data import Splits
from speq_search.errors import ConfigError
from speq_search.quant.scaling import check_weight_quantizer
from speq_search.speq import kd_factor
from speq_search.train.checkpoints import CHECKPOINT_FORMAT, atomic_torch_save, load_checkpoint, load_state, write_history
from speq_search.train.fp import full_precision_model
from speq_search.train.model import (
    build_model,
    init_weights,
    load_data,
    planned_costs,
    prepare_student,
    quantize_for,
    resolve_device,
    seed_everything,
)
from speq_search.train.steps import (
    DIAGNOSTIC_COLUMNS,
    cosine_schedule,
    evaluate,
    make_optimizer,
    make_step,
    quantized_values_per_step,
    teacher_diagnostics,
    train_epoch,
)


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
    resolve_config_compile(cfg.compile, device, 0)  # a compile mode this machine cannot run fails before any work
    check_weight_quantizer(cfg.quant.weight_quantizer)  # a bad name fails even where nothing is quantized (fp)
    compile_start = compile_seconds()
    splits = load_data(cfg)  # bad data settings fail before anything is written
    init_state = None
    if not resume:
        planned_costs(cfg, splits)  # so do a model that does not build or quantize, and a bad cost table
        init_state = init_weights(cfg, splits)  # and an init_checkpoint that does not load
    out = Path(out_dir) if out_dir is not None else None
    state = open_run_folder(cfg, out, resume)
    training = _Training(cfg, splits, device, state, log, compile_start, out, init_state)
    for epoch in range(training.start_epoch, cfg.optim.epochs):
        row = training.epoch(epoch)
        if out is not None:
            training.save(out, epoch)
        if callback is not None and epoch + 1 < cfg.optim.epochs:
            # val_acc is the selected (best so far) epoch's, the objective; epoch_val_acc this epoch's own.
            callback(dict(row, **training.metrics(), epoch_val_acc=row["val_acc"]))
    metrics = training.finish()
    if callback is not None:
        callback(dict(training.history[-1], **metrics, epoch_val_acc=training.history[-1]["val_acc"]))
    if out is not None:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    bits = f"W{metrics['w_bits']}A{metrics['a_bits']}" if "w_bits" in metrics else "per-layer bits"
    log(f"result: {metrics['method']} {bits}: val {100 * metrics['val_acc']:.2f} %, "
        f"test {100 * metrics['test_acc']:.2f} % (float: {100 * metrics['fp_test_acc']:.2f} %), "
        f"avg bits {metrics['avg_w_bits']:.2f}/{metrics['avg_a_bits']:.2f} (w/a), {metrics['size_bytes'] / 1024:.1f} KiB, "
        f"{metrics['bitops'] / 1e6:.1f} M BitOps per image")
    return metrics


REPEAT_FOLDER = "repeat-{}"  # a repeated run's seeds, each a run folder of its own inside it


def run_repeats(
    cfg: TrainConfig,
    out_dir: str | Path,
    repeats: int,
    resume: bool = False,
    callback: Callable[[dict], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train ``cfg`` ``repeats`` times, with seeds ``cfg.seed``, ``cfg.seed + 1``, ...; return the
    mean of the runs' metrics, with the spread of the accuracies (:func:`summarise_repeats`).

    Each seed is a run folder of its own, ``out_dir/repeat-<k>`` (a finished one is read, an
    interrupted one resumed from its checkpoint), and ``out_dir/metrics.json`` holds the summary.
    ``callback`` sees every epoch of every seed, numbered on from one seed to the next (epoch
    ``k * epochs + e``), and, at the last epoch of the last seed, the summary. One repeat is
    :func:`run` itself (``resume`` as there).
    """
    if repeats == 1:
        return run(cfg, out_dir, resume=resume, callback=callback, log=log)
    out, epochs = Path(out_dir), cfg.optim.epochs
    results: list[dict] = []
    for k in range(repeats):
        folder = out / REPEAT_FOLDER.format(k)
        if (folder / "metrics.json").exists():  # a seed finished before an interruption
            results.append(json.loads((folder / "metrics.json").read_text()))
            continue

        def report(row: dict, k: int = k) -> None:
            last = k == repeats - 1 and row["epoch"] >= epochs and "test_acc" in row
            merged = dict(row, **summarise_repeats([*results, row])) if last else row
            callback(dict(merged, epoch=k * epochs + row["epoch"]))

        results.append(run(cfg.replace(seed=cfg.seed + k), folder, resume=(folder / "checkpoint.pt").exists(),
                           callback=report if callback is not None else None, log=log))
    metrics = summarise_repeats(results)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log = log or (lambda msg: print(msg, file=sys.stderr))
    log(f"result over {repeats} seeds: val {100 * metrics['val_acc']:.2f} % (sd {100 * metrics['val_acc_sd']:.2f}), "
        f"test {100 * metrics['test_acc']:.2f} % (sd {100 * metrics['test_acc_sd']:.2f})")
    return metrics


def summarise_repeats(results: list[dict]) -> dict:
    """The metrics of runs of one configuration with different seeds: numbers averaged (what the
    search optimises), the accuracies' standard deviations (``val_acc_sd``, ``test_acc_sd``), each
    seed's accuracies (``val_acc_seeds``: ``;``-separated) and ``repeats``; text from the first run."""
    out: dict = {}
    for key, value in results[0].items():
        values = [r.get(key) for r in results]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            out[key] = value
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            mean = statistics.fmean(values)
            out[key] = int(mean) if isinstance(value, int) and all(v == value for v in values) else mean
    for acc in ("val_acc", "test_acc"):
        values = [float(r[acc]) for r in results if acc in r]
        if values:
            out[f"{acc}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
            out[f"{acc}_seeds"] = ";".join(f"{v:.6g}" for v in values)
    out["repeats"] = len(results)
    return out


def open_run_folder(cfg: TrainConfig, out: Path | None, resume: bool) -> dict | None:
    """Check the run folder (new, or one to resume) and write ``config.yaml``; the checkpoint to resume from."""
    if out is None:
        return None
    ckpt_path = out / "checkpoint.pt"
    state = None
    if resume:
        if not ckpt_path.exists():
            raise ConfigError("resume", str(out), "a run folder holding checkpoint.pt")
        state = load_checkpoint(ckpt_path, "resume")
    elif (out / "metrics.json").exists() or ckpt_path.exists():
        raise ConfigError("out", str(out), "a new folder (this one holds a run: resume=True continues it)")
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    return state


class _Training:
    """The quantized phase of one run: the models, the optimiser, the random streams, the
    history and the best epoch, made new or restored from a checkpoint."""

    def __init__(self, cfg: TrainConfig, splits: Splits, device: torch.device, state: dict | None, log,
                 compile_start: float, out: Path | None = None, init_state: dict | None = None) -> None:
        self.cfg, self.splits, self.device, self.log = cfg, splits, device, log
        sp = cfg.speq
        needs_fp = state is None or sp.teacher == "fp"
        self.fp_model, self.fp_info = (full_precision_model(cfg, splits, device, log) if needs_fp
                                       else (None, state["fp_info"]))
        if state is None:
            self.student = prepare_student(cfg, self.fp_model, splits, device, init_state)
        else:
            seed_everything(cfg.seed)
            self.student = quantize_for(cfg, build_model(cfg, splits))
            load_state(self.student, state["model"], "resume", str(out / "checkpoint.pt"))
            self.student.to(device)
        if self.fp_model is not None:
            self.fp_model.eval()

        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.teacher_gen = torch.Generator().manual_seed(cfg.seed + 2)
        self.optimizer = make_optimizer(self.student, cfg, cfg.optim.lr)
        self.total_steps = cfg.optim.epochs * max(len(splits.train) // cfg.data.batch_size, 1)
        self.scheduler = cosine_schedule(self.optimizer, self.total_steps)
        self.history: list[dict] = []
        self.best = {"epoch": 0, "val_acc": -1.0, "state": None, "row": None}
        self.start_epoch = 0
        self.step_times: list[float] = []
        if state is not None:
            self._restore(state)
            log(f"resuming {out} after epoch {self.start_epoch}")
        self.compile_start = compile_start
        self.compile_mode = self._compile_mode()
        forward = compiled_forward(self.student, self.compile_mode)
        if self.compile_mode != "off":
            log(f"{sp.method}: compile {self.compile_mode} ({self.total_steps} steps, compiled artefacts in "
                f"{use_compile_cache()})")
        self.step = make_step(cfg, self.student, self.fp_model, self.teacher_gen, device, forward, self.kd_scale)
        self.example = splits.train.x[:1].to(device)
        self.t_run = time.perf_counter()

    def _restore(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["rng"]["data"])
        self.teacher_gen.set_state(state["rng"]["teacher"])
        self.history = list(state["history"])
        self.best = dict(state["best"], state=state["best_model"])
        self.start_epoch = int(state["epoch"])
        self.step_times = list(state.get("step_times", []))

    def _compile_mode(self) -> str:
        mode = resolve_config_compile(self.cfg.compile, self.device, self.total_steps,
                               quantized_values_per_step(self.cfg, self.student, self.splits, self.device))
        if mode == "on":
            # A worker process runs trial after trial: start each whole-model compile from an empty
            # in-memory cache (the on-disk one makes it quick), so graphs of earlier trials' models
            # never fill dynamo's per-function limit and send this one back to eager. The reset also
            # zeroes dynamo's compile clock: keep this run's seconds so far.
            so_far = compile_seconds() - self.compile_start
            torch._dynamo.reset()
            self.compile_start = compile_seconds() - so_far
        return mode

    def kd_scale(self) -> float:
        """``speq.kd_schedule`` at this step (the scheduler counts steps, and is restored on resume)."""
        return kd_factor(self.cfg.speq.kd_schedule, self.scheduler.last_epoch / max(self.total_steps - 1, 1))

    def epoch(self, epoch: int) -> dict:
        """Train one epoch, evaluate it, keep it if it is the best so far; its row of metrics.csv."""
        cfg, sp = self.cfg, self.cfg.speq
        t0 = time.perf_counter()
        totals, times = train_epoch(self.student, self.splits, self.optimizer, self.scheduler, self.step,
                                    self.generator, cfg.data.batch_size, self.device,
                                    f"{sp.method} {epoch + 1}/{cfg.optim.epochs}", cfg.progress)
        self.step_times.extend(times)
        val_acc, val_loss = evaluate(self.student, self.splits.val, self.device)
        diagnostics = dict.fromkeys(DIAGNOSTIC_COLUMNS, float("nan"))
        if cfg.quantized:
            diagnostics = teacher_diagnostics(self.student, self.splits.val, self.device, cfg, val_acc)
        n = max(totals["n"], 1)
        row = {
            "epoch": epoch + 1,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": totals["loss"] / n,
            "train_ce": totals["ce"] / n,
            "train_kd": totals["kd"] / n,
            "train_acc": totals["correct"] / n,
            "teacher_train_acc": totals["teacher_correct"] / n if sp.teacher else float("nan"),
            "kd_weight": sp.kd_weight * self.kd_scale() if sp.teacher else 0.0,  # for the next step
            "val_acc": val_acc,
            "val_loss": val_loss,
            **diagnostics,
            "epoch_time_s": time.perf_counter() - t0,
            "step_time_s": statistics.median(times) if times else float("nan"),
        }
        self.history.append(row)
        if val_acc > self.best["val_acc"]:  # ties keep the earlier epoch; the test split never chooses
            self.best = {"epoch": epoch + 1, "val_acc": val_acc, "state": copy.deepcopy(self.student.state_dict()),
                         "row": row}
        self.log(f"epoch {epoch + 1}/{cfg.optim.epochs}  loss {row['train_loss']:.4f}  train {row['train_acc']:.4f}  "
                 f"val {val_acc:.4f}"
                 + (f"  teacher-student ({sp.teacher_bn} stats) {100 * diagnostics['teacher_gap']:+.2f}"
                    f"  high-bits-student {100 * diagnostics['high_gap']:+.2f}" if cfg.quantized else "")
                 + (f"  teacher train {row['teacher_train_acc']:.4f}" if sp.teacher else ""))
        return row

    def save(self, out: Path, epoch: int) -> None:
        """``metrics.csv`` and a checkpoint that resumes after ``epoch``."""
        write_history(out / "metrics.csv", self.history)
        atomic_torch_save({
            "format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "config": self.cfg.to_dict(),
            "model": self.student.state_dict(), "best_model": self.best["state"],
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "history": self.history, "fp_info": self.fp_info,
            "best": {k: v for k, v in self.best.items() if k != "state"}, "step_times": self.step_times,
            "rng": {"data": self.generator.get_state(), "teacher": self.teacher_gen.get_state()},
        }, out / "checkpoint.pt")

    def metrics(self) -> dict:
        """The selected (best validation) epoch's metrics and the model's costs; test accuracy comes last."""
        cfg, row = self.cfg, self.best["row"] or {}
        out = {"method": cfg.speq.method}
        if not cfg.quantized:
            out.update(w_bits=FULL_PRECISION, a_bits=FULL_PRECISION)
        elif not cfg.quant.group_bits and not cfg.quant.overrides:
            # Uniform bits only: a per-layer or mixed run's bits are its averages (avg_w_bits, layer_bits).
            out.update(w_bits=cfg.quant.w_bits, a_bits=cfg.quant.a_bits)
        out.update({
            "val_acc": row.get("val_acc", float("nan")),
            **{key: row.get(key, float("nan")) for key in DIAGNOSTIC_COLUMNS},
            # Over every epoch so far: does the teacher lead the student through training?
            "teacher_gap_mean": _mean_of(self.history, "teacher_gap"),
            "high_gap_mean": _mean_of(self.history, "high_gap"),
            "best_epoch": self.best["epoch"],
            "epochs": len(self.history),
            **report_costs(self.student, self.example, cfg.cost_model),
            "step_time_s": statistics.median(self.step_times) if self.step_times else float("nan"),
            "train_time_s": round(time.perf_counter() - self.t_run, 3),
            # The split sizes: how sure an accuracy is (speq_search.analysis.stats).
            "val_images": len(self.splits.val),
            "test_images": len(self.splits.test),
            "fp_val_acc": self.fp_info.get("fp_val_acc", float("nan")),
            "fp_test_acc": self.fp_info.get("fp_test_acc", float("nan")),
            "compile": self.compile_mode,
            "compile_s": round(compile_seconds() - self.compile_start, 2),
        })
        return out

    def finish(self) -> dict:
        """The selected epoch's model, its metrics, and its test accuracy (the test split's one use)."""
        self.student.load_state_dict(self.best["state"])
        metrics = self.metrics()
        metrics["test_acc"], _ = evaluate(self.student, self.splits.test, self.device)
        return metrics


def _mean_of(history: list[dict], key: str) -> float:
    values = [r[key] for r in history if key in r and math.isfinite(r[key])]
    return statistics.fmean(values) if values else float("nan")


def load_trained(run_dir: str | Path, splits: Splits | None = None) -> nn.Module:
    """The selected model of a finished run folder, rebuilt from its config and checkpoint.

    ``splits`` (the run's data, if already loaded) saves loading it again to learn its shapes.
    """
    run_dir = Path(run_dir)
    cfg = TrainConfig.load(run_dir / "config.yaml")
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    splits = splits if splits is not None else load_data(cfg)
    model = quantize_for(cfg, build_model(cfg, splits))
    load_state(model, ckpt.get("best_model") or ckpt["model"], "checkpoint", str(run_dir / "checkpoint.pt"))
    return model.eval()
