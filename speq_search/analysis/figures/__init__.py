"""Figures of runs: one module per kind, each in two steps, as Optuna's ``visualization`` does.

Each module (``front``, ``parallel``, ``importance``, ``curves``, ``hypervolume``,
``sensitivity``, ``layer_bits``) has ``figure_data(runs, df, request)``, a pure function that
returns a small NamedTuple of what to draw (and raises a one-line
:class:`~speq_search.analysis.load.LoadError` when the runs hold nothing to draw), and
``render(data)``, the plotly figure of it; tests check the data. :data:`FIGURES` is the one list
of kinds (``speq-search plot --kind``, its help and its errors); ``files`` writes a figure.

Listing the kinds imports no figure module: this module loads neither pandas nor plotly, so
``speq-search --help`` stays quick.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from speq_search import schema
from speq_search.registry import Registry


@dataclass(frozen=True)
class FigureKind:
    """One kind of figure: the module of :mod:`speq_search.analysis.figures` that computes and draws it."""

    module: str

    @property
    def data_fn(self) -> Callable:
        """``figure_data(runs, df, request) -> NamedTuple``: what to draw (imported on first use)."""
        return importlib.import_module(f"{__name__}.{self.module}").figure_data

    @property
    def render_fn(self) -> Callable:
        """``render(data) -> plotly Figure``."""
        return importlib.import_module(f"{__name__}.{self.module}").render


FIGURES: Registry[FigureKind] = Registry("figure", "kind")
FIGURES.register("front", FigureKind("front"), description="accuracy against a cost: one Pareto front per run "
                 "(or per --group-by value), dominated trials faded, over-budget ones greyed")
FIGURES.register("parallel", FigureKind("parallel"), description="parameters and objectives on parallel axes")
FIGURES.register("importance", FigureKind("importance"),
                 description="each parameter's importance for each objective (Optuna's fANOVA)")
FIGURES.register("curves", FigureKind("curves"), description="each trial's learning curve, coloured by its cost")
FIGURES.register("hypervolume", FigureKind("hypervolume"),
                 description="the front's hypervolume as trials accumulate")
FIGURES.register("sensitivity", FigureKind("sensitivity"),
                 description="each layer's accuracy drop at few bits (a run with sensitivity.csv)")
FIGURES.register("layer-bits", FigureKind("layer_bits"),
                 description="bits per layer along the front (per-layer searches)")
FIGURES.register("oneshot", FigureKind("oneshot"),
                 description="a one-shot search's prediction: each fine-tuned assignment's accuracy on the supernet "
                 "against its fine-tuned accuracy, with Kendall's tau")


class FigureRequest(NamedTuple):
    """What the user asked of a figure (``speq-search plot``'s flags), the axes' defaults filled in."""

    x: str  # cost axis
    y: str  # accuracy axis (the curves' metric, the parallel figure's first objective)
    color: str | None = None  # colour points by this column
    group: str | None = None  # one front per value of this column


def default_axes(runs: Sequence) -> tuple[str, str]:
    """The first run's cost and accuracy objectives (else ``avg_bits`` and ``val_acc``)."""
    objectives = runs[0].objectives if runs else []
    x = next((m for m, _ in objectives if not schema.is_score(m)), "avg_bits")
    y = next((m for m, _ in objectives if schema.is_score(m)), "val_acc")
    return x, y


def make_figure(runs: Sequence, df, kind: str = "front", x: str | None = None, y: str | None = None,
                color: str | None = None, group: str | None = None):
    """The plotly figure ``kind`` (one of :data:`FIGURES`) of the runs; ``df``: their trials together."""
    figure = FIGURES.get(kind).obj
    dx, dy = default_axes(runs)
    return figure.render_fn(figure.data_fn(runs, df, FigureRequest(x or dx, y or dy, color, group)))


__all__ = ["FIGURES", "FigureKind", "FigureRequest", "default_axes", "make_figure"]
