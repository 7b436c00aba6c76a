"""Turn a Ray Tune experiment folder into the run's files: trials.csv, pareto.csv, summary.json.

Reads only files (each trial's params.json, result.json and error.txt), so it works during a
search, after an interruption, after a resume, and on a folder copied from a cluster.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from speq_search import schema
from speq_search.analysis.load import completed_trials
from speq_search.analysis.pareto import front_rows, hypervolume, reference_values
from speq_search.analysis.stats import add_intervals
from speq_search.files import atomic_write
from speq_search.search.dedupe import REUSE_KEY
from speq_search.space import SearchSpec


class TrialTable:
    """The rows of an experiment's trials, kept between refreshes of the run files.

    A search rewrites its files after every finished trial; reading every trial's
    ``result.json`` each time made that O(trials) reads per trial, seconds per trial at a
    thousand. A trial folder is read again only when the size or modification time of one of
    its files changed, and a trial that has finished (completed, failed, over budget, stopped) is
    not looked at again: a refresh costs a few ``stat`` calls per running trial, plus writing the
    files.
    """

    def __init__(self) -> None:
        self._rows: dict[str, tuple[tuple, float, dict]] = {}  # folder name -> (signature, order key, row)
        self.reads = 0  # trial folders read so far (what the cache saves is visible)

    def rows(self, experiments, spec: SearchSpec) -> list[tuple[float, dict]]:
        """``(order key, row)`` of every trial in ``experiments`` (a Ray experiment folder, or the list of
        a run's, oldest first). An Optuna trial continued by a later Ray trial (a resumed search) is
        listed once, as its latest Ray trial."""
        latest: dict[object, tuple[float, dict]] = {}
        for i, experiment in enumerate(_as_list(experiments)):
            if not Path(experiment).is_dir():
                continue
            for name, key, row in self._experiment_rows(Path(experiment), spec):
                latest[row.get("_number", (i, name))] = (key, row)
        return [(key, {k: v for k, v in row.items() if k != "_number"}) for key, row in latest.values()]

    def _experiment_rows(self, experiment: Path, spec: SearchSpec):
        with os.scandir(experiment) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                slot = f"{experiment}/{entry.name}"
                cached = self._rows.get(slot)
                if cached is not None and cached[2]["status"] in schema.FINAL_STATUSES:  # finished: never read again
                    yield entry.name, cached[1], cached[2]
                    continue
                if not entry.is_dir() or not schema.is_trial_folder(entry.path):
                    continue
                signature = tuple(_stat(f"{entry.path}/{name}") for name in schema.TRIAL_FILES)
                if cached is None or cached[0] != signature:
                    self.reads += 1
                    cached = (signature, *_read_trial(Path(entry.path), spec))
                    self._rows[slot] = cached
                yield entry.name, cached[1], cached[2]


def _as_list(experiments) -> list:
    return list(experiments) if isinstance(experiments, (list, tuple)) else [experiments]


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def collect_trials(experiments, spec: SearchSpec, table: TrialTable | None = None) -> pd.DataFrame:
    """One row per trial of the run's experiments (a folder or a list, oldest first): id, status,
    parameters, metrics, fidelity, error.

    ``table`` keeps the rows between calls, so that only trials whose files changed are read.
    """
    rows = (table or TrialTable()).rows(experiments, spec)
    # Order by when each trial last reported: roughly the order the sampler saw them.
    df = pd.DataFrame([r for _, r in sorted(rows, key=lambda t: (t[0], t[1]["trial_id"]))])
    if df.empty:
        df = pd.DataFrame(columns=["trial_id", "status", *[p.name for p in spec.params], *schema.metric_columns(),
                                   *schema.TRIAL_COLUMNS])
    return df


def _read_trial(trial_dir: Path, spec: SearchSpec) -> tuple[float, dict]:
    """``(order key, row)`` of one trial folder."""
    trial = schema.read_trial_folder(trial_dir)
    last = trial.last
    done = int(last.get("epochs_done", 0))
    params = {k: v for k, v in trial.params.items() if k not in (schema.TRIAL_KEY, schema.STUDY_KEY, REUSE_KEY)}
    total = int(last.get("epochs_total", 0)) or int(spec.trial_config(params).optim.epochs)
    row = {"trial_id": trial.trial_id, "status": trial.status()}
    if isinstance(trial.params.get(schema.TRIAL_KEY), int):  # the Optuna trial it ran (not a column)
        row["_number"] = (trial.params.get(schema.STUDY_KEY), trial.params[schema.TRIAL_KEY])
    for p in spec.params:
        row[p.name] = trial.params.get(p.name)
    for key in schema.metric_columns():
        row[key] = last.get(key, np.nan)
    row.update({key: last[key] for key in schema.optional_columns() if key in last})
    row.update({"epochs_done": done, "epochs_total": total, "full_fidelity": bool(last.get("full_fidelity", False)),
                "wall_time_s": round(float(last.get("time_total_s", np.nan)), 2), "error": trial.error,
                "trial_dir": trial_dir.name})
    if trial.retried_after:  # it lost its node (or its worker) once and was retried from a checkpoint
        row["retried_after"] = trial.retried_after
    row.update(_scheduler_notes(trial_dir, last) if trial.stopped or "reused_from" in last else {})  # issue 27
    return trial.order_key, row


def _scheduler_notes(trial_dir: Path, last: dict) -> dict:
    """Issue 27: the rung a trial was stopped at and why (the ``stopped`` file the Pareto-aware scheduler
    writes), and the Optuna trial whose result a trial reused instead of training (``reused_from``)."""
    out = {}
    if isinstance(last.get("reused_from"), (int, float)):
        out["reused_from"] = int(last["reused_from"])
    try:
        note = json.loads((trial_dir / "stopped").read_text() or "{}")
    except (OSError, ValueError):
        note = {}
    if isinstance(note, dict):
        out.update({k: note[k] for k in ("stopped_at_rung", "stop_reason") if k in note})
    return out


class RunFiles(NamedTuple):
    """What :func:`write_outputs` wrote: the summary, the trials and the front."""

    summary: dict
    trials: pd.DataFrame
    front: pd.DataFrame


def write_outputs(run_dir: Path, spec: SearchSpec, experiments, full_precision: dict, extra: dict | None = None,
                  plots: bool = True, chance_acc: float | None = None, table: TrialTable | None = None) -> RunFiles:
    """(Re)write trials.csv, pareto.csv, summary.json (and pareto.html) from the experiment.

    With ``chance_acc`` (1 / classes), the summary counts completed trials whose validation
    accuracy is below 1.5 x chance (``n_at_chance``): a search of such trials has learned
    nothing, whatever its front looks like. ``table`` (kept by the caller between calls) spares
    reading the trials whose files did not change."""
    df = add_intervals(_with_supernet_accuracy(collect_trials(experiments, spec, table)))  # issue 28: 95 % intervals
    done = completed_trials(df)  # without reused results (issue 27): each model once
    reused = int(df["reused_from"].notna().sum()) if "reused_from" in df else 0
    objectives = [(o.metric, o.mode) for o in spec.objectives]
    front = front_rows(done, objectives)
    atomic_write(run_dir / "trials.csv", df.to_csv(index=False))
    atomic_write(run_dir / "pareto.csv", front.to_csv(index=False))
    metrics = [o.metric for o in spec.objectives]
    modes = [o.mode for o in spec.objectives]
    values = done[metrics].to_numpy(dtype=float) if not done.empty else np.zeros((0, len(metrics)))
    hv = hypervolume(values, metrics, modes, full_precision) if len(values) else 0.0
    summary = {
        "space": spec.name,
        "objectives": [{"metric": m, "mode": d} for m, d in zip(metrics, modes)],
        "sampler": spec.search.sampler,
        "seed": spec.search.seed,
        "scheduler": spec.search.scheduler,
        "num_samples": spec.search.num_samples,
        "n_trials": int(len(df)),
        "n_completed": int(len(done)) + reused,
        "n_failed": int((df["status"] == schema.FAILED).sum()),
        "n_stopped": int((df["status"] == schema.STOPPED).sum()),
        "n_incomplete": int((df["status"] == schema.INCOMPLETE).sum()),
        "n_infeasible": int((df["status"] == schema.INFEASIBLE).sum()),
        **_phase_counts(df),
        "n_reused": reused,  # completed by reusing an earlier trial's result (issue 27)
        "front_size": int(len(front)),
        "reference_point": dict(zip(metrics, reference_values(metrics, values if len(values) else
                                                               np.full((1, len(metrics)), np.nan), full_precision))),
        "reference_rule": "accuracy 0; bits 32; size/bitops/macs/params of the float model; else 1.1 x max "
                          "(see speq_search.analysis.pareto)",
        "hypervolume": round(hv, 6),
        "full_precision_costs": full_precision,
        "constraints": [str(c) for c in spec.constraints],
        **({"chance_acc": chance_acc, "n_at_chance": _at_chance(done, chance_acc)} if chance_acc else {}),
        **(extra or {}),
    }
    atomic_write(run_dir / "summary.json", json.dumps(summary, indent=2, default=_json_default) + "\n")
    if plots and len(front):
        from speq_search.analysis.plots import front_figure, write_figure

        x = next((m for m in metrics if not schema.is_score(m)), metrics[1])
        y = next((m for m in metrics if schema.is_score(m)), metrics[0])
        summary["figure_note"] = write_figure(front_figure(df, spec, x, y, name=Path(run_dir).name),
                                              run_dir / "pareto.html", png=True)
    return RunFiles(summary, df, front)


def _with_supernet_accuracy(df: pd.DataFrame) -> pd.DataFrame:
    """A one-shot search's fine-tuned rows get ``supernet_val_acc``: what the supernet predicted
    for the same assignment (its evaluation's validation accuracy)."""
    if "fidelity" not in df or "layer_bits" not in df:
        return df
    evaluated = df[(df["fidelity"] == "supernet") & (df["status"] == schema.COMPLETED)]
    predicted = evaluated.groupby("layer_bits")["val_acc"].max()
    tuned = df["fidelity"] == "finetuned"
    df = df.copy()
    df.loc[tuned, "supernet_val_acc"] = df.loc[tuned, "layer_bits"].map(predicted)
    return df


def _phase_counts(df: pd.DataFrame) -> dict:
    """A one-shot search's evaluations and fine-tunes done (finished, feasible or not)."""
    if "fidelity" not in df:
        return {}
    ended = df["status"].isin([schema.COMPLETED, schema.INFEASIBLE])
    return {"n_evaluated": int((ended & (df["fidelity"] == "supernet")).sum()),
            "n_finetuned": int((ended & (df["fidelity"] == "finetuned")).sum())}


def _at_chance(done: pd.DataFrame, chance_acc: float) -> int:
    if done.empty or "val_acc" not in done:
        return 0
    return int((done["val_acc"].astype(float) < 1.5 * chance_acc).sum())


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if math.isnan(o) else float(o)
    return str(o)
