"""Search spaces: what a search varies, what it optimises, how it runs. No Ray here.

- :mod:`~speq_search.space.model`: the checked space (:class:`SearchSpec` and its parts), frozen;
- :mod:`~speq_search.space.names`: short names, architecture dimensions and per-layer groups, and the
  config fields they set (the ``train`` command's flags come from the same table);
- :mod:`~speq_search.space.files`: shipped spaces, reading a file, ``--set``, writing ``space.yaml``;
- :mod:`~speq_search.space.parse`: checking a space, once, where it enters.

A space file (YAML) has five parts::

    name: default
    description: one line for `speq-search spaces`
    train:        # fixed training settings: a TrainConfig (sections data, model, quant, speq, optim)
      data: {dataset: digits}
      optim: {epochs: 6, fp_epochs: 30}
    params:       # searched: name -> {type: choice|int|uniform|loguniform, ...}
      w_bits: {type: choice, values: [2, 3, 4, 8]}
      p_high: {type: uniform, low: 0.2, high: 0.8}
    objectives:   # two or three {metric, mode}
      - {metric: val_acc, mode: max}
      - {metric: bitops, mode: min}
    search:       # sampler (speq_search.samplers), budget, resources
      sampler: tpe
      num_samples: 16

A parameter's name is a short alias (``w_bits``, ``p_high``...) or a dotted TrainConfig field
(``optim.lr``); the name used in the file is the column name in ``trials.csv``. ``bits`` sets
weights and activations at once. Any other name is an architecture dimension that the space's
model declared when it was registered (``register_model(..., dims=...)``), which may turn a
value into a list: ``depth`` (resnet20: blocks per stage), ``hidden`` (mlp hidden sizes,
``"256-128"``), ``channels`` (cnn-small stage widths, ``"32-64-128"``), ``expansion``
(mobilenetv2).

Optional parts for per-layer and constrained searches::

    per_layer:    # one weight and one activation bits dimension per group of layers
      granularity: block        # layer | block | stage (see per_layer_groups)
      w_bits: [2, 4, 8]
      a_bits: [2, 4, 8]
      sensitivity: true         # score each layer once (sensitivity.csv) and try a point seeded by it
    constraints:  # budgets; trials that break one are INFEASIBLE, never trained, never on the front
      - size_bytes <= 4096
    warm_start: uniform         # or a list of {param: value}: tried first (Optuna enqueue_trial)
"""

from speq_search.samplers import SAMPLERS
from speq_search.space.files import SHIPPED_DIR, apply_override, dump_space, load_space, resolve_space_path, shipped_spaces
from speq_search.space.model import (
    MODES,
    PARAM_TYPES,
    SCHEDULERS,
    Constraint,
    Objective,
    Param,
    SearchSettings,
    SearchSpec,
)
from speq_search.space.names import (
    ALIASES,
    NAMES,
    GroupBits,
    assignments,
    config_changes,
    field_of,
    fields_of,
    flag_of,
    is_config_name,
)
from speq_search.space.parse import check_run_name, parse_bound, parse_space, per_layer_groups

__all__ = [
    "ALIASES",
    "MODES",
    "NAMES",
    "PARAM_TYPES",
    "SAMPLERS",
    "SCHEDULERS",
    "SHIPPED_DIR",
    "Constraint",
    "GroupBits",
    "Objective",
    "Param",
    "SearchSettings",
    "SearchSpec",
    "apply_override",
    "assignments",
    "check_run_name",
    "config_changes",
    "dump_space",
    "field_of",
    "fields_of",
    "flag_of",
    "is_config_name",
    "load_space",
    "parse_bound",
    "parse_space",
    "per_layer_groups",
    "resolve_space_path",
    "shipped_spaces",
]
