"""No configuration trained twice: a trial whose effective configuration equals a finished trial's
reuses that trial's result instead of training.

Samplers of discrete spaces propose a configuration again (TPE over a few bit-widths does it
within a few trials), and different parameters can give the same model: a per-layer choice pinned
by ``first_last_bits``, a uniform ``bits`` equal to per-group bits. The *effective configuration*
is the trial's :class:`~speq_search.config.TrainConfig` with its precision fields (``w_bits``,
``a_bits``, ``group_bits``, ``overrides``, ``first_last_bits``, ``input_bits``) replaced by the
bits every layer of the quantized model resolves to. Training is seeded, so the same effective
configuration trains the same model.

The searcher (:class:`~speq_search.search.searcher.StudySearcher`) keys each asked trial
(user attribute :data:`KEY_ATTR`) and, when a completed, feasible trial of the study has the same
key, hands the Ray trial :data:`REUSE_KEY` in its config: the trainable then reports that trial's
accuracy metrics with the costs of its own config, ``reused_from`` (the source's Optuna trial
number) and ``epochs_done`` 0, and trains nothing. trials.csv's ``reused_from`` marks it; fronts
list the model once (:func:`speq_search.analysis.load.completed_trials`).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from speq_search import schema

REUSE_KEY = "reuse"  # in a Ray trial's config: {"trial": Optuna number, "metrics": {...}} of the result it reuses
KEY_ATTR = "config_key"  # the Optuna user attribute holding a trial's effective-configuration key
_PRECISION_FIELDS = ("w_bits", "a_bits", "group_bits", "overrides", "first_last_bits", "input_bits")


def effective_config(spec, values: dict[str, Any]) -> dict:
    """The trial config of ``values`` as plain data, its precision given as the bits of every layer."""
    from speq_search.models import build_model
    from speq_search.quant import layer_bits
    from speq_search.train.model import quantize_for

    cfg = spec.trial_config(values)
    data = cfg.to_dict()
    quant = {k: v for k, v in data.get("quant", {}).items() if k not in _PRECISION_FIELDS}
    layers = layer_bits(quantize_for(cfg, build_model(cfg.model))) if cfg.quantized else "float"
    data["quant"] = dict(quant, layers=layers)
    return data


def effective_key(spec, values: dict[str, Any]) -> str:
    """A short digest of :func:`effective_config` (equal configurations, equal keys)."""
    text = json.dumps(effective_config(spec, values), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def reusable(trials, key: str, metrics: list[str]) -> dict | None:
    """The :data:`REUSE_KEY` value for a trial of effective configuration ``key``: from the first
    completed, feasible trial of ``trials`` (Optuna FrozenTrials) with that key, else ``None``.

    ``metrics``: the study's objectives, in order (its values); the stored accuracy metrics come
    from its user attributes (the costs are the reusing trial's own, computed again)."""
    import optuna

    for t in trials:
        if t.state != optuna.trial.TrialState.COMPLETE or t.user_attrs.get(KEY_ATTR) != key:
            continue
        if "val_acc" not in t.user_attrs:  # infeasible (never trained) or told without its metrics
            continue
        out = {k: v for k, v in t.user_attrs.items()
               if k in schema.stored_metrics() and k not in schema.cost_metrics() and _finite(v)}
        out.update({m: v for m, v in zip(metrics, t.values or []) if m not in schema.cost_metrics() and _finite(v)})
        out.pop("epochs_done", None)
        source = t.user_attrs.get("reused_from", t.number)  # a reuse of a reuse names the trained one
        return {"trial": int(source), "metrics": out}
    return None


def reused_result(cfg, reuse: dict, constrained: bool) -> dict:
    """What a trial that reuses ``reuse`` reports: its own planned costs, the source's accuracy metrics."""
    from speq_search.train import planned_costs

    costs = {k: v for k, v in planned_costs(cfg).items() if isinstance(v, (int, float, str, bool))}
    out = {**costs, **reuse["metrics"], "reused_from": int(reuse["trial"]), "epochs_done": 0,
           "epochs_total": cfg.optim.epochs, "full_fidelity": True}
    if constrained:
        out["feasible"] = True
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
