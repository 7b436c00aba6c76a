"""Training: the full-precision phase (cached) and the quantized phase (QAT, KD or SPEQ).

Knows nothing of Ray or Optuna: the search layer calls :func:`run` with a callback.

- :mod:`~speq_search.train.model`: the device, the seeds, the data, the (quantized) model, its costs;
- :mod:`~speq_search.train.steps`: the optimiser, each method's training step, the epoch loop, evaluation;
- :mod:`~speq_search.train.fp`: the float model a run starts from, trained once and cached;
- :mod:`~speq_search.train.checkpoints`: checkpoints and ``metrics.csv``, written whole or not at all;
- :mod:`~speq_search.train.loop`: :func:`run`, a resumable run epoch by epoch, and :func:`load_trained`;
- :mod:`~speq_search.train.assignments`: a per-layer space's assignments (highest, lowest, drawn), applied in place;
- :mod:`~speq_search.train.supernet`: the one-shot supernet: :func:`train_supernet`, :func:`load_supernet`,
  :func:`evaluate_assignment`.
"""

from speq_search.train.assignments import (
    apply_assignment,
    assignment_quant,
    check_choices,
    highest,
    lowest,
    random_assignment,
)
from speq_search.train.checkpoints import CHECKPOINT_FORMAT, atomic_torch_save, load_checkpoint
from speq_search.train.fp import data_fingerprint, fp_cache_dir, fp_cache_key, full_precision_model
from speq_search.train.loop import load_trained, run, run_repeats, summarise_repeats
from speq_search.train.model import (
    build_model,
    init_weights,
    load_data,
    planned_costs,
    prepare_student,
    quantize_for,
    resolve_device,
    seed_everything,
)
from speq_search.train.steps import (
    DIAGNOSTIC_COLUMNS,
    EVAL_BATCH,
    READ_EVERY,
    TrainingDiverged,
    evaluate,
    make_optimizer,
    make_step,
    teacher_diagnostics,
    train_epoch,
)
from speq_search.train.supernet import (
    SUPERNET_FORMAT,
    SupernetTraining,
    evaluate_assignment,
    load_supernet,
    recalibrate_bn,
    train_supernet,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "DIAGNOSTIC_COLUMNS",
    "EVAL_BATCH",
    "READ_EVERY",
    "SUPERNET_FORMAT",
    "SupernetTraining",
    "TrainingDiverged",
    "apply_assignment",
    "assignment_quant",
    "atomic_torch_save",
    "build_model",
    "check_choices",
    "data_fingerprint",
    "evaluate",
    "evaluate_assignment",
    "fp_cache_dir",
    "fp_cache_key",
    "full_precision_model",
    "highest",
    "init_weights",
    "load_checkpoint",
    "load_data",
    "load_supernet",
    "load_trained",
    "lowest",
    "make_optimizer",
    "make_step",
    "planned_costs",
    "prepare_student",
    "quantize_for",
    "random_assignment",
    "recalibrate_bn",
    "resolve_device",
    "run",
    "run_repeats",
    "seed_everything",
    "summarise_repeats",
    "teacher_diagnostics",
    "train_epoch",
    "train_supernet",
]
