"""Load search results into pandas, from any of three sources, without Ray or a live study.

- a run folder written by ``speq-search run`` (``trials.csv``, ``summary.json``, ``space.yaml``);
- a bare Ray Tune experiment folder (one sub-folder per trial with ``params.json`` and
  ``result.json``), e.g. from a search not made with speq-search;
- an Optuna storage URL (``sqlite:///study.db``, optionally ``#study-name``).

Every source gives the same columns: ``run``, ``trial_id``, ``status`` (COMPLETED, FAILED,
STOPPED, INCOMPLETE or INFEASIBLE), one column per parameter, one per metric. A
:class:`Run` also says which columns are parameters and which objectives (with their
directions), when the source knows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from speq_search import schema
from speq_search.analysis import stats
from speq_search.errors import ConfigError, near_miss
from speq_search.schema import STATUSES, decode_layer_bits, read_results, trial_folders


@dataclass
class Run:
    """One loaded search: its trials and what the source says about them."""

    name: str
    source: str
    kind: str  # "run" | "ray" | "optuna"
    trials: pd.DataFrame
    params: list[str]
    objectives: list[tuple[str, str]] = field(default_factory=list)  # (metric, "max" | "min")
    full_precision: dict = field(default_factory=dict)  # float-model costs: the reference point
    summary: dict = field(default_factory=dict)
    experiment: Path | None = None  # Ray experiment folder (per-epoch results), when there is one
    storage: str | None = None  # Optuna storage URL, when there is one
    study_name: str | None = None
    sensitivity: pd.DataFrame | None = None  # RUN_DIR/sensitivity.csv, when the search scored its layers
    experiments: list[Path] = field(default_factory=list)  # every Ray experiment of a run folder, oldest first

    @property
    def experiment_folders(self) -> list[Path]:
        """The Ray experiment folders holding the run's per-epoch results (a resumed search has several)."""
        return self.experiments or ([Path(self.experiment)] if self.experiment is not None else [])

    @property
    def completed(self) -> pd.DataFrame:
        """Trials that finished at full fidelity and are feasible: the ones a front may hold."""
        return completed_trials(self.trials)


def completed_trials(df: pd.DataFrame, fidelity: str | None = "highest") -> pd.DataFrame:
    """Rows a front may hold: status COMPLETED (so not failed, stopped early or over budget) and,
    where the column exists, full fidelity; of a one-shot search's (a ``fidelity`` column), those
    of the highest fidelity it has (fine-tuned over supernet evaluations: :data:`schema.FIDELITIES`),
    or those of ``fidelity`` when named (None: every fidelity); not a reused result (``reused_from``:
    the model of the trial it names, which is listed itself)."""
    done = df[df["status"] == schema.COMPLETED] if "status" in df else df
    if "full_fidelity" in done:
        done = done[done["full_fidelity"].fillna(True).astype(bool)]
    if fidelity is not None and "fidelity" in done and len(done):
        measured = done["fidelity"].fillna(schema.FIDELITIES[0])
        wanted = max(measured.unique(), key=schema.FIDELITIES.index) if fidelity == "highest" else fidelity
        done = done[measured == wanted]
    if "reused_from" in done:  # issue 27: a configuration trained once, on a front once
        done = done[done["reused_from"].isna()]
    return done


def objective_mode(runs, metric: str) -> str:
    """``max`` or ``min``: as the first of ``runs`` that has ``metric`` as an objective says, else
    by the metric's kind (:func:`speq_search.schema.default_mode`)."""
    for run in runs:
        for m, d in run.objectives:
            if m == metric:
                return d
    return schema.default_mode(metric)


class LoadError(ConfigError):
    """A source that is not a run, lacks a column, or holds no trials."""


trial_dirs = trial_folders  # the trial folders of a Ray Tune experiment (speq_search.schema)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def load_run(source: str | Path, name: str | None = None, objectives: list[tuple[str, str]] | None = None) -> Run:
    """Load a run folder, a Ray Tune experiment folder or an Optuna storage URL."""
    text = str(source)
    if "://" in text:
        return _load_optuna(text, name, objectives)
    path = Path(text).expanduser()
    if not path.exists():
        raise LoadError("run", text, "an existing run folder, Ray Tune experiment folder or Optuna storage URL "
                        "(sqlite:///study.db)")
    if path.is_dir() and (path / "trials.csv").exists():
        return _load_run_dir(path, name, objectives)
    if path.is_file() and path.suffix == ".db":
        return _load_optuna(f"sqlite:///{path.resolve()}", name, objectives)
    if path.is_dir() and trial_dirs(path):
        return _load_ray(path, name, objectives)
    raise LoadError("run", text, "a folder written by `speq-search run` (with trials.csv), a Ray Tune experiment "
                    "folder (trial folders with params.json), or an Optuna storage URL")


def load_runs(sources, objectives: list[tuple[str, str]] | None = None) -> tuple[list[Run], pd.DataFrame]:
    """Load several sources; also return all their trials in one DataFrame (column ``run``).

    Runs with the same folder name get ``-2``, ``-3``... so that ``run`` tells them apart.
    """
    runs: list[Run] = []
    seen: dict[str, int] = {}
    for source in sources:
        run = load_run(source, objectives=objectives)
        seen[run.name] = seen.get(run.name, 0) + 1
        if seen[run.name] > 1:
            run.name = f"{run.name}-{seen[run.name]}"
            run.trials["run"] = run.name
        runs.append(run)
    if not runs:
        raise LoadError("runs", [], "at least one run folder or storage URL")
    return runs, pd.concat([r.trials for r in runs], ignore_index=True)


def _finish(df: pd.DataFrame, name: str, source: str) -> pd.DataFrame:
    if df.empty:
        raise LoadError("run", source, "a run with at least one trial (this one has none yet)")
    df = stats.add_intervals(df)  # every accuracy with its interval (a copy)
    df.insert(0, "run", name)
    return df


def read_run_csv(path: str | Path) -> pd.DataFrame:
    """A run's ``trials.csv`` or ``pareto.csv``; trial ids stay strings (``228736e2`` is an id,
    not 22873600.0)."""
    return pd.read_csv(path, dtype={"trial_id": str})


def _load_run_dir(path: Path, name: str | None, objectives) -> Run:
    try:
        df = read_run_csv(path / "trials.csv")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise LoadError("trials.csv", str(path / "trials.csv"), f"a CSV table of trials ({type(err).__name__})") from None
    for col in ("trial_id", "status"):
        if col not in df:
            raise LoadError(f"trials.csv column {col}", str(path), "a trials.csv written by speq-search run")
    summary = _read_json(path / "summary.json")
    meta = _read_json(path / "run.json")
    space = {}
    if (path / "space.yaml").exists():
        from speq_search.yamlio import load_yaml

        space = load_yaml(path / "space.yaml", "space.yaml") or {}
    params = [p for p in (space.get("params") or {}) if p in df] + [c for c in df.columns if "@" in c]
    if objectives is None:
        objectives = [(o["metric"], o["mode"]) for o in summary.get("objectives") or space.get("objectives") or []]
    experiments = [e for e in schema.experiment_folders(path, meta) if e.is_dir()] if meta else []
    experiment = experiments[-1] if experiments else None
    study = path / "study.db"
    sensitivity = pd.read_csv(path / "sensitivity.csv") if (path / "sensitivity.csv").exists() else None
    return Run(name or path.name, str(path), "run", _finish(df, name or path.name, str(path)), params,
               list(objectives), summary.get("full_precision_costs") or meta.get("reference") or {}, summary,
               experiment, f"sqlite:///{study.resolve()}" if study.exists() else None, space.get("name"), sensitivity,
               experiments)


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise LoadError(path.name, str(path), "a JSON file written by speq-search run") from None


def _load_ray(path: Path, name: str | None, objectives) -> Run:
    rows, param_names = [], []
    for trial_dir in trial_dirs(path):
        trial = schema.read_trial_folder(trial_dir)
        params = _flatten(trial.params)
        param_names += [p for p in params if p not in param_names]
        metrics = {k: v for k, v in trial.last.items() if isinstance(v, (int, float, str, bool)) and k not in params
                   and k not in ("config", "trial_id", "date", "hostname", "node_ip", "pid", "checkpoint_dir_name")}
        rows.append({"trial_id": trial.trial_id, "status": trial.status(live=False), **params, **metrics, "error": trial.error,
                     "trial_dir": trial_dir.name, "_t": trial.order_key})
    df = pd.DataFrame(rows).sort_values(["_t", "trial_id"]).drop(columns="_t").reset_index(drop=True)
    label = name or path.name
    return Run(label, str(path), "ray", _finish(df, label, str(path)), param_names, list(objectives or []),
               experiment=path)


def _load_optuna(url: str, name: str | None, objectives) -> Run:
    import optuna

    url, _, study_name = url.partition("#")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
        summaries = optuna.study.get_all_study_summaries(storage)
    except Exception as err:  # sqlalchemy raises many kinds for a wrong URL or a non-Optuna file
        raise LoadError("storage", url, f"an Optuna storage URL, e.g. sqlite:///study.db ({type(err).__name__})") from None
    # A run's study.db also holds "<name>-curves", the per-epoch companion study (see
    # speq_search.search.searcher): not a study of the search's objectives.
    names = [s.study_name for s in summaries if not s.study_name.endswith("-curves")] or [s.study_name for s in summaries]
    if not study_name:
        if len(names) != 1:
            raise LoadError("storage", url, "a URL ending in #STUDY_NAME, one of: " + ", ".join(names) if names else
                            "a storage holding a study")
        study_name = names[0]
    if study_name not in names:
        raise LoadError("study", study_name, "a study in the storage: " + ", ".join(names))
    study = optuna.load_study(study_name=study_name, storage=storage)
    metric_names = study.metric_names or [f"value_{i}" for i in range(len(study.directions))]
    modes = ["max" if d == optuna.study.StudyDirection.MAXIMIZE else "min" for d in study.directions]
    rows, param_names = [], []
    for t in study.get_trials(deepcopy=False):
        param_names += [p for p in t.params if p not in param_names]
        status = schema.optuna_trial_status(t.state.name, t.constraints)
        values = dict(zip(metric_names, t.values)) if t.values else {m: np.nan for m in metric_names}
        user = {k: v for k, v in t.user_attrs.items() if isinstance(v, (int, float, str, bool))}
        rows.append({"trial_id": str(t.number), "status": status, **t.params, **user, **values})
    df = pd.DataFrame(rows)
    label = name or study_name
    return Run(label, url, "optuna", _finish(df, label, url), param_names,
               list(objectives or zip(metric_names, modes)), storage=url, study_name=study_name)


# Bookkeeping columns: numbers, but nothing to draw an axis of.
_NOT_PLOTTABLE = {"epochs_total", "full_fidelity", "feasible"}


def require_columns(df: pd.DataFrame, columns, option: str = "column", plottable: bool = True) -> None:
    """A :class:`LoadError` naming the first of ``columns`` that ``df`` lacks, and the ones it has:
    those with numbers in them when ``plottable`` (an axis), else every column."""
    for col in columns:
        if col and col not in df:
            options = list(df.columns)
            if plottable:
                options = [c for c in df.columns if c not in _NOT_PLOTTABLE and df[c].notna().any()
                           and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
            near = near_miss(col, options)
            raise LoadError(option, col, "a column of the results: " + ", ".join(options or df.columns)
                            + (f" (did you mean {near}?)" if near else ""))


def expand_layer_bits(df: pd.DataFrame) -> pd.DataFrame:
    """The ``layer_bits`` column (``name=w/a;...``) as rows ``run, trial_id, layer, w_bits, a_bits``."""
    rows = []
    if "layer_bits" in df:
        for _, r in df.dropna(subset=["layer_bits"]).iterrows():
            for layer, w, a in decode_layer_bits(r["layer_bits"]):
                rows.append({"run": r.get("run", ""), "trial_id": r["trial_id"], "layer": layer, "w_bits": w,
                             "a_bits": a})
    return pd.DataFrame(rows, columns=["run", "trial_id", "layer", "w_bits", "a_bits"])


def learning_curves(run: Run, metric: str = "val_acc") -> pd.DataFrame:
    """Per-epoch ``metric`` of every trial (columns ``run, trial_id, epoch, <metric>``): each
    epoch's own value (for ``val_acc``, not the best so far that the search optimises).

    Read from the Ray experiment's ``result.json`` files; empty when the run has none.
    """
    rows = []
    # A trial reports the selected (best so far) epoch's val_acc, its objective, and each
    # epoch's own as epoch_val_acc: a curve of val_acc draws the latter (runs before it: val_acc).
    source = {"val_acc": "epoch_val_acc"}.get(metric, metric)
    folders = [d for e in run.experiment_folders if Path(e).is_dir() for d in trial_dirs(e)]
    # A trial a resumed search continued ran in two Ray trials: one curve, under its latest id.
    latest = {}
    for trial_dir in folders:
        trial = schema.read_trial_folder(trial_dir)
        latest[trial.params.get(schema.TRIAL_KEY, trial_dir)] = trial.trial_id
    for trial_dir in folders:
        trial = schema.read_trial_folder(trial_dir)
        trial_id = latest[trial.params.get(schema.TRIAL_KEY, trial_dir)]
        for i, r in enumerate(trial.results, start=1):
            key = source if source in r else metric
            if key in r:
                rows.append({"run": run.name, "trial_id": trial_id,
                             "epoch": r.get("epoch", r.get("training_iteration", i)), metric: r[key]})
    return pd.DataFrame(rows, columns=["run", "trial_id", "epoch", metric])


__all__ = ["STATUSES", "LoadError", "Run", "completed_trials", "expand_layer_bits", "learning_curves", "load_run",
           "load_runs", "objective_mode", "read_results", "require_columns", "trial_dirs"]
