"""Datasets by name: ``create_dataset(name, data_dir=..., ...)`` returns in-memory splits.

Every data set here fits in memory as tensors, which on a CPU is much faster than a
DataLoader with workers. The validation split is carved from the training data with a fixed
seed, so the test split is never used to choose anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from speq_search.errors import ConfigError
from speq_search.registry import Registry


def _load_entry_points() -> None:
    from speq_search.plugins import load_entry_points  # installed packages' plugins, once per process

    load_entry_points()


# The split seed is fixed: every run, seed and trial sees the same train/val/test partition.
SPLIT_SEED = 0


@dataclass
class Split:
    """Images ``x`` (N, C, H, W, float32, normalised) and integer labels ``y`` (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Splits:
    """Train, validation and test splits plus what a model needs to know about them."""

    train: Split
    val: Split
    test: Split
    num_classes: int
    augment: bool = False  # random crop + flip on training batches (CIFAR-like images)

    @property
    def in_channels(self) -> int:
        return self.train.x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.x.shape[-1]


DATASETS: Registry[Callable[..., Splits]] = Registry("data set", "data.dataset", before_lookup=_load_entry_points)
"""Every data set by name: loaders ``fn(data_dir, download, val_fraction, **kwargs) -> Splits``."""


def register_dataset(name: str, description: str = ""):
    """Register a loader ``fn(data_dir, download, val_fraction, **kwargs) -> Splits``.

    ``description`` (one line, shown by ``speq-search datasets``) defaults to the first line of
    the loader's docstring, and may be left out when it has none."""
    return DATASETS.register(name, description=description)


def list_datasets() -> dict[str, str]:
    """``{name: one-line description}`` of every registered data set."""
    return DATASETS.describe()


def create_dataset(
    name: str,
    data_dir: str | None = None,
    download: bool = False,
    train_size: int | None = None,
    val_fraction: float = 0.1,
    **kwargs,
) -> Splits:
    """Load data set ``name``; ``train_size`` keeps a stratified, seeded training subset."""
    loader = DATASETS.get(name, "dataset").obj
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError("val_fraction", val_fraction, "a fraction between 0 and 1")
    splits = loader(data_dir=data_dir, download=download, val_fraction=val_fraction, **kwargs)
    if train_size is not None:
        splits.train = stratified_subset(splits.train, train_size, "train_size")
    return splits


def stratified_subset(split: Split, size: int, field: str) -> Split:
    """A stratified subset of ``size`` examples, the same for every run."""
    n = len(split)
    n_classes = int(split.y.max()) + 1
    if isinstance(size, bool) or not isinstance(size, int) or not n_classes * 2 <= size <= n:
        raise ConfigError(field, size, f"an integer from {n_classes * 2} to {n} (the training split's size)")
    if size == n:
        return split
    idx, _ = train_test_split(np.arange(n), train_size=size, stratify=split.y.numpy(), random_state=SPLIT_SEED)
    idx = torch.as_tensor(np.sort(idx))
    return Split(split.x[idx], split.y[idx])


def split_off(x: torch.Tensor, y: torch.Tensor, fraction: float) -> tuple[Split, Split]:
    """Stratified, fixed-seed split into (rest, held-out ``fraction``)."""
    idx = np.arange(len(y))
    try:
        keep, held = train_test_split(idx, test_size=fraction, stratify=y.numpy(), random_state=SPLIT_SEED)
    except ValueError:  # too few examples for one of each class on both sides
        raise ConfigError("val_fraction", fraction, f"a fraction that leaves every class in both parts of "
                          f"{len(y)} examples (the data set is too small for it)") from None
    keep, held = torch.as_tensor(np.sort(keep)), torch.as_tensor(np.sort(held))
    return Split(x[keep], y[keep]), Split(x[held], y[held])


def normalise(splits: Splits, mean: torch.Tensor | float, std: torch.Tensor | float) -> Splits:
    """Normalise every split in place with the given (per channel or scalar) statistics."""
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
    for s in (splits.train, splits.val, splits.test):
        s.x = (s.x - mean) / std
    return splits


def iterate_batches(
    split: Split,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment: bool = False,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``split``; shuffling and augmentation draw only from ``generator``."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n > batch_size else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        x, y = split.x[idx], split.y[idx]
        if augment:
            x = random_crop_flip(x, generator)
        yield x, y


def random_crop_flip(x: torch.Tensor, generator: torch.Generator | None, pad: int = 4) -> torch.Tensor:
    """Standard CIFAR augmentation: pad by ``pad``, random crop back, random horizontal flip."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (dy[:, None] + torch.arange(h)[None, :])  # (n, h)
    cols = (dx[:, None] + torch.arange(w)[None, :])  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()
