"""Analysis of finished searches: Pareto fronts, hypervolume (reads files, never a live Tuner)."""

from speq_search.analysis.pareto import hypervolume, hypervolume_history, normalise, pareto_mask, reference_values

__all__ = ["hypervolume", "hypervolume_history", "normalise", "pareto_mask", "reference_values"]
