from __future__ import annotations

import os

# Ray reads this when it is first imported: a single-node local instance, and the test clusters, then
# bind every server to 127.0.0.1 (tests send traffic to loopback only).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

from speq_search.config import TrainConfig  # noqa: E402


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
