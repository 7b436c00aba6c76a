"""What a search shows while it runs: a progress line after every finished trial, the run files
rewritten, and a stop once more trials failed than the space allows."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ray.tune import Callback
from ray.tune.stopper import Stopper

from speq_search import schema
from speq_search.search.results import TrialTable, write_outputs
from speq_search.space import SearchSpec


class Progress:
    """Counts trials, prints progress, rewrites the run's files; :attr:`callback` and :attr:`stopper`
    are what the Tuner is given."""

    def __init__(self, spec: SearchSpec, run_dir: Path, experiments: list, reference: dict, log, total: int,
                 mirror: tuple[Path, str] | None = None, label: str = "search"):
        self.spec, self.run_dir, self.experiments, self.reference = spec, run_dir, experiments, reference
        self.log, self.total, self.failures, self.t0 = log, total, 0, time.time()
        # Experiments in object storage: (the run folder's copy of this segment, the store's scheme)
        self.mirror = mirror
        self.label = label  # the phase: "search" (a per-trial search), "supernet", "evaluate", "finetune"
        self.last_line = ""
        self.table = TrialTable()  # rows kept between refreshes: each reads only the trials that changed
        self.callback, self.stopper = _Callback(self), _Stopper(self)

    def copy_trial(self, trial) -> None:
        """Experiments in object storage: copy ``trial``'s small files from where this driver writes them
        (Ray's staging folder, gone when the search ends) into the run folder (:data:`schema.MIRROR`)."""
        if self.mirror is None or not trial.local_path:
            return
        folder, scheme = self.mirror
        source, target = Path(trial.local_path), folder / Path(trial.local_path).name
        target.mkdir(parents=True, exist_ok=True)
        for name in schema.TRIAL_FILES:
            if (source / name).exists():
                shutil.copyfile(source / name, target / name)
        (target / "remote.json").write_text(json.dumps({"uri": f"{scheme}://{trial.path}"}) + "\n")

    def update(self, trials, trial, failed: bool) -> None:
        """After ``trial`` ended (``failed``: it raised): the files and the progress line."""
        self.copy_trial(trial)
        if failed:
            self.failures += 1
        # The trial that just ended still reads RUNNING while its callback runs.
        running = sum(1 for t in trials if t.status == "RUNNING" and t is not trial)
        self.refresh(running)

    def refresh(self, running: int = 0) -> dict:
        """Rewrite trials.csv, pareto.csv and summary.json; print the progress line if it changed."""
        summary, _, df_front = write_outputs(self.run_dir, self.spec, self.experiments, self.reference, plots=False,
                                             table=self.table)
        if self.label == "supernet":  # its epochs were shown as they ended (see result)
            return summary
        self.failures = max(self.failures, summary["n_failed"])
        over = f", {summary['n_infeasible']} over budget" if summary["n_infeasible"] else ""
        finished = summary["n_completed"] + summary["n_infeasible"] + summary["n_failed"] + summary["n_stopped"]
        phase = "" if self.label == "search" else f"{self.label}: "
        line = (f"{phase}{self._done(summary)}/{self.total} done, {running} running, "
                f"{summary['n_failed']} failed{over}; {front_line(df_front, self.spec.objectives)}"
                f"{eta(time.time() - self.t0, finished, self.total)}")
        if line != self.last_line:  # several trials can end in one step (over-budget ones end at once)
            self.log(f"[{time.time() - self.t0:6.0f}s] {line}")
            self.last_line = line
        if self.stopping:
            self.log(f"stopping: {self.failures} failed trials exceed search.max_failures="
                     f"{self.spec.search.max_failures}; finished trials are kept")
        return summary

    def _done(self, summary: dict) -> int:
        """Trials of this phase done (a one-shot search's trials.csv holds two phases: counted apart)."""
        if self.label in ("evaluate", "finetune"):
            return summary.get(f"n_{self.label}d", 0)
        return summary["n_completed"] + summary["n_infeasible"]

    def result(self, trial, result: dict) -> None:
        """Every reported result: copied (object storage); the supernet's epochs shown as they end."""
        self.copy_trial(trial)
        if self.label == "supernet" and "epoch" in result:
            shown = ", ".join(f"{label} {result[k]:.4f}" for k, label in (("high_val_acc", "val acc, highest bits"),
                                                                          ("low_val_acc", "lowest bits"))
                              if isinstance(result.get(k), (int, float)))
            self.log(f"[{time.time() - self.t0:6.0f}s] supernet epoch {result['epoch']}/"
                     f"{self.spec.oneshot.supernet_epochs}" + (f": {shown}" if shown else ""))

    @property
    def stopping(self) -> bool:
        """More trials failed than ``search.max_failures`` allows."""
        return self.failures > self.spec.search.max_failures


class _Callback(Callback):
    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: D102
        self.progress.result(trial, result)  # copies lag a result behind: Ray's logger writes after

    def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: D102
        self.progress.update(trials, trial, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info):  # noqa: D102
        self.progress.update(trials, trial, failed=True)


class _Stopper(Stopper):
    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __call__(self, trial_id, result):  # noqa: D102
        return False

    def stop_all(self):  # noqa: D102
        return self.progress.stopping


def front_line(front, objectives) -> str:
    """``front: 3 points, best val_acc 0.9917 at 15.4 M BitOps`` (the accuracy objective first)."""
    metrics = [o.metric for o in objectives]
    points = front[metrics].drop_duplicates() if len(front) else front  # tied trials: one point
    if not len(points):
        return "front: none yet"
    score = next((o for o in objectives if schema.is_score(o.metric)), objectives[0])
    cost = next((o.metric for o in objectives if o.metric != score.metric), None)
    best = points.sort_values(score.metric, ascending=score.mode == "min").iloc[0]
    where = f" at {cost_text(cost, float(best[cost]))}" if cost else ""
    return f"front: {len(points)} point{'s' * (len(points) != 1)}, best {score.metric} {best[score.metric]:.4f}{where}"


def cost_text(metric: str, value: float) -> str:
    """A cost with its unit, as a person reads it: 15.4 M BitOps, 26.8 KiB, 3.25 avg bits."""
    return schema.format_value(metric, value, style="text")


def eta(elapsed: float, finished: int, total: int) -> str:
    """``; about 4 min left`` from the mean time per finished trial (trials run in parallel too)."""
    if finished <= 0 or finished >= total:
        return ""
    left = elapsed / finished * (total - finished)
    return f"; about {left / 60:.0f} min left" if left >= 90 else f"; about {left:.0f} s left"
