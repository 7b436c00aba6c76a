"""Optuna samplers by name: the presets a space names, and Optuna's own sampler classes.

``search.sampler`` in a space (or ``--sampler``) is one of the :data:`SAMPLERS` presets
(``tpe``, ``nsga2``, ``random``, ``grid``, ``gp``), or a class of ``optuna.samplers`` with its
keywords, ``{name: NSGAIIISampler, population_size: 8}`` (a class name alone,
``QMCSampler``, is that class with its defaults). A class takes ``search.seed`` as its ``seed``
when it has one. The setting is plain data: it travels to every trial, is written to
``space.yaml`` and read back as written.

- :func:`sampler_setting` checks the setting as written (a known preset or class; keyword
  names); :func:`check_sampler` builds a class with its keywords once, and asks it for one point
  of the space, when the space is parsed: a bad keyword, or a sampler that cannot search two or
  three objectives (``CmaEsSampler``) or continuous ranges (``BruteForceSampler``), is one line
  then, not a failed search.
- :func:`make_sampler` builds the sampler of a checked space, each time anew: samplers need not
  pickle (Optuna 5.1's ``NSGAIISampler`` holds a lock), so none is kept in anything that travels.
- Budgets: since Optuna 5.0 each trial's constraints are stored with ``Trial.set_constraint``
  (the searcher does), and every constrained sampler (TPE, NSGA-II and -III, GP) reads them from
  the trials; ``constraints_func`` is deprecated there, so none is passed and none is accepted.

Plain Python at import: Optuna is imported where a sampler is built or looked up.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from speq_search.errors import ConfigError, near_miss
from speq_search.registry import Registry

if TYPE_CHECKING:
    import optuna

    from speq_search.space.model import Param, SearchSpec

FIELD = "search.sampler"
CLASS_FORM = "{name: an optuna.samplers class, keyword: value...}"

SAMPLERS: Registry[Callable[[SearchSpec], optuna.samplers.BaseSampler]] = Registry("sampler", FIELD)
"""The presets by name: ``fn(spec) -> optuna.samplers.BaseSampler``, seeded with ``search.seed``."""


@SAMPLERS.register("tpe", description="multivariate TPE (Optuna's default sampler, its parameters modelled jointly)")
def _tpe(spec: SearchSpec) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.TPESampler(seed=spec.search.seed, multivariate=True)


@SAMPLERS.register("nsga2", description="NSGA-II, its population a quarter of the budget (4 to 50)")
def _nsga2(spec: SearchSpec) -> optuna.samplers.BaseSampler:
    import optuna

    # Optuna's default population (50) would make a small budget pure random sampling.
    population = max(4, min(50, spec.search.num_samples // 4))
    return optuna.samplers.NSGAIISampler(population_size=population, seed=spec.search.seed)


@SAMPLERS.register("random", description="independent uniform draws")
def _random(spec: SearchSpec) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=spec.search.seed)


@SAMPLERS.register("grid", description="every point of the grid of choices and integer ranges, in a seeded order")
def _grid(spec: SearchSpec) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.GridSampler(grid_space(spec.params), seed=spec.search.seed)


@SAMPLERS.register("gp", description="Gaussian-process Bayesian optimisation (needs torch and scipy)")
def _gp(spec: SearchSpec) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.GPSampler(seed=spec.search.seed)


def sampler_classes() -> tuple[str, ...]:
    """The names of the sampler classes ``optuna.samplers`` offers (concrete ones)."""
    import optuna

    return tuple(name for name in optuna.samplers.__all__ if _is_sampler_class(getattr(optuna.samplers, name, None)))


def _is_sampler_class(obj: Any) -> bool:
    import optuna

    return isinstance(obj, type) and issubclass(obj, optuna.samplers.BaseSampler) and not inspect.isabstract(obj)


def sampler_class(name: Any, field: str = FIELD + ".name") -> type:
    """The class ``optuna.samplers.<name>``; anything else is an error listing the classes."""
    import optuna

    cls = getattr(optuna.samplers, name, None) if isinstance(name, str) else None
    if not _is_sampler_class(cls):
        near = near_miss(name, sampler_classes())
        raise ConfigError(field, name, "a sampler class of optuna.samplers: " + ", ".join(sampler_classes())
                          + (f" (did you mean {near}?)" if near else ""))
    return cls


def sampler_setting(value: Any, field: str = FIELD) -> str | dict[str, Any]:
    """``value`` as a space holds it: a preset's name (any case: ``TPE`` is ``tpe``), or
    ``{name: class, keyword: value...}`` (a bare class name is ``{name: class}``).

    Checks the preset or class and the keywords' names; :func:`check_sampler` builds it."""
    if isinstance(value, str):
        if value.lower() in SAMPLERS:  # names, not identifiers: TPE and NSGA2 are how papers write them
            return value.lower()
        if value in sampler_classes():
            return {"name": value}
        near = near_miss(value.lower(), SAMPLERS.names()) or near_miss(value, sampler_classes())
        raise ConfigError(field, value, f"{SAMPLERS.choices()}, a class of optuna.samplers, or {CLASS_FORM}"
                          + (f" (did you mean {near}?)" if near else ""))
    if not isinstance(value, dict) or "name" not in value:
        raise ConfigError(field, value, f"{SAMPLERS.choices()}, or {CLASS_FORM}")
    cls = sampler_class(value["name"], f"{field}.name")
    keywords = {k: v for k, v in value.items() if k != "name"}
    takes = inspect.signature(cls).parameters
    for key in keywords:
        if key == "seed":
            raise ConfigError(f"{field}.seed", keywords[key], "no seed here: search.seed seeds the sampler")
        if key == "constraints_func":
            raise ConfigError(f"{field}.{key}", keywords[key], "no constraints_func: the space's constraints reach "
                              "the sampler through Trial.set_constraint")
        if not isinstance(key, str) or key not in takes:
            raise ConfigError(f"{field}.{key}", keywords[key], f"a keyword {cls.__name__} takes: "
                              + ", ".join(k for k in takes if k not in ("seed", "constraints_func")))
    return {"name": cls.__name__, **keywords}


def _build_class(setting: dict[str, Any], seed: int, field: str = FIELD) -> optuna.samplers.BaseSampler:
    cls = sampler_class(setting["name"], f"{field}.name")
    keywords = {k: v for k, v in setting.items() if k != "name"}
    if "seed" in inspect.signature(cls).parameters:
        keywords["seed"] = seed
    try:
        return cls(**keywords)
    except (TypeError, ValueError) as err:
        raise ConfigError(field, setting, f"keywords {cls.__name__} accepts ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines() or [type(err).__name__])[0][:200]


def make_sampler(spec: SearchSpec) -> optuna.samplers.BaseSampler:
    """A new sampler of the (checked) space's ``search.sampler``, seeded with ``search.seed``."""
    setting = spec.search.sampler
    if isinstance(setting, str):
        return SAMPLERS.get(setting).obj(spec)
    return _build_class(setting, spec.search.seed)


def check_sampler(spec: SearchSpec) -> None:
    """Build an Optuna class's sampler once, with its keywords, and ask it for one point of the
    space in a throwaway study of the space's objectives: what it cannot do is an error now.

    Presets are known to work and are not built (a grid's sampler lists every point)."""
    import optuna

    setting = spec.search.sampler
    if isinstance(setting, str):
        return
    with warnings.catch_warnings():  # experimental-class warnings come again when the search builds it
        warnings.simplefilter("ignore")
        sampler = _build_class(setting, spec.search.seed)
        directions = ["maximize" if o.mode == "max" else "minimize" for o in spec.objectives]
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            study = optuna.create_study(directions=directions, sampler=sampler)
            trial = study.ask({p.name: distribution(p) for p in spec.params})
            study.tell(trial, [0.0] * len(directions))
        except Exception as err:  # noqa: BLE001 - whatever the sampler refuses, said in one line
            raise ConfigError(FIELD, setting, f"a sampler that can search this space ({len(directions)} objectives): "
                              f"{type(err).__name__}: {_first_line(err)}") from None
        finally:
            optuna.logging.set_verbosity(verbosity)


def distribution(param: Param) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution of a space parameter."""
    import optuna

    if param.type == "choice":
        return optuna.distributions.CategoricalDistribution(list(param.values))
    if param.type == "int":
        return optuna.distributions.IntDistribution(int(param.low), int(param.high))
    return optuna.distributions.FloatDistribution(param.low, param.high, log=param.type == "loguniform")


def grid_space(params: Iterable[Param]) -> dict[str, list]:
    """``{name: every value}`` of a grid search; a continuous parameter is an error naming it."""
    return {p.name: p.grid_values() for p in params}


def grid_size(spec: SearchSpec) -> int:
    """How many trials an exhaustive grid over the space has."""
    return math.prod(len(values) for values in grid_space(spec.params).values())
