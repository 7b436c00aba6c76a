"""speq-search: find how few bits a network can run on, training it with SPEQ.

Public API (see README "Python API")::

    from speq_search import create_model, quantize_model, stochastic_precision, speq_loss
"""

import importlib
from typing import TYPE_CHECKING

# Names load on first use (PEP 562), so that `speq-search --help`, `spaces` and the numpy-only
# analysis modules do not import torch and scikit-learn.
_EXPORTS = {
    "DataConfig": ("speq_search.config", "DataConfig"),
    "ModelConfig": ("speq_search.config", "ModelConfig"),
    "OptimConfig": ("speq_search.config", "OptimConfig"),
    "QuantConfig": ("speq_search.config", "QuantConfig"),
    "SpeqConfig": ("speq_search.config", "SpeqConfig"),
    "TrainConfig": ("speq_search.config", "TrainConfig"),
    "Costs": ("speq_search.costs", "Costs"),
    "layer_costs": ("speq_search.costs", "layer_costs"),
    "model_costs": ("speq_search.costs", "model_costs"),
    "create_dataset": ("speq_search.data", "create_dataset"),
    "list_datasets": ("speq_search.data", "list_datasets"),
    "register_dataset": ("speq_search.data", "register_dataset"),
    "ConfigError": ("speq_search.errors", "ConfigError"),
    "export_onnx": ("speq_search.export", "export_onnx"),
    "export_run": ("speq_search.export", "export_run"),
    "verify_onnx": ("speq_search.export", "verify_onnx"),
    "create_model": ("speq_search.models", "create_model"),
    "list_models": ("speq_search.models", "list_models"),
    "load_plugins": ("speq_search.plugins", "load_plugins"),
    "register_model": ("speq_search.models", "register_model"),
    "ActQuantizer": ("speq_search.quant", "ActQuantizer"),
    "QuantConv2d": ("speq_search.quant", "QuantConv2d"),
    "QuantLinear": ("speq_search.quant", "QuantLinear"),
    "WeightQuantizer": ("speq_search.quant", "WeightQuantizer"),
    "act_quantizers": ("speq_search.quant", "act_quantizers"),
    "calibrating": ("speq_search.quant", "calibrating"),
    "layer_bits": ("speq_search.quant", "layer_bits"),
    "quantize_model": ("speq_search.quant", "quantize_model"),
    "distillation_loss": ("speq_search.speq", "distillation_loss"),
    "high_precision": ("speq_search.speq", "high_precision"),
    "speq_loss": ("speq_search.speq", "speq_loss"),
    "stochastic_precision": ("speq_search.speq", "stochastic_precision"),
    "teacher_logits": ("speq_search.speq", "teacher_logits"),
    "TrainingDiverged": ("speq_search.train", "TrainingDiverged"),
    "load_trained": ("speq_search.train", "load_trained"),
    "run_training": ("speq_search.train", "run"),
}

if TYPE_CHECKING:  # what static tools and IDEs see
    from speq_search.config import DataConfig, ModelConfig, OptimConfig, QuantConfig, SpeqConfig, TrainConfig
    from speq_search.costs import Costs, layer_costs, model_costs
    from speq_search.data import create_dataset, list_datasets, register_dataset
    from speq_search.errors import ConfigError
    from speq_search.export import export_onnx, export_run, verify_onnx
    from speq_search.models import create_model, list_models, register_model
    from speq_search.plugins import load_plugins
    from speq_search.quant import (
        ActQuantizer,
        QuantConv2d,
        QuantLinear,
        WeightQuantizer,
        act_quantizers,
        calibrating,
        layer_bits,
        quantize_model,
    )
    from speq_search.speq import distillation_loss, high_precision, speq_loss, stochastic_precision, teacher_logits
    from speq_search.train import TrainingDiverged, load_trained
    from speq_search.train import run as run_training


def __getattr__(name: str):
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'speq_search' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__version__ = "0.1.0"

__all__ = [
    "ActQuantizer",
    "ConfigError",
    "Costs",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "QuantConfig",
    "QuantConv2d",
    "QuantLinear",
    "SpeqConfig",
    "TrainConfig",
    "TrainingDiverged",
    "WeightQuantizer",
    "act_quantizers",
    "calibrating",
    "create_dataset",
    "create_model",
    "distillation_loss",
    "export_onnx",
    "export_run",
    "high_precision",
    "layer_bits",
    "layer_costs",
    "list_datasets",
    "list_models",
    "load_plugins",
    "load_trained",
    "model_costs",
    "quantize_model",
    "register_dataset",
    "register_model",
    "speq_loss",
    "stochastic_precision",
    "teacher_logits",
    "verify_onnx",
    "run_training",
]
