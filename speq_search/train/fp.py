"""The full-precision phase: the float model a quantized run starts from, trained once and cached."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from speq_search.compiling import cache_root, compiled_forward, resolve_config_compile
from speq_search.config import TrainConfig
from speq_search.data import Splits
from speq_search.train.checkpoints import CHECKPOINT_FORMAT, atomic_torch_save, load_checkpoint, load_state
from speq_search.train.model import build_model, seed_everything
from speq_search.train.steps import cosine_schedule, evaluate, make_optimizer, quantized_values_per_step, train_epoch


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


def full_precision_model(cfg: TrainConfig, splits: Splits, device: torch.device, log=print) -> tuple[nn.Module, dict]:
    """The trained float model ``cfg`` starts from: loaded, cached, or trained now and cached."""
    seed_everything(cfg.seed)
    model = build_model(cfg, splits).to(device)
    if cfg.fp_checkpoint:
        ckpt = load_checkpoint(cfg.fp_checkpoint, "fp_checkpoint")
        state = ckpt.get("state_dict") or ckpt.get("best_model") or ckpt.get("model")
        load_state(model, state, "fp_checkpoint", cfg.fp_checkpoint)
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
    scheduler = cosine_schedule(optimizer, steps)
    zero = torch.zeros((), device=device)
    mode = resolve_config_compile(cfg.compile, device, steps, quantized_values_per_step(cfg, model, splits, device))
    forward = compiled_forward(model, mode)
    if mode != "off":
        log(f"full-precision phase: compile {mode}")

    def step(x, y):
        logits = forward(x)
        ce = F.cross_entropy(logits, y)
        return ce, ce, zero, logits, None

    for epoch in range(cfg.optim.fp_epochs):
        train_epoch(model, splits, optimizer, scheduler, step, generator, cfg.data.batch_size, device,
               f"fp {epoch + 1}/{cfg.optim.fp_epochs}", cfg.progress)
