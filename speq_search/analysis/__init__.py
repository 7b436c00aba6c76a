"""Analysis of searches: load results, Pareto fronts, hypervolume, figures, reports (reads files, never a live Tuner).

The library. The studies that use it (scripts that run searches and write figures and tables
into ``analysis/results/``) live in the repository's top-level ``analysis/`` folder.

- ``load``: a run folder, a Ray Tune experiment or an Optuna storage as one table of trials;
- ``pareto``: the non-dominated mask, fronts, best under budgets, hypervolume;
- ``select``: a trial (by id, or the best under a budget) and the folder of its trained model;
- ``figures``: one module per figure kind (its data, then its plotly rendering) and the
  ``FIGURES`` registry; ``figures.files`` writes them (``plots`` gathers their public names);
- ``report``: ``speq-search report``'s Markdown and HTML.

Names load on first use (PEP 562): listing the figure kinds for ``speq-search --help`` imports
no pandas.
"""

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "LoadError": "load", "Run": "load", "expand_layer_bits": "load", "learning_curves": "load", "load_run": "load",
    "load_runs": "load", "best_under_budgets": "pareto", "box_hypervolume": "pareto", "front_rows": "pareto",
    "hypervolume": "pareto", "hypervolume_history": "pareto", "normalise": "pareto", "pareto_mask": "pareto",
    "reference_values": "pareto",
}

if TYPE_CHECKING:  # what static tools and IDEs see
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


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LoadError", "Run", "best_under_budgets", "box_hypervolume", "expand_layer_bits", "front_rows", "hypervolume",
           "hypervolume_history", "learning_curves", "load_run", "load_runs", "normalise", "pareto_mask",
           "reference_values"]
