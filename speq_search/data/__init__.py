"""Data set registry: ``create_dataset(name, data_dir=..., train_size=...)``."""

from speq_search.data import builtin  # noqa: F401  (registers the data sets)
from speq_search.data._registry import (
    Split,
    Splits,
    create_dataset,
    iterate_batches,
    list_datasets,
    register_dataset,
)

__all__ = ["Split", "Splits", "create_dataset", "iterate_batches", "list_datasets", "register_dataset"]
