"""speq-search: find how few bits a network can run on, training it with SPEQ.

Public API (see README "Python API")::

    from speq_search import create_model, quantize_model, stochastic_precision, speq_loss
"""

from speq_search.config import DataConfig, ModelConfig, OptimConfig, QuantConfig, SpeqConfig, TrainConfig
from speq_search.costs import Costs, layer_costs, model_costs
from speq_search.data import create_dataset, list_datasets, register_dataset
from speq_search.errors import ConfigError
from speq_search.models import create_model, list_models, register_model
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
    "high_precision",
    "layer_bits",
    "layer_costs",
    "list_datasets",
    "list_models",
    "load_trained",
    "model_costs",
    "quantize_model",
    "register_dataset",
    "register_model",
    "speq_loss",
    "stochastic_precision",
    "teacher_logits",
    "run_training",
]
