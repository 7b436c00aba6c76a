"""The space's Optuna sampler (moving to a registry of samplers, speq_search.samplers)."""

from __future__ import annotations

import optuna

from speq_search.spec import SearchSpec


def make_sampler(spec: SearchSpec) -> optuna.samplers.BaseSampler:
    """The sampler the space asks for, seeded."""
    s = spec.search
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if s.sampler == "grid":
        return optuna.samplers.GridSampler({p.name: p.grid_values() for p in spec.params}, seed=s.seed)
    if s.sampler == "nsga2":
        # Optuna's default population (50) would make a small budget pure random sampling.
        population = max(4, min(50, s.num_samples // 4))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=s.seed)
    return optuna.samplers.TPESampler(seed=s.seed, multivariate=True)


def grid_size(spec: SearchSpec) -> int:
    """How many trials an exhaustive grid over the space has."""
    n = 1
    for p in spec.params:
        n *= len(p.grid_values())
    return n
