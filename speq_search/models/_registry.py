"""Models by name: ``@register_model("name")`` on a builder, ``create_model(name, ...)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

from speq_search.errors import ConfigError
from speq_search.registry import Registry

if TYPE_CHECKING:
    from speq_search.config import ModelConfig


def _load_entry_points() -> None:
    from speq_search.plugins import load_entry_points  # installed packages' plugins, once per process

    load_entry_points()


MODELS: Registry[Callable[..., nn.Module]] = Registry("model", "model.name", before_lookup=_load_entry_points)
"""Every model by name: builders ``fn(num_classes, in_channels, width, **kwargs) -> nn.Module``."""


def register_model(name: str, description: str = ""):
    """Register a builder ``fn(num_classes, in_channels, width, **kwargs) -> nn.Module``.

    ``description`` (one line, shown by ``speq-search models``) defaults to the first line of
    the builder's docstring, and may be left out when it has none."""
    return MODELS.register(name, description=description)


def list_models() -> dict[str, str]:
    """``{name: one-line description}`` of every registered model."""
    return MODELS.describe()


def create_model(name: str, num_classes: int = 10, in_channels: int = 1, width: float = 1.0, **kwargs) -> nn.Module:
    """Build the model registered as ``name``; an unknown name lists the known ones."""
    builder = MODELS.get(name, "model").obj
    if not (isinstance(width, (int, float)) and 0 < width <= 16):
        raise ConfigError("width", width, "a multiplier > 0 and <= 16")
    try:
        return builder(num_classes=num_classes, in_channels=in_channels, width=float(width), **kwargs)
    except TypeError as err:  # an unknown architecture keyword
        raise ConfigError(f"model.{name}", kwargs, f"keywords the builder takes ({err})") from None


def check_model_name(name: str) -> str:
    """``name`` if a model is registered under it, else an error naming ``model.name``."""
    return MODELS.check(name)


def build_model(cfg: ModelConfig, num_classes: int = 10, in_channels: int = 1,
                input_size: int | None = None) -> nn.Module:
    """The model ``cfg`` describes (a :class:`~speq_search.config.ModelConfig`), for this data's
    shape: the name is looked up here, where the model is built, and an unknown one is an error
    naming ``model.name``. ``input_size`` goes to builders that take it."""
    check_model_name(cfg.name)
    kwargs = dict(cfg.kwargs)
    if input_size is not None and "input_size" in inspect.signature(MODELS.get(cfg.name).obj).parameters:
        kwargs.setdefault("input_size", input_size)
    return create_model(cfg.name, num_classes=num_classes, in_channels=in_channels, width=cfg.width, **kwargs)


def scaled(channels: int, width: float, minimum: int = 4) -> int:
    """Channel count times ``width``, rounded, never below ``minimum``."""
    return max(minimum, int(round(channels * width)))
