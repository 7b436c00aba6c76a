"""Model registry: ``create_model(name, num_classes=..., in_channels=..., width=...)``."""

from speq_search.models import mobilenet, resnet, small  # noqa: F401  (registers the models)
from speq_search.models._registry import build_model, check_model_name, create_model, list_models, register_model

__all__ = ["build_model", "check_model_name", "create_model", "list_models", "register_model"]
