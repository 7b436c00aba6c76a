"""Run or resume a search: a SearchSpec becomes Ray Tune trials, and the trials the run's files.

A run folder holds the study (``study.db``: every trial asked and how it ended) and lists in
``run.json`` its Ray experiments, one per time the search ran ("segments", named after the run, so
that any number of runs share one storage folder). Resuming reads the study and the experiments
(:mod:`speq_search.search.resume`) and runs what is missing as a new segment.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from speq_search import schema
from speq_search.errors import ConfigError
from speq_search.files import atomic_write
from speq_search.search.cluster import check_nodes
from speq_search.search.folder import RunLock, storage_root
from speq_search.search.prepare import (
    absolute_paths,
    check_supernet,
    prepare_fp,
    proxy_seed,
    sensitivity_seed,
    shared_fp_state,
    warm_points,
)
from speq_search.search.resources import check_resources, local_resources
from speq_search.space import SearchSpec, dump_space


@dataclass
class RunOptions:
    """How to run, not what to search (that is the space)."""

    address: str | None = None  # None: a local Ray instance; "auto" or "host:port": a cluster's head
    storage_path: str | None = None  # where Ray keeps the experiments (shared storage on a cluster)
    verbose: bool = False
    log: object = field(default=None)  # callable(str)
    loggers: tuple[str, ...] = ()  # experiment tracking: tensorboard, mlflow, wandb (search/tracking.py)
    mlflow_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else RUN_DIR/mlruns


def _log(opts: RunOptions):
    return opts.log or (lambda msg: print(msg, file=sys.stderr, flush=True))


def run_search(spec: SearchSpec, run_dir: str | Path, opts: RunOptions | None = None) -> dict:
    """Run the search of ``spec`` into ``run_dir`` (a new folder); return the summary.

    The folder is locked for the whole search (a second search on it fails at once). A search
    that fails before its first trial starts (bad data, resources no node has) removes the
    folder it made, so the same name can be run again.
    """
    from speq_search.search.session import check_address
    from speq_search.search.tracking import check_loggers

    opts = opts or RunOptions()
    run_dir = Path(run_dir).resolve()
    check_address(opts.address)
    storage = storage_root(opts.storage_path)  # an unwritable folder or bucket fails before anything starts
    opts.loggers = check_loggers(opts.loggers, opts.mlflow_uri)  # so does a logger that cannot log
    log = _log(opts)
    if not opts.address:
        check_resources(spec, local_resources(), None, log)  # before the float model trains
    with RunLock(run_dir) as lock:
        if (run_dir / "run.json").exists():
            raise ConfigError("name", str(run_dir), "a new run folder (this one holds a search: resume it to "
                              "continue it)")
        try:
            with _cluster_session(spec, opts, log) as session:
                folder = str(run_dir) if storage == schema.IN_RUN_DIR else storage
                spec = absolute_paths(spec, folder if session and not schema.is_uri(storage) else None)
                check_supernet(spec)
                if session:
                    check_nodes(folder, spec.train, log)  # before the float model trains
                meta, fp_state = _start_run(spec, run_dir, storage, opts, log)
                return _run(spec, run_dir, meta, fp_state, opts, log, resumed=False, started=lock.keep, session=session)
        except BaseException:
            lock.discard()  # only while no trial has started: run_phase disarms it once one may have
            raise


def _cluster_session(spec: SearchSpec, opts: RunOptions, log):
    """On a cluster, the Ray session opens first: the nodes are checked before anything trains."""
    from speq_search.search.session import RaySession

    return RaySession(spec, opts.address, opts.verbose, log) if opts.address else contextlib.nullcontext()


def _start_run(spec: SearchSpec, run_dir: Path, storage: str, opts: RunOptions, log) -> tuple[dict, bytes | None]:
    """The float model, space.yaml, sensitivity.csv and run.json of a new run; returns run.json's content
    and the shared float model (serialised; None when each trial trains its own)."""
    fp_state, reference, chance = prepare_fp(spec, log)
    dump_space(spec, run_dir / "space.yaml")
    meta = {"experiment_name": experiment_name(run_dir, storage), "segments": [], "storage_path": storage,
            "address": opts.address, "reference": reference, "chance_acc": chance, "fp_shared": fp_state is not None,
            "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    if spec.per_layer.get("sensitivity"):
        meta["sensitivity_seed"] = sensitivity_seed(spec, run_dir, log)
    if spec.proxy_warm_start:  # issue 27: warm_start: sensitivity
        meta["proxy_front"] = proxy_seed(spec, run_dir, log)
    if fp_state is not None:
        (run_dir / "fp_model.pt").write_bytes(fp_state)
    atomic_write(run_dir / "run.json", json.dumps(meta, indent=2) + "\n")
    return meta, fp_state


def resume_search(run_dir: str | Path, opts: RunOptions | None = None, num_samples: int | None = None) -> dict:
    """Continue an interrupted search in ``run_dir``: finished trials are kept, the rest run.

    ``num_samples`` (at least the space's) extends a search, finished or not: the same study goes on
    to that many trials (a one-shot search: that many evaluations, before its fine-tuning starts).
    The folder may have been moved or copied since: everything is read from (and written to)
    where it is now. A missing float model is rebuilt.
    """
    from speq_search.search.resume import study_trials
    from speq_search.space import load_space

    opts = opts or RunOptions()
    run_dir = Path(run_dir).resolve()
    if not (run_dir / "run.json").exists() or not (run_dir / "space.yaml").exists():
        raise ConfigError("resume", str(run_dir), "a run folder made by speq-search run (with run.json and space.yaml)")
    log = _log(opts)
    with RunLock(run_dir, field="resume"):
        meta = read_run_json(run_dir)
        # A run folder's space.yaml holds the data folder as the run resolved it (older runs: as
        # given, relative to where they were started), not relative to the run folder.
        spec = load_space(str(run_dir / "space.yaml"), paths_relative_to_file=False)
        if num_samples is not None:
            spec = _extended(spec, run_dir, meta, num_samples)
        if opts.storage_path:
            raise ConfigError("storage_path", opts.storage_path, "nothing when resuming (the run folder's run.json "
                              "says where its experiments are)")
        opts.address = opts.address or meta.get("address")
        if not opts.address:
            check_resources(spec, local_resources(), None, log)
        study_trials(run_dir, spec)  # a corrupt study is one line, before anything starts
        with _cluster_session(spec, opts, log) as session:
            if session:
                check_nodes(schema.experiment_storage(run_dir, meta), spec.train, log)
            fp_state = shared_fp_state(run_dir, spec, meta, log)
            return _run(spec, run_dir, meta, fp_state, opts, log, resumed=True, session=session)


def experiment_name(run_dir: Path, storage: str) -> str:
    """``ray`` inside the run folder; elsewhere named after the run, and unique, so that any number of
    runs share one storage folder (two runs of the same name in different folders included)."""
    return "ray" if storage == schema.IN_RUN_DIR else f"{run_dir.name}-{secrets.token_hex(4)}"


def _extended(spec: SearchSpec, run_dir: Path, meta: dict, num_samples) -> SearchSpec:
    """``spec`` with ``num_samples`` trials (checked, and recorded in the run's space.yaml)."""
    import dataclasses

    from speq_search.config import check_number

    now = spec.search.num_samples
    check_number("--num-samples", num_samples, now, 100000, integer=True)
    if spec.search.sampler == "grid":
        from speq_search.samplers import grid_size

        check_number("--num-samples", num_samples, now, grid_size(spec), integer=True)
    if spec.oneshot is not None and meta.get("oneshot", {}).get("phase") in ("finetune", "done"):
        raise ConfigError("--num-samples", num_samples, f"nothing for this one-shot search (its {now} evaluations are "
                          "done and its best assignments fine-tuned: start a new run, oneshot.supernet reuses its "
                          "supernet)")
    spec = dataclasses.replace(spec, search=dataclasses.replace(spec.search, num_samples=int(num_samples)))
    dump_space(spec, run_dir / "space.yaml")
    return spec


def read_run_json(run_dir: Path) -> dict:
    """A run folder's run.json; an unreadable one is one line naming it."""
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError("run.json", str(run_dir / "run.json"), f"the JSON file speq-search run wrote "
                          f"({type(err).__name__}: the run cannot be resumed without it)") from None
    if not isinstance(meta, dict) or "reference" not in meta:
        raise ConfigError("run.json", str(run_dir / "run.json"), "the JSON file speq-search run wrote (keys "
                          "experiment_name, storage_path, reference)")
    return meta


def _run(spec: SearchSpec, run_dir: Path, meta: dict, fp_state, opts: RunOptions, log, resumed: bool,
         started=None, session=None) -> dict:
    """Run (or resume) the search's trials: one phase, or a one-shot search's three."""
    if spec.oneshot is not None:
        from speq_search.search.oneshot import run_oneshot

        return run_oneshot(spec, run_dir, meta, fp_state, opts, log, resumed, started, session)
    from speq_search.search.phases import Phase, run_phase
    from speq_search.search.resume import carried_trials
    from speq_search.search.trainable import speq_trainable

    carried, asked = carried_trials(run_dir, spec, schema.experiment_folders(run_dir, meta)) if resumed else ([], 0)
    total = spec.search.num_samples
    if spec.search.sampler == "grid" and not resumed:
        from speq_search.samplers import grid_size

        if total < grid_size(spec):
            log(f"grid of {grid_size(spec)} points: running {total} of them (search.num_samples)")
    warm = [] if resumed else warm_points(spec, meta)
    phase = Phase("search", speq_trainable, {"fp_state": fp_state}, total, spec.name, carried=carried, asked=asked,
                  warm_start=warm)
    summary = run_phase(spec, run_dir, meta, opts, phase, log, resumed, started, session)
    if summary.get("n_at_chance"):
        log(f"warning: {summary['n_at_chance']} of {summary['n_completed']} completed trials are at chance level "
            f"(val_acc < {1.5 * summary['chance_acc']:.3f}): check the learning rate, the bits and the data")
    return summary
