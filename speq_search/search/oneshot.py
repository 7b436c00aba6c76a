"""A one-shot search (a space with a ``oneshot:`` section): one supernet trained so that every
per-layer assignment of the space works, the assignments searched by evaluating it, the best of
them fine-tuned.

Three phases on Ray Tune, each a :class:`~speq_search.search.phases.Phase`, each resumable from
where it stopped (run.json's ``oneshot.phase``):

1. ``supernet``: one trial trains the supernet (:mod:`speq_search.train.supernet`) from the shared
   float model, reporting every epoch with a checkpoint; its weights are kept as ``RUN_DIR/supernet.pt``;
2. ``evaluate``: ``search.num_samples`` trials, each a per-layer assignment the space's sampler
   proposes (the study ``<name>-supernet``, under the space's budgets), set on the supernet,
   BatchNorm recalibrated, validated: seconds each; the supernet travels to the workers once
   (Ray's object store) and a worker keeps it between evaluations;
3. ``finetune``: the best ``oneshot.finetune_top`` assignments of the evaluated front (by
   non-dominated sorting, then crowding) are fine-tuned from the supernet's weights as ordinary
   trials (the study ``<name>``); they make the run's front (``pareto.csv``, the hypervolume).
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
from pathlib import Path

import numpy as np
import pandas as pd

from speq_search import schema
from speq_search.errors import ConfigError
from speq_search.search.phases import Phase, phase_finished, run_phase, segment_folders, write_run_json
from speq_search.space import SearchSpec

SUPERNET_FILE = "supernet.pt"  # in the run folder: the trained supernet's weights
PHASES = ("supernet", "evaluate", "finetune", "done")


def eval_study(spec: SearchSpec) -> str:
    """The study of a one-shot search's evaluations (the run's own study holds its fine-tuned trials)."""
    return f"{spec.name}-supernet"


def run_oneshot(spec: SearchSpec, run_dir: Path, meta: dict, fp_state, opts, log, resumed: bool, started=None,
                session=None) -> dict:
    """Run (or resume) a one-shot search's phases from the one it stopped in; return the summary."""
    from speq_search.search.results import write_outputs
    from speq_search.search.session import RaySession

    state = meta.setdefault("oneshot", {"phase": "supernet"})
    summary = None
    with contextlib.nullcontext(session) if session else RaySession(spec, opts.address, opts.verbose, log) as held, \
            _Interrupts() as interrupts:
        if state["phase"] == "supernet" and spec.oneshot.supernet:
            _reuse_supernet(spec, run_dir, meta, state, log)
        while state["phase"] != "done":
            phase = _phase(spec, run_dir, meta, fp_state, state)
            summary = run_phase(spec, run_dir, meta, opts, phase, log, resumed, started, held)
            interrupts.arm()  # Ray Tune's own handler stood in during the phase
            if summary["interrupted"] or summary["stopped_on_failures"] or not phase_finished(run_dir, spec, meta, phase):
                summary["interrupted"] = not summary["stopped_on_failures"]
                summary["phase"] = state["phase"]
                return summary
            _advance(spec, run_dir, meta, state, log)
            if interrupts.seen and state["phase"] != "done":  # Ctrl-C between two phases
                summary.update(interrupted=True, phase=state["phase"])
                return summary
    if summary is None:  # resumed after the last phase ended: the files are rewritten, nothing runs
        summary = write_outputs(run_dir, spec, schema.experiment_folders(run_dir, meta), meta["reference"],
                                extra={"run_dir": str(run_dir), "resumed": resumed},
                                chance_acc=meta.get("chance_acc")).summary
        summary.update(stopped_on_failures=False, interrupted=False)
    summary["phase"] = "done"
    return summary


class _Interrupts:
    """Ctrl-C between two phases (no Tuner running, so Ray Tune's graceful stop is not there to take
    it): noted, and the search stops before the next phase, as it stops within one."""

    def __init__(self) -> None:
        self.seen, self._previous, self._armed = False, None, False

    def _handler(self, signum, frame) -> None:
        self.seen = True

    def arm(self) -> None:
        try:
            signal.signal(signal.SIGINT, self._handler)
            self._armed = True
        except ValueError:  # not the main thread (a caller's own thread): Ctrl-C is theirs
            self._armed = False

    def __enter__(self) -> _Interrupts:
        try:
            self._previous = signal.getsignal(signal.SIGINT)
        except ValueError:
            self._previous = None
        self.arm()
        return self

    def __exit__(self, *exc) -> None:
        if self._armed and self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _phase(spec: SearchSpec, run_dir: Path, meta: dict, fp_state, state: dict) -> Phase:
    from speq_search.search.prepare import warm_points
    from speq_search.search.resume import carried_trials, last_checkpoint, latest_folders_any
    from speq_search.search.trainable import evaluate_trainable, speq_trainable, supernet_trainable

    shot = spec.oneshot
    if state["phase"] == "supernet":
        folders = latest_folders_any(segment_folders(run_dir, meta, "supernet_segments"))
        resume_from = last_checkpoint(folders[-1]) if folders else None
        return Phase("supernet", supernet_trainable, {"fp_state": fp_state, "resume_from": resume_from}, 1, None,
                     segments="supernet_segments", suffix="-supernet", scheduler=False, items="supernet")
    experiments = schema.experiment_folders(run_dir, meta)
    weights = supernet_bytes(run_dir)
    if state["phase"] == "evaluate":
        carried, asked = carried_trials(run_dir, spec, experiments, eval_study(spec))
        # The space's warm starts, the sensitivity seed and the proxy front: evaluated first, as a per-trial search would.
        warm = [] if asked else warm_points(spec, meta)
        return Phase("evaluate", evaluate_trainable, {"supernet": weights, "key": hashlib.sha1(weights).hexdigest()},
                     spec.search.num_samples, eval_study(spec), suffix="-eval", carried=carried, asked=asked,
                     warm_start=warm, scheduler=False, items="evaluations")
    carried, asked = carried_trials(run_dir, spec, experiments)
    changes = {"optim.epochs": shot.finetune_epochs, "optim.lr": shot.finetune_learning_rate(spec.train.optim)}
    return Phase("finetune", speq_trainable, {"fp_state": None, "init_state": weights, "changes": changes,
                                             "fidelity": "finetuned"},
                 len(state["finetune"]), spec.name, suffix="-finetune", carried=carried, asked=asked,
                 warm_start=[] if asked else list(state["finetune"]), scheduler=False, items="fine-tunes")


def supernet_bytes(run_dir: Path) -> bytes:
    """The trained supernet's weights, as the supernet phase left them in the run folder."""
    path = run_dir / SUPERNET_FILE
    if not path.exists():
        raise ConfigError("supernet", str(path), "the weights the supernet phase saved (the file is gone: restore it, "
                          "or start a new run)")
    return path.read_bytes()


def _reuse_supernet(spec: SearchSpec, run_dir: Path, meta: dict, state: dict, log) -> None:
    """``oneshot.supernet`` names a trained supernet (checked when the run started): no supernet phase."""
    from speq_search.files import atomic_write

    data = Path(spec.oneshot.supernet).read_bytes()
    atomic_write(run_dir / SUPERNET_FILE, lambda tmp: Path(tmp).write_bytes(data))
    log(f"supernet: {spec.oneshot.supernet} (trained earlier; no supernet phase)")
    state["phase"] = "evaluate"
    write_run_json(run_dir, meta)


def _advance(spec: SearchSpec, run_dir: Path, meta: dict, state: dict, log) -> None:
    """A phase ended: keep what the next one needs, and move on (run.json says so)."""
    if state["phase"] == "supernet":
        _keep_supernet(run_dir, meta)
        state["phase"] = "evaluate"
    elif state["phase"] == "evaluate":
        from speq_search.search.results import collect_trials

        trials = collect_trials(schema.experiment_folders(run_dir, meta), spec)
        state["finetune"] = select_finetune(trials, spec, spec.oneshot.finetune_top)
        log(f"fine-tuning the {len(state['finetune'])} best assignments of the evaluated front")
        state["phase"] = "finetune"
    else:
        state["phase"] = "done"
    write_run_json(run_dir, meta)


def _keep_supernet(run_dir: Path, meta: dict) -> None:
    """Copy the supernet's weights from its trial's last checkpoint into the run folder."""
    from speq_search.search.resume import last_checkpoint, latest_folders_any

    folders = [f for f in latest_folders_any(segment_folders(run_dir, meta, "supernet_segments"))
               if f.last.get("supernet_ready")]
    checkpoint = last_checkpoint(folders[-1]) if folders else None
    if checkpoint is None:
        raise RuntimeError("the supernet trial ended without a checkpoint of its weights; please report it")
    if schema.is_uri(checkpoint):
        import tempfile

        from speq_search.storage import download

        with tempfile.TemporaryDirectory() as tmp:
            data = (download(checkpoint, Path(tmp)) / SUPERNET_FILE).read_bytes()
    else:
        data = (Path(checkpoint) / SUPERNET_FILE).read_bytes()
    from speq_search.files import atomic_write

    atomic_write(run_dir / SUPERNET_FILE, lambda tmp: Path(tmp).write_bytes(data))


def select_finetune(trials: pd.DataFrame, spec: SearchSpec, k: int) -> list[dict]:
    """The ``k`` assignments to fine-tune: the evaluated trials' non-dominated fronts in order
    (``moocore.pareto_rank``), the last one taken by crowding distance (its extremes first), one per
    distinct assignment; as ``{parameter: value}`` points for the study."""
    import moocore

    done = trials[(trials["status"] == schema.COMPLETED) & (trials.get("fidelity") == "supernet")]
    metrics = [o.metric for o in spec.objectives]
    done = done.dropna(subset=metrics)
    key = "layer_bits" if "layer_bits" in done else None
    if key:
        done = done.sort_values(metrics[0], ascending=spec.objectives[0].mode == "min").drop_duplicates(key)
    if done.empty:
        return []
    values = done[metrics].to_numpy(dtype=float)
    ranks = moocore.pareto_rank(values, maximise=[o.mode == "max" for o in spec.objectives])
    chosen: list[int] = []
    for rank in np.unique(ranks):
        members = np.flatnonzero(ranks == rank)
        if len(chosen) + len(members) > k:
            members = members[np.argsort(-_crowding(values[members]), kind="stable")][: k - len(chosen)]
        chosen += members.tolist()
        if len(chosen) >= k:
            break
    names = [p.name for p in spec.params]
    return [{n: _native(done.iloc[i][n]) for n in names} for i in chosen]


def _crowding(values: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each point among ``values`` (the extremes: infinite)."""
    n, distance = len(values), np.zeros(len(values))
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(values.shape[1]):
        order = np.argsort(values[:, j], kind="stable")
        span = values[order[-1], j] - values[order[0], j]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (values[order[2:], j] - values[order[:-2], j]) / span
    return distance


def _native(value):
    return value.item() if hasattr(value, "item") else value
