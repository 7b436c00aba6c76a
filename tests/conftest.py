from __future__ import annotations

import pytest
import torch

from speq_search.config import TrainConfig


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Full-precision models are cached per test session, never in the user's home."""
    monkeypatch.setenv("SPEQ_SEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.manual_seed(0)


@pytest.fixture
def tiny_cfg() -> TrainConfig:
    """A seconds-long run on digits."""
    return TrainConfig(progress=False).replace(**{
        "optim.epochs": 1, "optim.fp_epochs": 2, "model.width": 0.5, "quant.w_bits": 2, "quant.a_bits": 2,
    })
