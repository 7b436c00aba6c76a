"""A run's data and model: the device, the seeds, the splits, the (quantized) network, its costs."""

from __future__ import annotations

import copy
import random

import numpy as np
import torch
from torch import nn

from speq_search.config import TrainConfig
from speq_search.costs import report_costs
from speq_search.data import Splits, create_dataset
from speq_search.errors import ConfigError
from speq_search.models import build_model as build_from_config
from speq_search.plugins import load_plugins
from speq_search.quant import calibrating, quantize_model
from speq_search.train.checkpoints import load_checkpoint, load_state


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
    """The data of ``cfg`` (the fixed split, the training subset); its plugins are loaded first."""
    load_plugins(cfg.plugins)
    d = cfg.data
    return create_dataset(d.dataset, data_dir=d.data_dir, download=d.download, train_size=d.train_size,
                          val_fraction=d.val_fraction)


def build_model(cfg: TrainConfig, splits: Splits) -> nn.Module:
    """The float model of ``cfg``, shaped for ``splits`` (its plugins loaded first)."""
    load_plugins(cfg.plugins)
    return build_from_config(cfg.model, num_classes=splits.num_classes, in_channels=splits.in_channels,
                             input_size=splits.image_size)


def quantize_for(cfg: TrainConfig, model: nn.Module) -> nn.Module:
    """``model`` quantized in place as ``cfg.quant`` says, unless the method is ``fp``."""
    return quantize_model(model, cfg.quant) if cfg.quantized else model


def planned_costs(cfg: TrainConfig, splits: Splits | None = None) -> dict:
    """The costs a run of ``cfg`` will report, without training: budgets are checked with these.
    A model that does not build or quantize, or a bad cost table, fails here."""
    splits = splits if splits is not None else load_data(cfg)
    model = quantize_for(cfg, build_model(cfg, splits))
    return report_costs(model, splits.train.x[:1], cfg.cost_model)


def init_weights(cfg: TrainConfig, splits: Splits) -> dict | None:
    """The state dict ``cfg.init_checkpoint`` holds (``None`` without one), checked against the
    model ``cfg`` builds: a missing or corrupt file, or the state of another model or shape, is a
    one-line error naming ``init_checkpoint``. Reads a ``supernet.pt`` or a run's ``checkpoint.pt``
    (its selected model)."""
    if not cfg.init_checkpoint:
        return None
    ckpt = load_checkpoint(cfg.init_checkpoint, "init_checkpoint")
    state = ckpt.get("best_model") or ckpt.get("model") or ckpt.get("state_dict")
    load_state(quantize_for(cfg, build_model(cfg, splits)), state, "init_checkpoint", cfg.init_checkpoint)
    return state


def prepare_student(cfg: TrainConfig, fp_model: nn.Module, splits: Splits, device: torch.device,
                    init_state: dict | None = None) -> nn.Module:
    """A copy of the float model, quantized and calibrated (``fp`` method: just the copy); with
    ``init_state`` (:func:`init_weights`) quantized and loaded from it instead of calibrated."""
    student = copy.deepcopy(fp_model)
    if not cfg.quantized:
        return student
    quantize_for(cfg, student).to(device)
    if init_state is not None:
        load_state(student, init_state, "init_checkpoint", str(cfg.init_checkpoint))
        return student
    student.train()
    with calibrating(student):
        # Calibrate on a fixed slice of training data: the run's RNG streams stay untouched.
        x = splits.train.x[: max(cfg.data.batch_size, 256)].to(device)
        student(x)
    return student
