"""A search space, checked: frozen data that travels whole from the driver to every trial."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from speq_search.config import OneShotConfig, TrainConfig
from speq_search.errors import ConfigError
from speq_search.space.names import config_changes

PARAM_TYPES = ("choice", "int", "uniform", "loguniform")
SCHEDULERS = ("fifo", "asha", "asha-first")  # asha: Pareto-aware (search/scheduler.py); asha-first: Ray's ASHA
MODES = ("max", "min")


@dataclass(frozen=True)
class Constraint:
    """A budget ``metric <= bound`` (or ``>=``) on a cost known before training."""

    metric: str
    op: str
    bound: float

    def violation(self, value: float) -> float:
        """<= 0 when met; otherwise how far off, relative to the bound (Optuna's convention)."""
        gap = value - self.bound if self.op == "<=" else self.bound - value
        return gap / abs(self.bound) if self.bound else gap

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:.12g}"  # exact enough to parse back to the same bound


@dataclass(frozen=True)
class Param:
    """One searched parameter."""

    name: str
    type: str
    values: tuple = ()
    low: float | None = None
    high: float | None = None

    def grid_values(self) -> list:
        """The values a grid search takes (every choice; every integer of an int range)."""
        if self.type == "choice":
            return list(self.values)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1))
        raise ConfigError(f"params.{self.name}.type", self.type, "choice or int for sampler grid")

    def allows(self, value: Any) -> bool:
        """``value`` is one of the choices, or within the range."""
        if self.type == "choice":
            return value in self.values
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def as_dict(self) -> dict:
        """As written in a space file."""
        if self.type == "choice":
            return {"type": "choice", "values": list(self.values)}
        return {"type": self.type, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str


@dataclass(frozen=True)
class SearchSettings:
    """How a space is searched: the sampler, the budget, the resources."""

    # a preset's name or {name: an optuna.samplers class, keyword: value...}: see speq_search.samplers
    sampler: str | dict = "tpe"
    num_samples: int = 16
    max_concurrent: int = 2
    seed: int = 0
    scheduler: str = "fifo"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 3
    max_retries: int | None = None  # retries of a trial that raised (a lost node), from its last checkpoint;
    # None: 0 on a local instance, 2 on a cluster (see speq_search.search.tuner)
    repeats: int = 1  # seeds each configuration is trained with (its objectives their means; issue 28)
    grace_period: int = 1  # asha: epochs before the first stop decision
    reduction_factor: int = 3  # asha


@dataclass(frozen=True)
class SearchSpec:
    """A checked search space: what :func:`~speq_search.space.parse_space` returns.

    The driver parses a space once; trials receive this object (frozen, picklable) and build
    their config with :meth:`trial_config` from values the space already checked.
    """

    name: str
    description: str
    train: TrainConfig
    params: tuple[Param, ...]
    objectives: tuple[Objective, ...]
    search: SearchSettings
    per_layer: dict = field(default_factory=dict)  # the per_layer section as written (its params are expanded)
    constraints: tuple[Constraint, ...] = ()
    warm_start: tuple[dict, ...] = ()  # points tried first
    oneshot: OneShotConfig | None = None  # a one-shot search: one supernet, evaluations, the best fine-tuned
    proxy_warm_start: int = 0  # warm_start: sensitivity: this many points of the proxy front first (issue 27)

    def to_dict(self) -> dict:
        """The resolved space, as written to ``RUN_DIR/space.yaml``."""
        out = {
            "name": self.name, "description": self.description, "train": self.train.to_dict(),
            "params": {p.name: p.as_dict() for p in self.params if "@" not in p.name},
            "objectives": [dataclasses.asdict(o) for o in self.objectives],
            "search": dataclasses.asdict(self.search),
        }
        if self.per_layer:
            out["per_layer"] = copy.deepcopy(self.per_layer)
        if self.constraints:
            out["constraints"] = [str(c) for c in self.constraints]
        if self.warm_start:
            out["warm_start"] = [dict(p) for p in self.warm_start]
        if self.proxy_warm_start:
            out["warm_start"] = {"sensitivity": self.proxy_warm_start}
        if self.oneshot is not None:
            out["oneshot"] = self.oneshot.to_dict()
        return out

    def group_choices(self) -> dict[str, dict[str, list]]:
        """A per-layer space's choices by group: ``{group: {"w_bits": [...], "a_bits": [...]}}``
        (only the kinds searched there)."""
        choices: dict[str, dict[str, list]] = {}
        for p in self.params:
            if "@" in p.name:
                kind, _, group = p.name.partition("@")
                choices.setdefault(group, {})[kind] = list(p.values)
        return choices

    def trial_config(self, values: dict[str, Any]) -> TrainConfig:
        """The TrainConfig of one trial: the fixed settings plus the sampled values.

        The values are checked against the parameters' choices and ranges, whose every value
        the space checked when it was parsed: the config fields are not checked again."""
        params = {p.name: p for p in self.params}
        for name, value in values.items():
            if name not in params:
                raise ConfigError(f"params.{name}", value, "a searched parameter: " + ", ".join(params))
            if not params[name].allows(value):
                raise ConfigError(f"params.{name}", value, "a value the parameter's range or choices allow")
        return self.train.replace(trusted=True, **config_changes(self.train, values))

    def violations(self, costs: dict[str, Any]) -> dict[str, float]:
        """``{constraint: violation}``, <= 0 where ``costs`` meet it (a missing metric counts as broken)."""
        return {str(c): c.violation(float(costs[c.metric])) if c.metric in costs else float("inf")
                for c in self.constraints}
