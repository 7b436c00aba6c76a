"""The search algorithm: Ray Tune's public ``Searcher`` over Optuna's ask-and-tell on the run's study.

The study in ``RUN_DIR/study.db`` is the record of the search: which configurations were asked,
which finished and how. Each Ray trial's config carries the number of the Optuna trial it runs
(:data:`speq_search.schema.TRIAL_KEY`), so one Optuna trial can be continued by a later Ray trial
when a search is resumed (see :mod:`speq_search.search.runner`). Nothing here needs Ray's own
saved state, and nothing live (the study, the sampler: Optuna 5.1's NSGA-II holds a lock) is
pickled: Ray pickles a searcher into its experiment, and gets only its plain settings.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from ray.tune.search import Searcher

from speq_search import schema
from speq_search.samplers import distribution
from speq_search.search.dedupe import KEY_ATTR, REUSE_KEY, effective_key, reusable
from speq_search.space import SearchSpec

CURVES_SUFFIX = "-curves"  # the companion study of per-epoch validation accuracy
_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Carried:
    """An Optuna trial a resumed search runs again: it started (or its result was not saved) before
    the search stopped. ``checkpoint`` is the last checkpoint of the Ray trial that ran it, if any."""

    number: int
    params: dict
    checkpoint: str | None = None


class RunStudy:
    """The run's study (made on first use, objectives named so that study.db reads well in any Optuna
    tool) and its storage, through whose public interface any of its trials can be continued:
    ask-and-tell hands a live trial only to the process that asked, and a resumed search continues
    older ones."""

    def __init__(self, spec: SearchSpec, path: str | Path, sampler: optuna.samplers.BaseSampler | None = None,
                 study_name: str | None = None) -> None:
        name = study_name or spec.name
        self.storage = optuna.storages.RDBStorage(f"sqlite:///{Path(path).resolve()}")
        self.study = optuna.create_study(
            storage=self.storage, study_name=name, sampler=sampler, load_if_exists=True,
            directions=["maximize" if o.mode == "max" else "minimize" for o in spec.objectives])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names([o.metric for o in spec.objectives])
        self._study_id = self.storage.get_study_id_from_name(name)

    def _id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)

    def trial(self, number: int) -> optuna.trial.Trial:
        """The live trial ``number`` (to set attributes on, or to tell)."""
        return optuna.trial.Trial(self.study, self._id(number))

    def frozen(self, number: int) -> optuna.trial.FrozenTrial:
        """Trial ``number`` as stored now (one row read, not the whole study)."""
        return self.storage.get_trial(self._id(number))


class StudySearcher(Searcher):
    """Suggests each Ray trial's configuration from the run's Optuna study and tells it the outcome.

    - Outcomes: a trial's status (:func:`speq_search.schema.trial_status`: the one rule) becomes its
      Optuna state (:data:`speq_search.schema.OPTUNA_STATES`): FAILED is FAIL, STOPPED (ASHA) PRUNED,
      COMPLETED and INFEASIBLE COMPLETE, the latter with placeholder values for the metrics it never
      measured, which constrained samplers rank below every feasible trial.
    - Budgets: each trial's violations are stored with ``Trial.set_constraint``, which TPE, NSGA-II
      and GP read (constrained domination).
    - ``warm_start`` points are enqueued (``Study.enqueue_trial``) before the first trial.
    - ``carried`` trials (a resumed search's unfinished ones) are suggested first, with their own
      parameters and Optuna trial numbers; a trial the study already holds as finished (told just
      before a crash) is not told again.
    - Optuna keeps no intermediate values in a study of several objectives: each epoch's validation
      accuracy goes into the user attribute ``val_acc_by_epoch`` and into a companion study of one
      objective (``<name>-curves``) for optuna-dashboard's learning-curve views.
    - No failure to tell the study stops the search: it is logged, and the result stays in the trial's
      Ray folder (trials.csv).
    - No ``save``/``restore``: the study holds the searcher's state, and a resumed search reads it
      there (:mod:`speq_search.search.resume`), never from Ray's saved experiment.
    """

    def __init__(self, spec: SearchSpec, study_path: str | Path, segment: str = "", carried=(), warm_start=(),
                 study_name: str | None = None):
        super().__init__(metric=[o.metric for o in spec.objectives], mode=[o.mode for o in spec.objectives])
        self.spec, self.study_path, self.segment = spec, Path(study_path), segment
        # A study besides the run's own (a one-shot search's evaluations): named in each trial's config.
        self.study_name = study_name if study_name not in (None, spec.name) else None
        self._carried = list(carried)
        self._warm_start = list(warm_start)
        self._numbers: dict[str, int] = {}  # Ray trial id -> Optuna trial number
        self._told: set[str] = set()
        self._live: dict = {}  # study, sampler, curve study, companion trials: never pickled

    # ------------------------------------------------------------------ Ray's Searcher interface
    def set_search_properties(self, metric, mode, config, **spec) -> bool:  # noqa: D102
        return True  # configured by the space; Tune's own metric/mode/config are not used

    def suggest(self, trial_id: str) -> dict | None:
        """The next configuration: a carried trial's, else the sampler's (``study.ask``)."""
        reuse = None
        if self._carried:
            carried = self._carried.pop(0)
            number, params = carried.number, dict(carried.params)
        else:
            trial = self.study.ask({p.name: distribution(p) for p in self.spec.params})
            number, params = trial.number, dict(trial.params)
            reuse = self._reuse(number, params)  # issue 27: no configuration trained twice
        self._numbers[trial_id] = number
        try:
            trial = self.run_study.trial(number)
            trial.set_user_attr("ray_trial_id", trial_id)
            trial.set_user_attr("segment", self.segment)
        except Exception as err:  # noqa: BLE001 - bookkeeping never stops the search
            _logger.warning("could not record trial %s in the Optuna study (%s)", trial_id, err)
        return {**params, schema.TRIAL_KEY: number, **({schema.STUDY_KEY: self.study_name} if self.study_name else {}),
                **({REUSE_KEY: reuse} if reuse else {})}

    def _reuse(self, number: int, params: dict) -> dict | None:
        """Issue 27: key trial ``number``'s effective configuration (:mod:`speq_search.search.dedupe`);
        a completed trial with the same key is reused (what the trainable reports instead of training)."""
        try:
            key = effective_key(self.spec, params)
            self.run_study.trial(number).set_user_attr(KEY_ATTR, key)
            finished = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            return reusable(finished, key, list(self.metric))
        except Exception as err:  # noqa: BLE001 - then it trains: a duplicate costs time, never the search
            _logger.warning("could not compare trial %s with the finished ones (%s: %s)", number, type(err).__name__, err)
            return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Store each epoch's validation accuracy on the running Optuna trial (and its companion)."""
        value, number = result.get("epoch_val_acc"), self._numbers.get(trial_id)
        if number is None or trial_id in self._told or not isinstance(value, (int, float)):
            return
        epoch = int(result.get("epoch", 0)) or None
        try:
            trial = self.run_study.trial(number)
            curve = list(self.run_study.frozen(number).user_attrs.get("val_acc_by_epoch", []))
            index = (epoch or len(curve) + 1) - 1
            curve = (curve + [float("nan")] * (index + 1 - len(curve)))[: index + 1]
            curve[index] = float(value)
            trial.set_user_attr("val_acc_by_epoch", curve)
            self._companion(trial_id, number).report(float(value), step=index + 1)
        except Exception as err:  # noqa: BLE001 - a curve never stops the search
            _logger.warning("could not store an epoch of trial %s in the Optuna study (%s)", trial_id, err)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tell the study what the trial was (see the class docstring)."""
        number = self._numbers.get(trial_id)
        if number is None or trial_id in self._told:
            return
        self._told.add(trial_id)
        status = schema.trial_status(result, "error" if error else "", live=False)
        state = optuna.trial.TrialState[schema.OPTUNA_STATES.get(status, "FAIL")]
        values = None
        if state == optuna.trial.TrialState.COMPLETE:
            values = [(result or {}).get(m) for m in self.metric]
            if status == schema.INFEASIBLE:
                values = [_placeholder(mode) if v is None else v for v, mode in zip(values, self.mode)]
            if any(not isinstance(v, (int, float)) for v in values):
                state, values = optuna.trial.TrialState.FAIL, None
        try:
            if self.run_study.frozen(number).state.is_finished():
                return  # told before a crash (the study commits before Ray saves anything)
            self._tell(number, state, values, result)
            self._tell_companion(trial_id, state, result)
        except Exception as err:  # noqa: BLE001 - the search must go on; the result is in the trial's folder
            _logger.warning("could not record trial %s in the Optuna study (%s: %s)", trial_id, type(err).__name__, err)
            return
        _test_fault_after_tell()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_live"}  # settings only (see module docstring)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _live={})

    # ------------------------------------------------------------------ the study
    @property
    def run_study(self) -> RunStudy:
        """The run's study, opened on first use with the space's sampler and warm-start points."""
        if "study" not in self._live:
            from speq_search.samplers import make_sampler

            run_study = RunStudy(self.spec, self.study_path, make_sampler(self.spec), self.study_name)
            for point in self._warm_start:
                run_study.study.enqueue_trial(point, skip_if_exists=True)
            self._live["study"] = run_study
        return self._live["study"]

    @property
    def study(self) -> optuna.Study:
        """The run's :class:`optuna.Study`."""
        return self.run_study.study

    def _tell(self, number: int, state, values, result: dict | None) -> None:
        trial = self.run_study.trial(number)
        if self.spec.constraints and state == optuna.trial.TrialState.COMPLETE:
            for name, violation in self.spec.violations(result or {}).items():
                trial.set_constraint(name, violation)
        for key in schema.stored_metrics():  # so that study.db alone can be analysed
            if isinstance((result or {}).get(key), (int, float)):
                trial.set_user_attr(key, result[key])
        if isinstance((result or {}).get("reused_from"), int):  # issue 27: told as a reuse of that trial
            trial.set_user_attr("reused_from", result["reused_from"])
        try:
            self.study.tell(trial, values, state=state)
        except RuntimeError as exc:  # GridSampler calls study.stop() when the grid ends, outside optimize()
            if "Study.stop" not in str(exc):
                raise

    def _curve_study(self) -> optuna.Study:
        if "curves" not in self._live:
            self._live["curves"] = optuna.create_study(
                storage=self.run_study.storage, study_name=f"{self.study_name or self.spec.name}{CURVES_SUFFIX}",
                direction="maximize",
                sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner(), load_if_exists=True)
            self._live["companions"] = {}
        return self._live["curves"]

    def _companion(self, trial_id: str, number: int):
        """The companion study's trial for ``trial_id`` (made on its first epoch)."""
        study = self._curve_study()
        companions = self._live["companions"]
        if trial_id not in companions:
            companion = study.ask()
            companion.set_user_attr("trial_number", number)  # the trial of the main study
            companion.set_user_attr("ray_trial_id", trial_id)
            for name, value in self.run_study.frozen(number).params.items():
                companion.set_user_attr(f"param {name}", value)
            companions[trial_id] = companion
        return companions[trial_id]

    def _tell_companion(self, trial_id: str, state, result: dict | None) -> None:
        companion = self._live.get("companions", {}).pop(trial_id, None)
        if companion is None:
            return
        value = (result or {}).get("val_acc")
        if state == optuna.trial.TrialState.COMPLETE and isinstance(value, (int, float)) and math.isfinite(value):
            self._curve_study().tell(companion, float(value))
        else:
            self._curve_study().tell(companion, state=optuna.trial.TrialState.PRUNED
                                     if state == optuna.trial.TrialState.PRUNED else optuna.trial.TrialState.FAIL)


def _placeholder(mode: str) -> float:
    """A finite stand-in for a metric an infeasible (untrained) trial never measured."""
    return 0.0 if mode == "max" else 1e12


def _test_fault_after_tell() -> None:
    """Fault injection for the tests alone: kill this process right after the N-th tell.

    That is the moment between the study's commit and the next write of the run files, where a
    crash once left runs that could not be resumed. Unset, it does nothing.
    """
    left = os.environ.get("SPEQ_SEARCH_TEST_KILL_AFTER_TELL")
    if left is None:
        return
    if int(left) <= 1:
        os.kill(os.getpid(), signal.SIGKILL)
    os.environ["SPEQ_SEARCH_TEST_KILL_AFTER_TELL"] = str(int(left) - 1)
