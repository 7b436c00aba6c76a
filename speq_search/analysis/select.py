"""Picking a trained model out of a run: a trial by id, or the best completed trial under a budget.

``speq-search export`` and the report's budget table pick by the one rule here
(:func:`budget_picks`). Reads files only: the run (:func:`~speq_search.analysis.load.load_run`)
and its trial folders' checkpoints, which it finds but never opens (no torch).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from speq_search import schema
from speq_search.analysis.load import LoadError, Run, load_run, objective_mode, require_columns
from speq_search.analysis.pareto import best_under_budgets
from speq_search.errors import ConfigError, near_miss


def budget_picks(run: Run, budget_metric: str, budgets: Sequence[float]) -> pd.DataFrame:
    """The best completed trial under each budget ``budget_metric <= b``: one row per budget (NaN
    where none meets it, with a ``note`` naming the cheapest trial's cost).

    The score is the run's accuracy objective (else its first); ties go to the trial not dominated
    on the other objectives (:func:`best_under_budgets`). The report's budget table and
    ``speq-search export --budget`` pick by this one rule.
    """
    metrics = [m for m, _ in run.objectives]
    done = run.completed.dropna(subset=metrics)
    require_columns(done, [budget_metric], "budget metric")
    score = next((m for m in metrics if schema.is_score(m)), metrics[0])
    best = best_under_budgets(done, budget_metric, budgets, score, objective_mode([run], score),
                              others=[o for o in run.objectives if o[0] != score])
    cheapest = float(done[budget_metric].min()) if len(done) else float("nan")
    best["note"] = ["" if cheapest <= b else f"no trial meets it: the cheapest has {budget_metric} {cheapest:.4g}"
                    for b in best["budget"]]
    return best


@dataclass
class ExportSource:
    """A trained model to export: the folder holding its ``config.yaml`` and ``checkpoint.pt``."""

    folder: Path
    label: str  # what the user is told is being exported
    metrics: dict = field(default_factory=dict)  # what the run reported (size_bytes, test_acc...), where known


def resolve_source(source: str | Path, trial: str | None = None, budget: str | None = None) -> ExportSource:
    """The model folder ``source`` names: a ``train`` run folder, or a search run folder (or a Ray
    experiment folder) with ``trial`` (a trial id) or ``budget`` (``"METRIC<=NUMBER"``: the best
    completed trial under it, by the rule of the report's budget table)."""
    path = Path(source).expanduser()
    if not path.is_dir():
        raise ConfigError("SOURCE", str(source), "an existing train run folder, or a search run folder with --trial or --budget")
    if (path / "config.yaml").exists() and not (path / "trials.csv").exists():
        return _train_run(path, source, trial, budget)
    try:
        run = load_run(path)
    except LoadError:
        raise ConfigError("SOURCE", str(source), "a train run folder (config.yaml, checkpoint.pt) or a search run folder "
                          "(trials.csv)") from None
    if (trial is None) == (budget is None):
        raise ConfigError("--trial/--budget", trial if trial is not None else budget,
                          "one of them for a search run: --trial ID, or --budget 'METRIC<=NUMBER' (e.g. 'avg_bits<=3')")
    row, why = _pick_under_budget(run, budget) if budget is not None else (_pick_trial(run, trial), "")
    trial_id = str(row["trial_id"])
    folder = _trial_model_folder(run, trial_id)
    metrics = {k: v for k, v in row.items() if not (isinstance(v, float) and v != v)}
    return ExportSource(folder, f"trial {trial_id} of {path}{why}", metrics)


def _train_run(path: Path, source: str | Path, trial: str | None, budget: str | None) -> ExportSource:
    """A ``speq-search train`` folder: its own model (no trial to pick)."""
    if trial is not None or budget is not None:
        raise ConfigError("--trial" if trial is not None else "--budget", trial or budget,
                          "only with a search run folder (this is a train run folder: export it without the flag)")
    if not (path / "checkpoint.pt").exists():
        raise ConfigError("SOURCE", str(source), "a run folder holding checkpoint.pt (this one has none: the run did not "
                          "finish an epoch)")
    return ExportSource(path, f"train run {path}", _read_metrics(path / "metrics.json"))


def _pick_trial(run: Run, trial: str) -> pd.Series:
    """The row of trial ``trial``, which must have completed."""
    done = run.completed
    rows = run.trials[run.trials["trial_id"].astype(str) == str(trial)]
    if rows.empty:
        raise ConfigError("--trial", trial, _trial_choices(done["trial_id"].astype(str).tolist(), trial))
    row = rows.iloc[0]
    if row["trial_id"] not in set(done["trial_id"]):
        raise ConfigError("--trial", trial, f"a completed trial (this one is {row['status']}): "
                          + _trial_choices(done["trial_id"].astype(str).tolist(), trial))
    return row


def _pick_under_budget(run: Run, budget: str) -> tuple[pd.Series, str]:
    """The row :func:`budget_picks` gives for ``budget`` (``METRIC<=NUMBER``), and why it was picked."""
    from speq_search.space import parse_bound

    metric, _, bound = parse_bound(budget, "--budget", ops=("<=",))
    if not run.objectives:
        raise ConfigError("SOURCE", run.source, "a run whose objectives are known (a folder of `speq-search run`), "
                          "or --trial ID")
    picks = budget_picks(run, metric, [bound])
    if picks["trial_id"].isna().all():
        raise ConfigError("--budget", budget, f"a budget some completed trial meets ({picks['note'].iloc[0]})")
    row = picks.iloc[0]
    score = next((m for m, _ in run.objectives if schema.is_score(m)), run.objectives[0][0])
    return row, f" (the best {score} under {metric} <= {bound:g}: {row[score]:.4g} at {metric} {row[metric]:.4g})"


def _trial_choices(ids: list[str], given: str) -> str:
    if not ids:
        return "the id of a completed trial (this run has none)"
    near = near_miss(given, ids)
    shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more (see trials.csv)" if len(ids) > 8 else "")
    return f"the id of a completed trial: {shown}" + (f" (did you mean {near}?)" if near else "")


def _trial_model_folder(run: Run, trial_id: str) -> Path:
    """The newest checkpoint folder of a trial (what Ray keeps in the run's storage), else its ``train``
    folder; a checkpoint in object storage is downloaded into the run folder first (``.checkpoints/``)."""
    experiments = run.experiment_folders or ([Path(run.source)] if run.kind == "ray" else [])
    experiments = [e for e in experiments if Path(e).is_dir()]
    if not experiments:
        raise ConfigError("SOURCE", run.source, "a search run folder that still holds its Ray experiment (trial folders "
                          "with checkpoints)")
    for trial_dir in [d for e in reversed(experiments) for d in schema.trial_folders(Path(e))]:
        if schema.trial_id_of(trial_dir) != trial_id:
            continue
        if (trial_dir / "remote.json").exists():  # the run folder's copy of a trial kept in object storage
            return _downloaded_checkpoint(Path(run.source), trial_dir, trial_id)
        candidates = sorted(trial_dir.glob("checkpoint_*"), reverse=True) + [trial_dir / "train"]
        for folder in candidates:
            folder = _best_repeat(folder)
            if (folder / "checkpoint.pt").exists() and (folder / "config.yaml").exists():
                return folder
        raise ConfigError("--trial", trial_id, f"a trial that kept a checkpoint ({trial_dir} has none)")
    raise ConfigError("--trial", trial_id, f"a trial with a folder in {experiments[-1]}")


def _best_repeat(folder: Path) -> Path:
    """A repeated trial's model (search.repeats: one run folder per seed, ``repeat-<k>``): the seed
    with the highest validation accuracy among those that finished; ``folder`` itself otherwise."""
    seeds = [f for f in sorted(folder.glob("repeat-*")) if (f / "metrics.json").exists()]
    if (folder / "checkpoint.pt").exists() or not seeds:
        return folder
    return max(seeds, key=lambda f: _read_metrics(f / "metrics.json").get("val_acc", -1.0))


def _downloaded_checkpoint(run_dir: Path, trial_dir: Path, trial_id: str) -> Path:
    from speq_search.storage import download, remote_checkpoints

    uri = json.loads((trial_dir / "remote.json").read_text())["uri"]
    newest = remote_checkpoints(uri)
    if not newest:
        raise ConfigError("--trial", trial_id, f"a trial that kept a checkpoint ({uri} has none)")
    target = run_dir / ".checkpoints" / trial_id / newest[0].rsplit("/", 1)[1]
    if not (target / "checkpoint.pt").exists() and not any(target.glob("repeat-*")):
        download(newest[0], target)
    return _best_repeat(target)


def _read_metrics(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}


__all__ = ["ExportSource", "budget_picks", "resolve_source"]
