"""Pareto-aware successive halving: a Ray Tune scheduler that stops trials by non-dominated sorting.

Ray Tune's ASHA, like Optuna's pruners, ranks trials on one metric: in a search of accuracy
against bits it stops the low-bit trials, which are less accurate, and they are the cheap end of
the front the search is for. Here every cost objective (bits, BitOps, size, a cost table's
latency) is known exactly before training, and only the accuracy is uncertain at a rung.

The rule (MO-ASHA, Schmucker et al. 2021, with exact costs): rungs lie at ``grace_period *
reduction_factor**k`` epochs below the last epoch. A trial that reaches a rung is recorded there
with its objectives as it reports them at that epoch, and ranked among every trial recorded at
the rung by non-dominated sorting (moocore's ``pareto_rank``), ties within a front broken by each
point's hypervolume contribution (``hv_contributions``, objectives scaled to the rung's range).
It goes on when it is on the rung's non-dominated front or within the top ``1 / reduction_factor``
of the order, and stops otherwise. A trial on its rung's front is never stopped.

:class:`ParetoRungs` holds the rule and no Ray (the benchmarks replay it on recorded curves);
:class:`ParetoASHA` is the Ray Tune scheduler around it. Its decisions are kept: a stopped
trial's Ray folder gets a ``stopped`` file (JSON: the rung and why; trials.csv's ``stopped_at_rung``
and ``stop_reason``) and its Optuna trial the user attributes of the same names. A resumed search
rebuilds the rungs from what the trials reported (each trial's ``result.json``, and the study's
``val_acc_by_epoch`` where a result line was lost), so that its decisions go on from the same
rungs; rungs are keyed by Optuna trial number, which a trial keeps when a resumed search continues
it in a new Ray trial.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from speq_search import schema

STOPPED_FILE = "stopped"  # schema.TRIAL_FILES: a trial folder's marker, here with the decision as JSON
TIME_ATTR = "epochs_done"  # not training_iteration: a continued trial counts on from its checkpoint
_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """What the rule decided for a trial at a rung."""

    stop: bool
    rung: int  # the rung's epoch
    reason: str


def milestones(max_t: int, grace_period: int, reduction_factor: int) -> tuple[int, ...]:
    """The rungs' epochs: ``grace_period * reduction_factor**k`` below ``max_t`` (the last epoch is no rung)."""
    out, t = [], max(1, int(grace_period))
    while t < max_t:
        out.append(t)
        t *= int(reduction_factor)
    return tuple(out)


def rung_order(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ranks, order)`` of the rows of ``points`` (minimised): each row's non-dominated rank (0: the
    front) and the rows best first (by rank, then by hypervolume contribution within the rank, larger
    first, with the objectives scaled to the points' range). NaN and infinite values count as the worst."""
    import moocore

    p = np.array(points, dtype=float)
    n, d = p.shape
    for j in range(d):  # the worst finite value plus one: a diverged trial is last, moocore sees no NaN
        col, finite = p[:, j], np.isfinite(p[:, j])
        col[~finite] = (col[finite].max() + 1.0) if finite.any() else 0.0
    ranks = np.asarray(moocore.pareto_rank(p, maximise=False)) if n > 1 else np.zeros(n, dtype=int)
    lo, span = p.min(axis=0), np.ptp(p, axis=0)
    scaled = (p - lo) / np.where(span > 0, span, 1.0)
    contribution = np.zeros(n)
    for r in np.unique(ranks):
        members = np.flatnonzero(ranks == r)
        if len(members) > 1:
            contribution[members] = moocore.hv_contributions(scaled[members], ref=np.full(d, 2.0), maximise=False)
        else:
            contribution[members] = np.inf
    order = np.lexsort((np.arange(n), -contribution, ranks))
    return ranks, order


class ParetoRungs:
    """The rungs of a search and the rule (see the module docstring); no Ray.

    ``objectives``: ``(metric, mode)`` pairs; ``record(key, epochs, values)`` records a trial (by
    any hashable key) at the highest rung its ``epochs`` reached that it was not recorded at yet,
    and returns the decision there (``None``: no new rung reached).
    """

    def __init__(self, objectives: Sequence[tuple[str, str]], rungs: Sequence[int], reduction_factor: int) -> None:
        self.objectives = [(m, d) for m, d in objectives]
        self.rungs = tuple(sorted(rungs))
        self.eta = int(reduction_factor)
        self.recorded: dict[int, dict] = {r: {} for r in self.rungs}  # rung -> {key: minimised values}

    def _vector(self, values: dict) -> tuple[float, ...]:
        out = []
        for metric, mode in self.objectives:
            v = values.get(metric)
            v = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")
            out.append(-v if mode == "max" else v)
        return tuple(out)

    def rung_for(self, key, epochs: float) -> int | None:
        """The rung ``key`` is recorded at on reaching ``epochs``, if any (Ray's ASHA: the highest one
        reached, unless the trial was recorded there or higher already)."""
        for rung in reversed(self.rungs):
            if epochs >= rung:
                return None if key in self.recorded[rung] else rung
        return None

    def record(self, key, epochs: float, values: dict) -> Decision | None:
        """Record ``key`` at the rung ``epochs`` reached and decide whether it goes on."""
        rung = self.rung_for(key, epochs)
        if rung is None:
            return None
        at = self.recorded[rung]
        at[key] = self._vector(values)
        keys = list(at)
        ranks, order = rung_order(np.array([at[k] for k in keys]))
        i = keys.index(key)
        n, keep = len(keys), max(1, math.ceil(len(keys) / self.eta))
        position = int(np.flatnonzero(order == i)[0])
        names = ", ".join(m for m, _ in self.objectives)
        if ranks[i] == 0:
            return Decision(False, rung, f"on the non-dominated front of rung {rung} ({names}; {n} trials)")
        if position < keep:
            return Decision(False, rung, f"rung {rung}: position {position + 1} of {n}, within the top {keep}")
        return Decision(True, rung, f"rung {rung}: front {int(ranks[i]) + 1} of the non-dominated sorting on "
                        f"{names}, position {position + 1} of {n}, outside the top {keep} (1/{self.eta})")


class ParetoASHA(FIFOScheduler):
    """Pareto-aware successive halving as a Ray Tune scheduler (see the module docstring).

    ``run_dir``: the run folder, where the decisions are kept (the study) and a resumed search's
    rungs are read from (:meth:`restore`).
    """

    def __init__(self, objectives: Sequence[tuple[str, str]], max_t: int, grace_period: int = 1,
                 reduction_factor: int = 3, run_dir: str | Path | None = None, spec=None) -> None:
        super().__init__()
        self.rungs = ParetoRungs(objectives, milestones(max_t, grace_period, reduction_factor), reduction_factor)
        self.run_dir = Path(run_dir) if run_dir else None
        self.spec = spec  # the space (its study's name and objectives), to record decisions in the study
        self.decisions: dict = {}  # key -> the last Decision
        self._live: dict = {}  # the open study: never pickled

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_live"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _live={})

    @classmethod
    def for_space(cls, spec, run_dir: str | Path | None = None) -> ParetoASHA:
        """The scheduler of a space's ``search`` settings, its rungs restored from ``run_dir``."""
        s = spec.search
        scheduler = cls([(o.metric, o.mode) for o in spec.objectives], spec.train.optim.epochs, s.grace_period,
                        s.reduction_factor, run_dir, spec)
        if run_dir is not None:
            scheduler.restore(run_dir)
        return scheduler

    def set_search_properties(self, metric, mode, **spec) -> bool:  # noqa: D102
        return True  # the objectives come from the space; Tune's own metric/mode are not used

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        """CONTINUE, or STOP a trial that reached a rung outside its top and off its front."""
        if TIME_ATTR not in result or result.get("reused_from") is not None:
            return TrialScheduler.CONTINUE  # a reused result trained nothing: it is no rung's
        key = trial.config.get(schema.TRIAL_KEY, trial.trial_id)
        decision = self.rungs.record(key, float(result[TIME_ATTR]), result)
        if decision is None:
            return TrialScheduler.CONTINUE
        self.decisions[key] = decision
        if not decision.stop:
            return TrialScheduler.CONTINUE
        self._keep(trial, key, decision)
        return TrialScheduler.STOP

    def _keep(self, trial, key, decision: Decision) -> None:
        """The decision in the trial's folder and its Optuna trial: trials.csv and the study say it."""
        note = {"stopped_at_rung": decision.rung, "stop_reason": decision.reason}
        try:
            if trial.local_path:
                Path(trial.local_path).mkdir(parents=True, exist_ok=True)
                (Path(trial.local_path) / STOPPED_FILE).write_text(json.dumps(note) + "\n")
        except OSError as err:
            _logger.warning("could not write the stop decision of trial %s (%s)", trial.trial_id, err)
        if self.spec is None or self.run_dir is None or not isinstance(key, int):
            return
        try:
            if "study" not in self._live:
                from speq_search.search.searcher import RunStudy

                self._live["study"] = RunStudy(self.spec, self.run_dir / "study.db")
            optuna_trial = self._live["study"].trial(key)
            for name, value in note.items():
                optuna_trial.set_user_attr(name, value)
        except Exception as err:  # noqa: BLE001 - bookkeeping never stops the search
            _logger.warning("could not record the stop decision of trial %s in the study (%s)", key, err)

    def restore(self, run_dir: str | Path) -> int:
        """Record at their rungs what the run's earlier trials reported; returns how many trials."""
        reported = reported_curves(Path(run_dir), self.spec)
        for key, rows in reported.items():
            for row in rows:
                self.rungs.record(key, row[TIME_ATTR], row)
        return len(reported)

    def debug_string(self) -> str:  # noqa: D102
        sizes = ", ".join(f"{r}: {len(at)}" for r, at in self.rungs.recorded.items())
        return f"ParetoASHA rungs (epochs: trials) {sizes}"


def reported_curves(run_dir: Path, spec=None) -> dict[int, list[dict]]:
    """What each Optuna trial of a run reported, epoch by epoch: ``{number: [result rows]}``.

    Read from the result.json of every Ray trial of the run's experiments (a trial continued by a
    resumed search: all its Ray trials), and, given the space ``spec`` whose only uncertain objective
    is ``val_acc``, completed from the study's ``val_acc_by_epoch`` where result lines were lost in a
    crash (Ray copies them into the experiment now and then; the study commits every epoch). Rows of
    a reused result (it trained nothing) are left out."""
    meta = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else None
    curves: dict[int, dict[int, dict]] = {}
    for experiment in schema.experiment_folders(run_dir, meta) if meta else []:
        if not Path(experiment).is_dir():
            continue
        for path in schema.trial_folders(experiment):
            folder = schema.read_trial_folder(path)
            number = folder.params.get(schema.TRIAL_KEY)
            if not isinstance(number, int):
                continue
            for row in folder.results:
                if isinstance(row.get(TIME_ATTR), (int, float)) and row.get("reused_from") is None:
                    curves.setdefault(number, {})[int(row[TIME_ATTR])] = row
    uncertain = {o.metric for o in spec.objectives if o.metric not in schema.cost_metrics()} if spec else {"?"}
    if uncertain <= {"val_acc"} and (run_dir / "study.db").exists():
        _complete_from_study(run_dir, spec, curves)
    return {number: [by_epoch[e] for e in sorted(by_epoch)] for number, by_epoch in curves.items()}


def _complete_from_study(run_dir: Path, spec, curves: dict[int, dict[int, dict]]) -> None:
    """Epochs the study's ``val_acc_by_epoch`` holds beyond a trial's result lines: ``val_acc`` the best
    epoch so far (as reported), the costs (known before training) from its result lines or planned."""
    import optuna

    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{run_dir / 'study.db'}", skip_table_creation=True)
        trials = optuna.load_study(study_name=spec.name, storage=storage).get_trials(deepcopy=False)
    except Exception as err:  # noqa: BLE001 - the result lines alone then
        _logger.warning("could not read the study's learning curves (%s)", err)
        return
    for t in trials:
        curve = t.user_attrs.get("val_acc_by_epoch")
        if not isinstance(curve, list) or not curve or t.user_attrs.get("reused_from") is not None:
            continue
        by_epoch = curves.setdefault(t.number, {})
        if len(by_epoch) >= len(curve):
            continue
        try:
            costs = dict(by_epoch[max(by_epoch)]) if by_epoch else _planned(spec, t.params)
        except Exception as err:  # noqa: BLE001 - a trial whose costs cannot be had is left out
            _logger.warning("could not cost trial %s for its rungs (%s)", t.number, err)
            continue
        best = float("-inf")
        for epoch, value in enumerate(curve, start=1):
            if isinstance(value, (int, float)) and math.isfinite(value):
                best = max(best, float(value))
            if epoch not in by_epoch and math.isfinite(best):
                by_epoch[epoch] = dict(costs, **{TIME_ATTR: epoch, "val_acc": best})
        if not by_epoch:
            del curves[t.number]


def _planned(spec, params: dict) -> dict:
    from speq_search.train import planned_costs

    return {k: v for k, v in planned_costs(spec.trial_config(dict(params))).items() if isinstance(v, (int, float))}
