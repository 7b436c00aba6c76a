"""Analysis of searches: load results, Pareto fronts, hypervolume, figures, reports (reads files, never a live Tuner).

The library. The studies that use it (scripts that run searches and write figures and tables
into ``analysis/results/``) live in the repository's top-level ``analysis/`` folder.
"""

from speq_search.analysis.load import LoadError, Run, expand_layer_bits, learning_curves, load_run, load_runs
from speq_search.analysis.pareto import (
                                         best_under_budgets,
                                         box_hypervolume,
                                         front_rows,
                                         hypervolume,
                                         hypervolume_history,
                                         normalise,
                                         pareto_mask,
                                         reference_values,
)

__all__ = ["LoadError", "Run", "best_under_budgets", "box_hypervolume", "expand_layer_bits", "front_rows", "hypervolume",
           "hypervolume_history", "learning_curves", "load_run", "load_runs", "normalise", "pareto_mask",
           "reference_values"]
