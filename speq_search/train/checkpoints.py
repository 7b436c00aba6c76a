"""Checkpoints: written whole or not at all, read with one-line errors, and a run's history."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speq_search.errors import ConfigError
from speq_search.files import atomic_write

CHECKPOINT_FORMAT = "speq-search-checkpoint/1"


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` that never leaves half a checkpoint (:func:`speq_search.files.atomic_write`)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


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


def load_state(model: nn.Module, state: dict, field: str, path: str) -> None:
    """``model.load_state_dict(state)`` with a one-line error naming ``field`` and ``path``."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0][:160]
        raise ConfigError(field, path, f"a checkpoint of this model and width ({first})") from None


def write_history(path: Path, history: list[dict]) -> None:
    """``metrics.csv``: a row per epoch."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)

    atomic_write(path, write)
