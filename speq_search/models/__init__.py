"""Model registry: ``create_model(name, num_classes=..., in_channels=..., width=...)``."""

from speq_search.models import mobilenet, resnet, small  # noqa: F401  (registers the models)
from speq_search.models._registry import (
    Dim,
    build_model,
    check_model_name,
    create_model,
    declared_dims,
    list_models,
    model_dims,
    register_model,
)

__all__ = ["Dim", "build_model", "check_model_name", "create_model", "declared_dims", "list_models", "model_dims",
           "register_model"]
