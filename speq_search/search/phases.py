"""One run of Ray Tune within a search (a "phase"): the trials of a per-trial search, or one of the
three phases of a one-shot search (the supernet, its evaluations, the fine-tuning).

Each phase writes its own Ray experiment (a "segment" of the run, named after it and listed in
``run.json``), asks its own Optuna study (none for the supernet's single trial), and, resumed,
runs what it is missing: its carried trials (:mod:`speq_search.search.resume`), then new ones up
to its total.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from speq_search import schema
from speq_search.files import atomic_write
from speq_search.search.results import write_outputs
from speq_search.space import SearchSpec


@dataclass
class Phase:
    """What one phase runs."""

    label: str  # how the progress lines name it
    trainable: Callable  # a function trainable (speq_search.search.trainable)
    params: dict  # its keywords besides ``spec`` (tune.with_parameters: large values travel once)
    total: int  # its trials in all, across resumes
    study: str | None  # the Optuna study it asks; None: one trial of a fixed configuration
    segments: str = "segments"  # the run.json list of its experiments
    suffix: str = ""  # of its experiments' names
    carried: list = field(default_factory=list)  # trials a resume runs again
    asked: int = 0  # trials its study holds already
    warm_start: list = field(default_factory=list)  # points enqueued in its study first
    scheduler: bool = True  # the space's scheduler applies (else every trial runs to its end)
    items: str = "trials"  # what its trials are, for the start line


def new_segment(run_dir: Path, meta: dict, key: str = "segments", suffix: str = "") -> str:
    """Name and record (in run.json, before anything runs in it) the experiment a phase writes now."""
    if key == "segments" and "segments" not in meta:  # a run made before segments: its one experiment is the first
        meta["segments"] = [meta.get("experiment_name", "ray")]
    segments = meta.setdefault(key, [])
    base = meta["experiment_name"] + suffix
    name = base if not segments else f"{base}-r{len(segments)}"
    segments.append(name)
    write_run_json(run_dir, meta)
    return name


def write_run_json(run_dir: Path, meta: dict) -> None:
    """run.json, whole or not at all."""
    atomic_write(run_dir / "run.json", json.dumps(meta, indent=2) + "\n")


def segment_folders(run_dir: Path, meta: dict, key: str) -> list[Path]:
    """The folders to read the experiments of run.json's list ``key`` from (oldest first)."""
    folders = schema.experiment_folders(run_dir, dict(meta, segments=meta.get(key) or []))
    return folders if meta.get(key) else []


def run_phase(spec: SearchSpec, run_dir: Path, meta: dict, opts, phase: Phase, log, resumed: bool = False,
              started=None, session=None) -> dict:
    """Run what ``phase`` is missing as a new segment, in ``session`` (else a Ray session opened
    here); rewrite the run files; return the summary, with ``interrupted`` and ``stopped_on_failures``.
    ``started()`` is called once trials may have run (the folder is then kept)."""
    from speq_search.search.progress import Progress
    from speq_search.search.session import RaySession
    from speq_search.search.tuner import make_tuner

    to_run = len(phase.carried) + max(0, phase.total - phase.asked)
    segment = new_segment(run_dir, meta, phase.segments, phase.suffix) if to_run else None
    experiments = schema.experiment_folders(run_dir, meta)
    mirror = None
    if schema.is_uri(meta.get("storage_path")) and segment:
        mirror = (segment_folders(run_dir, meta, phase.segments)[-1], meta["storage_path"].split("://", 1)[0])
    progress = Progress(spec, run_dir, experiments, meta["reference"], log, phase.total, mirror, label=phase.label)
    if to_run:
        with contextlib.nullcontext() if session else RaySession(spec, opts.address, opts.verbose, log):
            tuner = make_tuner(spec, run_dir, segment, schema.experiment_storage(run_dir, meta), opts, progress,
                               phase, to_run)
            if resumed:
                log(f"resuming {run_dir}: {len(phase.carried)} unfinished {phase.items} continue, "
                    f"{to_run - len(phase.carried)} new")
            _start_line(spec, phase, log)
            if started is not None:
                started()
            tuner.fit()
    summary = write_outputs(run_dir, spec, experiments, meta["reference"],
                            extra={"run_dir": str(run_dir), "resumed": resumed},
                            chance_acc=meta.get("chance_acc"), table=progress.table).summary
    summary["stopped_on_failures"] = progress.stopping
    summary["interrupted"] = not phase_finished(run_dir, spec, meta, phase) and not progress.stopping
    return summary


def _start_line(spec: SearchSpec, phase: Phase, log) -> None:
    if phase.study is None:
        log(f"{phase.label}: one trial")
        return
    sampler = spec.search.sampler if isinstance(spec.search.sampler, str) else spec.search.sampler.get("name")
    log(f"{phase.label} '{spec.name}': {phase.total} {phase.items}, sampler {sampler}, up to "
        f"{spec.search.max_concurrent} at a time, objectives "
        + ", ".join(f"{o.metric} ({o.mode})" for o in spec.objectives))


def phase_finished(run_dir: Path, spec: SearchSpec, meta: dict, phase: Phase) -> bool:
    """Every trial of ``phase`` ended: its study holds ``total`` finished trials and none running
    (the supernet: its last result says its weights are saved)."""
    if phase.study is None:
        from speq_search.search.resume import latest_folders_any

        folders = latest_folders_any(segment_folders(run_dir, meta, phase.segments))
        return any(f.last.get("supernet_ready") for f in folders)
    from speq_search.search.resume import study_trials

    trials = study_trials(run_dir, spec, phase.study)
    ended = [t for t in trials if t.state.is_finished()]
    return len(ended) >= phase.total and not any(t.state.name == "RUNNING" for t in trials)
