"""Ray's OptunaSearch, telling Optuna the truth about failed and early-stopped trials."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
from ray.tune.search import SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from speq_search import schema
from speq_search.spec import Param, SearchSpec

CURVES_SUFFIX = "-curves"  # the companion study of per-epoch validation accuracy


_logger = logging.getLogger(__name__)
_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
# The run folder being resumed: a study storage unpickled from Ray's saved state opens that
# folder's study.db, not the one at the path it was pickled with (the folder may have moved).
_resume_dir: Path | None = None
_resume_experiment: Path | None = None


@contextlib.contextmanager
def resuming_in(run_dir: Path, experiment: Path) -> Iterator[None]:
    """While Ray restores and runs a resumed search: its study is ``run_dir/study.db`` and its
    Ray experiment the folder ``experiment``, wherever they were when the state was saved."""
    global _resume_dir, _resume_experiment
    previous = _resume_dir, _resume_experiment
    _resume_dir, _resume_experiment = Path(run_dir), Path(experiment)
    try:
        yield
    finally:
        _resume_dir, _resume_experiment = previous


class RelocatableSearchGenerator(SearchGenerator):
    """Ray's SearchGenerator, whose restored experiment points where the experiment is now.

    Ray updates the storage of the trials it restores from a moved experiment folder, but the
    generator's saved Experiment keeps its old storage, and every trial created after a resume
    would write to (and fail on) the old place.
    """

    def set_state(self, state: dict) -> None:  # noqa: D102
        super().set_state(state)
        storage = getattr(self._experiment, "storage", None)
        if _resume_experiment is not None and storage is not None:
            storage.storage_fs_path = str(_resume_experiment.parent)
            storage.experiment_dir_name = _resume_experiment.name


class RunStudyStorage(optuna.storages.RDBStorage):
    """The SQLite study of a run folder, ``RUN_DIR/study.db``.

    Ray pickles the searcher (and with it this storage) into the experiment; a plain
    RDBStorage would pickle its absolute URL, so a moved or copied run folder, when resumed,
    would read and write the original's study. This one is rebuilt from the folder being
    resumed (see :func:`resuming_in`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        super().__init__(f"sqlite:///{self.path}")

    def __reduce__(self):
        return (_open_run_storage, (str(self.path),))


def _open_run_storage(path: str) -> RunStudyStorage:
    return RunStudyStorage(_resume_dir / "study.db" if _resume_dir is not None else path)


def _test_fault_after_tell() -> None:
    """Fault injection for the tests alone: kill this process right after the N-th tell.

    That is the moment between the study's commit and Ray's next snapshot of the experiment,
    where a crash once left runs that could not be resumed. Unset, it does nothing.
    """
    left = os.environ.get("SPEQ_SEARCH_TEST_KILL_AFTER_TELL")
    if left is None:
        return
    if int(left) <= 1:
        os.kill(os.getpid(), signal.SIGKILL)
    os.environ["SPEQ_SEARCH_TEST_KILL_AFTER_TELL"] = str(int(left) - 1)


class SpeqOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, with each trial's outcome told to Optuna as what it was.

    - a trial that raised is FAIL, one stopped before its last epoch (ASHA) is PRUNED, and only
      a full-fidelity trial is COMPLETE: Ray's OptunaSearch tells COMPLETE with the last
      reported values whenever a trial reported anything, which would put partial results into
      the front the sampler learns from;
    - Optuna's GridSampler calls ``study.stop()`` once the grid is exhausted, which raises
      outside ``study.optimize``; the trial is stored regardless (Optuna stores it in a
      ``finally``), so that error is ignored;
    - with ``constraints`` (a function of a result giving ``{name: violation}``, <= 0 when met),
      each trial's violations are stored with ``Trial.set_constraint``, which TPE and NSGA-II
      read (constrained domination); an infeasible trial (reported with ``feasible: False`` and never
      trained) is told COMPLETE with placeholder values for the metrics it could not measure,
      which constrained samplers rank below every feasible trial whatever the values;
    - ``warm_start`` points are enqueued (``study.enqueue_trial``) before the first trial;
    - after a crash, Ray's snapshot may still hold as running a trial that the study already
      holds as finished (the study commits first): when Ray reruns it, the study is not told
      again. No failure to tell the study ever aborts the search: it is logged, and the trial's
      result stays in its Ray folder (trials.csv).
    """

    def __init__(self, *args, constraints=None, warm_start=None, **kwargs):
        self._constraints = constraints
        self._warm_start = list(warm_start or [])  # set first: the parent's __init__ sets up the study
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode):  # noqa: D102
        super()._setup_study(mode)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # Named objectives: study.db then reads as val_acc/bitops in any Optuna tool.
            self._ot_study.set_metric_names(list(self.metric) if isinstance(self.metric, (list, tuple))
                                            else [self.metric])
        for point in self._warm_start:
            self._ot_study.enqueue_trial(point, skip_if_exists=True)
        # Optuna keeps no intermediate values in a study of several objectives; a companion
        # study of one objective in the same storage holds each trial's per-epoch validation
        # accuracy, so that optuna-dashboard's learning-curve and intermediate-value views work.
        self._curve_study = optuna.create_study(
            storage=self._storage, study_name=f"{self._study_name}{CURVES_SUFFIX}", direction="maximize",
            sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner(), load_if_exists=True)
        self._curve_trials: dict[str, optuna.trial.Trial] = {}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Store each epoch's validation accuracy on the running Optuna trial.

        Optuna refuses ``Trial.report`` in a multi-objective study (every search here has two or
        three objectives), so the curve goes into the user attribute ``val_acc_by_epoch`` (a
        list, one value per epoch), which optuna-dashboard shows while the trial runs.
        """
        trial = self._ot_trials.get(trial_id)
        value = result.get("epoch_val_acc")
        if trial is None or trial_id in self._completed_trials or not isinstance(value, (int, float)):
            return
        curves = self.__dict__.setdefault("_curves", {})  # absent in a searcher saved before curves
        curve = curves.setdefault(trial_id, [])
        curve.append(float(value))
        try:
            trial.set_user_attr("val_acc_by_epoch", list(curve))
            companion = self._curve_trial(trial_id, trial)
            if companion is not None:
                companion.report(float(value), step=int(result.get("epoch", len(curve))))
        except Exception as err:  # noqa: BLE001 - a curve never stops the search
            _logger.warning("could not store epoch %d of trial %s in the Optuna study (%s)", len(curve), trial_id, err)

    def _curve_trial(self, trial_id: str, trial):
        """The companion study's trial for ``trial_id`` (made on its first epoch)."""
        study = self.__dict__.get("_curve_study")
        if study is None:  # a searcher saved before the companion study existed
            return None
        trials = self.__dict__.setdefault("_curve_trials", {})
        if trial_id not in trials:
            companion = study.ask()
            companion.set_user_attr("trial_number", trial.number)  # the trial of the main study
            companion.set_user_attr("ray_trial_id", trial_id)
            for name, value in trial.params.items():
                companion.set_user_attr(f"param {name}", value)
            trials[trial_id] = companion
        return trials[trial_id]

    def _tell_curve(self, trial_id: str, state, result: dict | None) -> None:
        companion = self.__dict__.get("_curve_trials", {}).pop(trial_id, None)
        if companion is None:
            return
        value = (result or {}).get("val_acc")
        if state == optuna.trial.TrialState.COMPLETE and isinstance(value, (int, float)) and math.isfinite(value):
            self._curve_study.tell(companion, float(value))
        else:
            self._curve_study.tell(companion, state=optuna.trial.TrialState.PRUNED
                                   if state == optuna.trial.TrialState.PRUNED else optuna.trial.TrialState.FAIL)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:  # noqa: D102
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        values = None
        if error:
            state = optuna.trial.TrialState.FAIL
        elif result and not result.get("full_fidelity", True):
            state = optuna.trial.TrialState.PRUNED
        else:
            values = [(result or {}).get(m) for m in self.metric]
            if result and result.get("feasible") is False:
                values = [_placeholder(m) if v is None else v for v, m in zip(values, self.mode)]
            state = optuna.trial.TrialState.COMPLETE
            if any(v is None for v in values):
                state, values = optuna.trial.TrialState.FAIL, None
        trial = self._ot_trials[trial_id]
        self._completed_trials.add(trial_id)
        try:
            finished = self._ot_study.get_trials(deepcopy=False, states=_FINISHED)
            if any(t.number == trial.number for t in finished):
                return  # told before a crash; Ray's snapshot was older than the study
            self._tell(trial, state, values, result)
            self._tell_curve(trial_id, state, result)
        except Exception as err:  # noqa: BLE001 - the search must go on; the result is in the trial's folder
            _logger.warning("could not record trial %s in the Optuna study (%s: %s)", trial_id, type(err).__name__, err)
            return
        _test_fault_after_tell()

    def _tell(self, trial, state, values, result) -> None:
        if self._constraints is not None and state == optuna.trial.TrialState.COMPLETE:
            for name, violation in self._constraints(result).items():
                trial.set_constraint(name, violation)
        for key in schema.stored_metrics():  # so that study.db alone can be analysed
            if isinstance((result or {}).get(key), (int, float)):
                trial.set_user_attr(key, result[key])
        try:
            self._ot_study.tell(trial, values, state=state)
        except RuntimeError as exc:
            if "Study.stop" not in str(exc):
                raise


def _placeholder(mode: str) -> float:
    """A finite stand-in for a metric an infeasible (untrained) trial never measured."""
    return 0.0 if mode == "max" else 1e12


def distribution(p: Param) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution of a space parameter."""
    if p.type == "choice":
        return optuna.distributions.CategoricalDistribution(list(p.values))
    if p.type == "int":
        return optuna.distributions.IntDistribution(int(p.low), int(p.high))
    return optuna.distributions.FloatDistribution(p.low, p.high, log=p.type == "loguniform")


def make_sampler(spec: SearchSpec) -> optuna.samplers.BaseSampler:
    """The sampler the space asks for, seeded."""
    s = spec.search
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if s.sampler == "grid":
        return optuna.samplers.GridSampler({p.name: p.grid_values() for p in spec.params}, seed=s.seed)
    if s.sampler == "nsga2":
        # Optuna's default population (50) would make a small budget pure random sampling.
        population = max(4, min(50, s.num_samples // 4))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=s.seed)
    return optuna.samplers.TPESampler(seed=s.seed, multivariate=True)


def grid_size(spec: SearchSpec) -> int:
    """How many trials an exhaustive grid over the space has."""
    n = 1
    for p in spec.params:
        n *= len(p.grid_values())
    return n
