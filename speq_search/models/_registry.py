"""Models by name: ``@register_model("name", ...)`` on a builder, ``create_model(name, ...)``.

A registration also records what the model is (timm's pretrained-config pattern): its native
input (``in_channels``, ``input_size``) and its searchable architecture dimensions (``dims``,
:class:`Dim`), so a space's ``depth`` or ``hidden`` means what the model says it means.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from speq_search.errors import ConfigError
from speq_search.registry import Registry

if TYPE_CHECKING:
    from speq_search.config import ModelConfig


def _load_entry_points() -> None:
    from speq_search.plugins import load_entry_points  # installed packages' plugins, once per process

    load_entry_points()


MODELS: Registry[Callable[..., nn.Module]] = Registry("model", "model.name", before_lookup=_load_entry_points)
"""Every model by name: builders ``fn(num_classes, in_channels, width, **kwargs) -> nn.Module``;
each entry's ``info`` holds ``in_channels``, ``input_size`` and ``dims``."""

DIM_FORMS = ("value", "per_stage", "sizes")


@dataclass(frozen=True)
class Dim:
    """A searchable architecture dimension: the builder keyword a searched value sets, and how.

    ``form`` turns a space's value (a scalar: Optuna's choices are scalars) into the keyword's:

    - ``"value"``: as given (mobilenetv2's ``expansion: 6``);
    - ``"per_stage"``: the value for each of ``stages`` stages (resnet20's ``depth: 2`` sets
      ``blocks: [2, 2, 2]``);
    - ``"sizes"``: an integer or integers joined by ``-`` (mlp's ``hidden: "256-128"`` sets
      ``hidden: [256, 128]``).
    """

    kwarg: str
    form: str = "value"
    stages: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.kwarg, str) or not self.kwarg.isidentifier():
            raise ConfigError("Dim.kwarg", self.kwarg, "the name of a keyword the builder takes")
        if self.form not in DIM_FORMS:
            raise ConfigError("Dim.form", self.form, " | ".join(DIM_FORMS))
        if isinstance(self.stages, bool) or not isinstance(self.stages, int) or self.stages < 1:
            raise ConfigError("Dim.stages", self.stages, "an integer >= 1 (the number of stages)")

    def builder_value(self, value: Any) -> Any:
        """The builder keyword's value for a searched ``value``."""
        if self.form == "per_stage":
            return [value] * self.stages
        if self.form == "sizes":
            return _sizes(value)
        return value


def _sizes(value: Any) -> list[int]:
    """``"256-128"`` or ``256`` -> ``[256, 128]`` / ``[256]``."""
    if isinstance(value, bool):
        raise ConfigError("value", value, "an integer or sizes joined by '-', e.g. 256-128")
    if isinstance(value, int):
        return [value]
    try:
        return [int(v) for v in str(value).split("-")]
    except ValueError:
        raise ConfigError("value", value, "an integer or sizes joined by '-', e.g. 256-128") from None


def _positive(name: str, value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"register_model {name}", value, "an integer >= 1, or None")
    return value


def register_model(name: str, description: str = "", *, in_channels: int | None = None,
                   input_size: int | None = None, dims: Mapping[str, Dim | str] | None = None):
    """Register a builder ``fn(num_classes, in_channels, width, **kwargs) -> nn.Module``.

    - ``description`` (one line, shown by ``speq-search models``) defaults to the first line of
      the builder's docstring, and may be left out when it has none;
    - ``in_channels`` and ``input_size`` (the image side) are the model's native input: what
      :func:`create_model` and :func:`build_model` use when no data says otherwise (a space is
      checked by building its model before any data is read);
    - ``dims`` names the model's searchable architecture dimensions: ``{name: Dim}`` (a plain
      string is ``Dim(kwarg)``, the value as given), e.g. ``{"depth": Dim("blocks", "per_stage",
      stages=3)}``. A space searches them by name (``params: {depth: ...}``); a dimension the
      space's model does not declare is an error naming the ones it does. A dimension named
      like a config short name (``width``, ``w_bits``...) is shadowed by it.

    What depends on the built network stays on the module: a model whose layers take inputs
    that can be negative lists them as ``signed_input_layers`` (layer names, as
    ``named_modules`` gives them), and :func:`~speq_search.quant.quantize_model` gives those
    layers (and the first) a signed activation quantizer.
    """
    checked = {}
    for dim_name, dim in (dims or {}).items():
        if not isinstance(dim_name, str) or not dim_name.isidentifier():
            raise ConfigError(f"register_model {name} dims", dim_name, "a dimension name (an identifier)")
        checked[dim_name] = Dim(dim) if isinstance(dim, str) else dim
        if not isinstance(checked[dim_name], Dim):
            raise ConfigError(f"register_model {name} dims.{dim_name}", dim, "a Dim or a builder keyword's name")
    return MODELS.register(name, description=description, in_channels=_positive("in_channels", in_channels),
                           input_size=_positive("input_size", input_size), dims=checked)


def model_dims(name: str) -> dict[str, Dim]:
    """The architecture dimensions the model registered as ``name`` declares (unknown name: an error)."""
    return dict(MODELS.get(name).info.get("dims", {}))


def declared_dims() -> dict[str, tuple[str, ...]]:
    """``{dimension: the models that declare it}`` over every registered model, sorted by dimension."""
    out: dict[str, list[str]] = {}
    for entry in MODELS:
        for dim in entry.info.get("dims", {}):
            out.setdefault(dim, []).append(entry.name)
    return {dim: tuple(models) for dim, models in sorted(out.items())}


def list_models() -> dict[str, str]:
    """``{name: one-line description}`` of every registered model."""
    return MODELS.describe()


def create_model(name: str, num_classes: int = 10, in_channels: int | None = None, width: float = 1.0,
                 **kwargs) -> nn.Module:
    """Build the model registered as ``name``; an unknown name lists the known ones.

    ``in_channels`` defaults to the model's registered one (else 1)."""
    entry = MODELS.get(name, "model")
    builder = entry.obj
    if in_channels is None:
        in_channels = entry.info.get("in_channels") or 1
    if not (isinstance(width, (int, float)) and 0 < width <= 16):
        raise ConfigError("width", width, "a multiplier > 0 and <= 16")
    try:
        return builder(num_classes=num_classes, in_channels=in_channels, width=float(width), **kwargs)
    except TypeError as err:  # an unknown architecture keyword
        raise ConfigError(f"model.{name}", kwargs, f"keywords the builder takes ({err})") from None


def check_model_name(name: str) -> str:
    """``name`` if a model is registered under it, else an error naming ``model.name``."""
    return MODELS.check(name)


def build_model(cfg: ModelConfig, num_classes: int = 10, in_channels: int | None = None,
                input_size: int | None = None) -> nn.Module:
    """The model ``cfg`` describes (a :class:`~speq_search.config.ModelConfig`), for this data's
    shape: the name is looked up here, where the model is built, and an unknown one is an error
    naming ``model.name``. ``input_size`` goes to builders that take it; without a shape, the
    model's registered ``in_channels`` and ``input_size`` are used."""
    entry = MODELS.get(cfg.name)
    kwargs = dict(cfg.kwargs)
    input_size = input_size if input_size is not None else entry.info.get("input_size")
    if input_size is not None and "input_size" in inspect.signature(entry.obj).parameters:
        kwargs.setdefault("input_size", input_size)
    return create_model(cfg.name, num_classes=num_classes, in_channels=in_channels, width=cfg.width, **kwargs)


def scaled(channels: int, width: float, minimum: int = 4) -> int:
    """Channel count times ``width``, rounded, never below ``minimum``."""
    return max(minimum, int(round(channels * width)))
