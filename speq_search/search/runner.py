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
from speq_search.search.prepare import absolute_paths, prepare_fp, proxy_seed, sensitivity_seed, shared_fp_state
from speq_search.search.resources import check_resources, local_resources
from speq_search.search.results import write_outputs
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
                if session:
                    check_nodes(folder, spec.train, log)  # before the float model trains
                meta, fp_state = _start_run(spec, run_dir, storage, opts, log)
                return _execute(spec, run_dir, meta, fp_state, opts, [], 0, started=lock.keep, session=session)
        except BaseException:
            lock.discard()  # only while no trial has started: _execute disarms it once one may have
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


def resume_search(run_dir: str | Path, opts: RunOptions | None = None) -> dict:
    """Continue an interrupted search in ``run_dir``: finished trials are kept, the rest run.

    The folder may have been moved or copied since: everything is read from (and written to)
    where it is now. A missing float model is rebuilt.
    """
    from speq_search.search.resume import carried_trials
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
        if opts.storage_path:
            raise ConfigError("storage_path", opts.storage_path, "nothing when resuming (the run folder's run.json "
                              "says where its experiments are)")
        opts.address = opts.address or meta.get("address")
        if not opts.address:
            check_resources(spec, local_resources(), None, log)
        carried, asked = carried_trials(run_dir, spec, schema.experiment_folders(run_dir, meta))
        with _cluster_session(spec, opts, log) as session:
            if session:
                check_nodes(schema.experiment_storage(run_dir, meta), spec.train, log)
            fp_state = shared_fp_state(run_dir, spec, meta, log)
            return _execute(spec, run_dir, meta, fp_state, opts, carried, asked, resumed=True, session=session)


def experiment_name(run_dir: Path, storage: str) -> str:
    """``ray`` inside the run folder; elsewhere named after the run, and unique, so that any number of
    runs share one storage folder (two runs of the same name in different folders included)."""
    return "ray" if storage == schema.IN_RUN_DIR else f"{run_dir.name}-{secrets.token_hex(4)}"


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


def _new_segment(run_dir: Path, meta: dict) -> str:
    """Name and record the experiment this run of the search writes (before anything runs in it)."""
    if "segments" not in meta:  # a run made before segments: its one experiment is the first
        meta["segments"] = [meta.get("experiment_name", "ray")]
    segments = meta["segments"]
    base = meta["experiment_name"]
    name = base if not segments else f"{base}-r{len(segments)}"
    segments.append(name)
    atomic_write(run_dir / "run.json", json.dumps(meta, indent=2) + "\n")
    return name


def _execute(spec: SearchSpec, run_dir: Path, meta: dict, fp_state, opts: RunOptions, carried: list, asked: int,
             resumed: bool = False, started=None, session=None) -> dict:
    """Run what is missing (``carried`` trials, then new ones up to ``search.num_samples``) as a new
    segment, in ``session`` (else a Ray session opened here); ``started()`` is called once trials may
    have run (the folder is then kept)."""
    from speq_search.search.progress import Progress
    from speq_search.search.session import RaySession
    from speq_search.search.tuner import make_tuner

    log = _log(opts)
    total = spec.search.num_samples
    to_run = len(carried) + max(0, total - asked)
    if spec.search.sampler == "grid" and not resumed:
        from speq_search.samplers import grid_size

        if total < grid_size(spec):
            log(f"grid of {grid_size(spec)} points: running {total} of them (search.num_samples)")
    segment = _new_segment(run_dir, meta) if to_run else None
    experiments = schema.experiment_folders(run_dir, meta)
    mirror = None
    if schema.is_uri(meta.get("storage_path")) and segment:
        mirror = (experiments[-1], meta["storage_path"].split("://", 1)[0])
    progress = Progress(spec, run_dir, experiments, meta["reference"], log, total, mirror)
    if to_run:
        with contextlib.nullcontext() if session else RaySession(spec, opts.address, opts.verbose, log):
            warm = [] if resumed else list(spec.warm_start) + ([meta["sensitivity_seed"]] if meta.get("sensitivity_seed")
                                                               else []) + list(meta.get("proxy_front", []))
            tuner = make_tuner(spec, run_dir, segment, schema.experiment_storage(run_dir, meta), fp_state, opts,
                               progress, to_run, carried, warm)
            if resumed:
                log(f"resuming {run_dir}: {len(carried)} unfinished trial(s) continue, {to_run - len(carried)} new")
            log(f"search '{spec.name}': {total} trials, sampler {spec.search.sampler}, up to "
                f"{spec.search.max_concurrent} at a time, objectives "
                + ", ".join(f"{o.metric} ({o.mode})" for o in spec.objectives))
            if started is not None:
                started()
            tuner.fit()
    summary = write_outputs(run_dir, spec, experiments, meta["reference"],
                            extra={"run_dir": str(run_dir), "resumed": resumed},
                            chance_acc=meta.get("chance_acc"), table=progress.table).summary
    if summary.get("n_at_chance"):
        log(f"warning: {summary['n_at_chance']} of {summary['n_completed']} completed trials are at chance level "
            f"(val_acc < {1.5 * summary['chance_acc']:.3f}): check the learning rate, the bits and the data")
    finished = summary["n_completed"] + summary["n_failed"] + summary["n_stopped"] + summary["n_infeasible"]
    summary["stopped_on_failures"] = progress.stopping
    summary["interrupted"] = finished < total and not summary["stopped_on_failures"]
    return summary

