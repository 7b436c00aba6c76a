"""The figures' public names in one place (each kind lives in :mod:`speq_search.analysis.figures`).

- :func:`front_data` / :func:`render_fronts`: accuracy against a cost, one front per run or per
  value of a column (e.g. ``method``), dominated trials faded, infeasible (over-budget) ones
  greyed below the accuracy axis, failed ones left out, the full-precision accuracy as a
  reference line, hover with the whole configuration;
- :func:`parallel_data` / :func:`render_parallel`: parameters and objectives on parallel axes;
- :func:`importance_data` / :func:`render_importance`: Optuna's parameter importance per objective;
- :func:`curves_data` / :func:`render_curves`: per-trial learning curves; :func:`hypervolume_data` /
  :func:`render_hypervolume`: the front's hypervolume as trials accumulate;
- :func:`layer_bits_data` / :func:`render_layer_bits`, :func:`render_sensitivity`: per-layer searches;
- :func:`write_figure`: self-contained HTML, and PNG/SVG through kaleido when it and Chromium are there.
"""

from __future__ import annotations

from speq_search.analysis.figures import FIGURES, FigureKind, FigureRequest, default_axes, make_figure
from speq_search.analysis.figures.common import GROUP_SYMBOLS, PALETTE, PARAM_TITLES, axis_title
from speq_search.analysis.figures.curves import CurvesData, curves_data, render_curves
from speq_search.analysis.figures.files import (
    IMAGE_FORMATS,
    NO_BROWSER,
    NO_KALEIDO,
    PLOTLYJS,
    ImageExportError,
    browser_available,
    browser_path,
    ensure_plotlyjs,
    export_image,
    image_session,
    write_figure,
)
from speq_search.analysis.figures.front import (
    FrontFigureData,
    FrontInfo,
    InfeasibleInfo,
    front_data,
    front_figure,
    render_fronts,
)
from speq_search.analysis.figures.hypervolume import HypervolumeData, hypervolume_data, render_hypervolume
from speq_search.analysis.figures.importance import ImportanceData, importance_data, render_importance
from speq_search.analysis.figures.layer_bits import LayerBitsData, layer_bits_data, render_layer_bits
from speq_search.analysis.figures.parallel import ParallelData, parallel_data, render_parallel
from speq_search.analysis.figures.sensitivity import SensitivityData, render_sensitivity

__all__ = ["FIGURES", "GROUP_SYMBOLS", "IMAGE_FORMATS", "NO_BROWSER", "NO_KALEIDO", "PALETTE", "PARAM_TITLES", "PLOTLYJS",
           "CurvesData", "FigureKind", "FigureRequest", "FrontFigureData", "FrontInfo", "HypervolumeData",
           "ImageExportError", "ImportanceData", "InfeasibleInfo", "LayerBitsData", "ParallelData", "SensitivityData",
           "axis_title", "browser_available", "browser_path", "curves_data", "default_axes", "ensure_plotlyjs",
           "export_image", "front_data", "front_figure", "hypervolume_data", "image_session", "importance_data",
           "layer_bits_data", "make_figure", "parallel_data", "render_curves", "render_fronts", "render_hypervolume",
           "render_importance", "render_layer_bits", "render_parallel", "render_sensitivity", "write_figure"]
