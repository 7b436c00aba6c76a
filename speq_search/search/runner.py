"""Run a search: a SearchSpec becomes a Ray Tune Tuner; its trials become the run's files.

This package is the only place that imports Ray.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from speq_search import schema
from speq_search.errors import ConfigError
from speq_search.files import atomic_write
from speq_search.schema import experiment_root
from speq_search.search.folder import RunLock, storage_root
from speq_search.search.results import TrialTable, write_outputs
from speq_search.spec import SearchSpec, dump_space, fields_of

# Fields that change the full-precision model: when one is searched, each trial gets its
# own FP model (from the shared cache) instead of the one trained before the trials.
_FP_FIELDS = ("model.", "data.", "optim.fp_", "optim.optimizer", "optim.momentum", "optim.weight_decay", "seed")


@dataclass
class RunOptions:
    """How to run, not what to search (that is the space)."""

    address: str | None = None  # None: a local Ray instance; "auto" or "ray://host:port": a cluster
    storage_path: str | None = None  # where Ray keeps the experiment (shared storage on a cluster)
    verbose: bool = False
    log: object = field(default=None)  # callable(str)
    loggers: tuple[str, ...] = ()  # experiment tracking: tensorboard, mlflow, wandb (search/tracking.py)
    mlflow_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else RUN_DIR/mlruns


def _log(opts: RunOptions):
    return opts.log or (lambda msg: print(msg, file=sys.stderr, flush=True))


def _auth_token() -> str:
    """The token this process's local Ray instance demands of every client: the user's, or made now.

    Made once per process (Ray caches the token it loaded), kept in this process's environment
    alone (readable only by the user, inherited by Ray's daemons and workers), never in a run file.
    """
    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token:
        token = secrets.token_hex(32)
        os.environ["RAY_AUTH_TOKEN"] = token
    return token


def _enable_token_auth() -> None:
    """Token authentication for the local instance this process starts, and for this process as its client.

    Ray reads RAY_AUTH_MODE into a cached config when it is first imported, and caches the
    token it loaded: both are refreshed here, as Ray's own ``ray.init`` does when it turns
    authentication on (``ray._raylet``; tested with Ray 2.60, see pyproject's bounds).
    """
    os.environ["RAY_AUTH_MODE"] = "token"
    _auth_token()
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


class _RaySession:
    """The Ray instance a search runs on: a cluster it joins, or a local instance it starts and stops.

    A local instance demands token authentication (no process without this run's token can join
    it or run work on it, whatever address its servers listen on), keeps its session files in a
    private temporary folder, and is shut down and cleaned up when the search ends.
    """

    def __init__(self, spec: SearchSpec, opts: RunOptions) -> None:
        self.spec, self.opts = spec, opts
        self.started = False
        self.temp_dir: str | None = None

    def __enter__(self) -> _RaySession:
        import ray

        opts = self.opts
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        if not opts.verbose:
            # The legacy reporter honours verbose=0 (the new one prints a header and hints regardless).
            os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
            import warnings

            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        if self.spec.constraints:
            # An over-budget trial reports its costs and no accuracy (it is never trained).
            os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
        runtime_env = {"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0", "PYTHONUNBUFFERED": "1"}}
        from speq_search.plugins import runtime_env_for

        plugins = runtime_env_for(self.spec.train.plugins)  # ship the plugins to every worker
        if plugins:
            runtime_env["py_modules"] = plugins["py_modules"]
            runtime_env["env_vars"].update(plugins["env_vars"])
        if ray.is_initialized():  # the caller's own Ray (Python API): use it as it is
            return self
        if opts.address:
            _log(opts)(f"connecting to the Ray cluster at {opts.address}")
            ray.init(address=opts.address, log_to_driver=opts.verbose, runtime_env=runtime_env)
            self.started = True
            _check_resources(self.spec, ray.cluster_resources(), opts.address, _log(opts))
            return self
        _log(opts)("starting a local Ray instance (127.0.0.1, token authentication)")
        _enable_token_auth()
        _remove_stale_sessions()
        # Ray makes its own temp folder world-writable: it goes inside a private (0700) one.
        self.temp_dir = tempfile.mkdtemp(prefix=f"speq-ray-{os.getpid()}-")
        # address="local": always a new instance, even where `ray start` left a cluster (or its
        # stale address file) on this machine, which a bare ray.init() would try to join.
        try:
            ray.init(address="local", num_cpus=os.cpu_count() or 1, num_gpus=_local_gpus(), include_dashboard=False,
                     log_to_driver=opts.verbose, object_store_memory=256 * 1024 * 1024, runtime_env=runtime_env,
                     logging_level="ERROR" if not opts.verbose else "INFO",
                     _temp_dir=os.path.join(self.temp_dir, "ray"))
        except BaseException:
            self.__exit__()
            raise
        self.started = True
        return self

    def __exit__(self, *exc) -> None:
        import ray

        if self.started:
            ray.shutdown()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def _remove_stale_sessions() -> None:
    """Remove the private Ray folders of this user's searches whose process is gone (killed with -9)."""
    import glob

    for folder in glob.glob(os.path.join(tempfile.gettempdir(), "speq-ray-*-*")):
        try:
            pid = int(os.path.basename(folder).split("-")[2])
            if os.stat(folder).st_uid != os.getuid():
                continue
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, IndexError, OSError):
            continue


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA: no GPUs
        return 0


def _local_resources() -> dict:
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(_local_gpus())}


def _check_resources(spec: SearchSpec, available: dict, address: str | None, log) -> None:
    """Refuse a per-trial request no node of a local instance can meet (Ray would wait for it forever).

    On a cluster (``address``), nodes may still join (an autoscaler): a warning, within seconds.
    """
    s = spec.search
    for key, flag, want in (("CPU", "cpus_per_trial", s.cpus_per_trial), ("GPU", "gpus_per_trial", s.gpus_per_trial)):
        have = float(available.get(key, 0.0))
        if want > have:
            what = f"at most {have:g} ({'the cluster' if address else 'this machine'} has {have:g} {key}s)"
            if address:
                log(f"warning: search.{flag}={want:g} but the cluster now has {have:g} {key}s; trials wait until "
                    "nodes with enough join")
            else:
                raise ConfigError(f"search.{flag}", want, what)


def _absolute_paths(spec: SearchSpec) -> SearchSpec:
    """Trials run in other folders (and machines): make file paths absolute."""
    changes = {}
    if spec.train.data.data_dir:
        changes["data.data_dir"] = str(Path(spec.train.data.data_dir).expanduser().resolve())
    if spec.train.fp_checkpoint:
        changes["fp_checkpoint"] = str(Path(spec.train.fp_checkpoint).expanduser().resolve())
    from speq_search.train import fp_cache_dir

    changes["fp_cache_dir"] = str(fp_cache_dir(spec.train).resolve())
    return dataclasses.replace(spec, train=spec.train.replace(**changes))


def _prepare_fp(spec: SearchSpec, log) -> tuple[bytes | None, dict, float]:
    """Train (or load) the FP model once, before the trials; its costs give the reference point.

    Returns the serialised float model (``None`` when each trial trains its own), the reference
    costs and the chance-level accuracy (1 / classes)."""
    from speq_search.costs import model_costs
    from speq_search.search.trainable import serialise_state
    from speq_search.train import build_model, full_precision_model, load_data, resolve_device

    cfg = spec.train
    splits = load_data(cfg)
    float_costs = model_costs(build_model(cfg, splits), splits.train.x[:1]).as_dict()
    reference = {k: float_costs[k] for k in schema.model_cost_metrics()}
    chance = 1.0 / max(int(splits.num_classes), 1)
    searched = [f for p in spec.params for f in fields_of(p.name)]
    if any(f.startswith(_FP_FIELDS) for f in searched):
        log("full-precision model: per trial (the search changes it); cached in " + str(cfg.fp_cache_dir))
        return None, reference, chance
    model, info = full_precision_model(cfg, splits, resolve_device(cfg.device), log)
    log(f"full-precision model: val acc {info['fp_val_acc']:.4f}, shared by every trial")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return serialise_state(state), reference, chance


def _sensitivity(spec: SearchSpec, run_dir: Path, log) -> dict:
    """Score every layer once (RUN_DIR/sensitivity.csv); return the warm-start point it suggests."""
    from speq_search.sensitivity import layer_sensitivity, sensitivity_seed, write_sensitivity_csv

    bits = min(min(spec.per_layer.get(k) or [8]) for k in ("w_bits", "a_bits"))
    log(f"per-layer sensitivity: each layer alone at {bits} bits, the rest at 8")
    base, scores = layer_sensitivity(spec.train, probe_bits=bits)
    write_sensitivity_csv(run_dir / "sensitivity.csv", base, scores, bits)
    top = sorted(scores, key=lambda s: -s.drop)[:3]
    log("most sensitive: " + ", ".join(f"{s.layer} ({s.drop:+.4f})" for s in top))
    choices = {p.name: list(p.values) for p in spec.params if "@" in p.name}
    return sensitivity_seed(scores, choices)


# The search running in this process. Ray pickles the run's callbacks and stopper into the
# experiment (tuner.pkl); a resumed search gets this search's, not the saved ones, which hold
# the paths and counters of the process that made them.
_active_progress: _Progress | None = None


def _active_part(name: str):
    if _active_progress is None:
        raise RuntimeError("a speq-search experiment is restored only by speq_search.search.resume_search")
    return getattr(_active_progress, name)


class _Progress:
    """Ray callback + stopper: counts trials, prints progress, rewrites the run's files."""

    def __init__(self, spec: SearchSpec, run_dir: Path, experiment: Path, reference: dict, log, total: int):
        from ray.tune import Callback
        from ray.tune.stopper import Stopper

        progress = self

        class _Callback(Callback):
            def __reduce__(self):
                return (_active_part, ("callback",))

            def on_trial_complete(self, iteration, trials, trial, **info):
                progress.update(trials, trial, failed=False)

            def on_trial_error(self, iteration, trials, trial, **info):
                progress.update(trials, trial, failed=True)

        class _Stopper(Stopper):
            def __reduce__(self):
                return (_active_part, ("stopper",))

            def __call__(self, trial_id, result):
                return False

            def stop_all(self):
                return progress.failures > progress.spec.search.max_failures

        self.callback, self.stopper = _Callback(), _Stopper()
        self.spec, self.run_dir, self.experiment, self.reference = spec, run_dir, experiment, reference
        self.log, self.total, self.failures, self.t0 = log, total, 0, time.time()
        self.last_line = ""
        self.table = TrialTable()  # rows kept between refreshes: each reads only the trials that changed

    def update(self, trials, trial, failed: bool) -> None:
        if failed:
            self.failures += 1
        # The trial that just ended still reads RUNNING while its callback runs.
        running = sum(1 for t in trials if t.status == "RUNNING" and t is not trial)
        self.refresh(running)

    def refresh(self, running: int = 0) -> dict:
        summary, _, df_front = write_outputs(self.run_dir, self.spec, self.experiment, self.reference, plots=False,
                                             table=self.table)
        self.failures = max(self.failures, summary["n_failed"])
        over = f", {summary['n_infeasible']} over budget" if summary["n_infeasible"] else ""
        finished = summary["n_completed"] + summary["n_infeasible"] + summary["n_failed"] + summary["n_stopped"]
        line = (f"{summary['n_completed'] + summary['n_infeasible']}/{self.total} done, {running} running, "
                f"{summary['n_failed']} failed{over}; {front_line(df_front, self.spec.objectives)}"
                f"{eta(time.time() - self.t0, finished, self.total)}")
        if line != self.last_line:  # several trials can end in one step (over-budget ones end at once)
            self.log(f"[{time.time() - self.t0:6.0f}s] {line}")
            self.last_line = line
        if self.failures > self.spec.search.max_failures:
            self.log(f"stopping: {self.failures} failed trials exceed search.max_failures="
                     f"{self.spec.search.max_failures}; finished trials are kept")
        return summary


def _cost_text(metric: str, value: float) -> str:
    """A cost with its unit (:func:`speq_search.schema.unit`), as a person reads it: 15.4 M BitOps,
    26.8 KiB, 3.25 avg bits."""
    unit = schema.unit(metric)
    if unit in ("BitOps", "MACs"):
        return f"{value / 1e9:.2f} G {unit}" if value >= 1e9 else f"{value / 1e6:.1f} M {unit}"
    if unit == "bytes":
        return f"{value / 1024:.1f} KiB"
    if unit == "params":
        return f"{value / 1e3:.1f} k params"
    return f"{value:.4g} {metric.replace('_', ' ')}"


def front_line(front, objectives) -> str:
    """``front: 3 points, best val_acc 0.9917 at 15.4 M BitOps`` (the accuracy objective first)."""
    metrics = [o.metric for o in objectives]
    points = front[metrics].drop_duplicates() if len(front) else front  # tied trials: one point
    if not len(points):
        return "front: none yet"
    score = next((o for o in objectives if schema.is_score(o.metric)), objectives[0])
    cost = next((o.metric for o in objectives if o.metric != score.metric), None)
    best = points.sort_values(score.metric, ascending=score.mode == "min").iloc[0]
    where = f" at {_cost_text(cost, float(best[cost]))}" if cost else ""
    return f"front: {len(points)} point{'s' * (len(points) != 1)}, best {score.metric} {best[score.metric]:.4f}{where}"


def eta(elapsed: float, finished: int, total: int) -> str:
    """``; about 4 min left`` from the mean time per finished trial (trials run in parallel too)."""
    if finished <= 0 or finished >= total:
        return ""
    left = elapsed / finished * (total - finished)
    return f"; about {left / 60:.0f} min left" if left >= 90 else f"; about {left:.0f} s left"


def _tuner(spec: SearchSpec, run_dir: Path, experiment_name: str, storage: str, fp_state, opts: RunOptions,
           progress: _Progress, restore: bool, seed: dict | None = None):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from speq_search.search.optuna_searcher import (
        RelocatableSearchGenerator,
        RunStudyStorage,
        SpeqOptunaSearch,
        distribution,
        make_sampler,
    )
    from speq_search.search.tracking import logger_callbacks
    from speq_search.search.trainable import speq_trainable

    s = spec.search
    threads = max(1, int(s.cpus_per_trial))
    trainable = tune.with_resources(
        tune.with_parameters(speq_trainable, spec=spec, fp_state=fp_state, threads=threads,
                             verbose=opts.verbose),
        {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial},
    )
    if restore:
        return tune.Tuner.restore(storage + "/" + experiment_name, trainable=trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False)
    metrics = [o.metric for o in spec.objectives]
    modes = [o.mode for o in spec.objectives]
    searcher = SpeqOptunaSearch(space={p.name: distribution(p) for p in spec.params}, metric=metrics, mode=modes,
                                sampler=make_sampler(spec), study_name=spec.name,
                                storage=RunStudyStorage(run_dir / "study.db"), seed=s.seed,
                                constraints=spec.violations if spec.constraints else None,
                                warm_start=list(spec.warm_start) + ([seed] if seed else []))
    num_samples = s.num_samples  # a grid's is resolved by the space: every point, or fewer if asked
    if s.scheduler == "asha":
        scheduler = ASHAScheduler(metric=metrics[0], mode=modes[0], time_attr="training_iteration",
                                  max_t=spec.train.optim.epochs, grace_period=s.grace_period,
                                  reduction_factor=s.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=RelocatableSearchGenerator(
                                        ConcurrencyLimiter(searcher, max_concurrent=s.max_concurrent)),
                                    scheduler=scheduler, num_samples=num_samples, reuse_actors=True),
        run_config=tune.RunConfig(
            name=experiment_name, storage_path=storage, verbose=0, stop=progress.stopper,
            callbacks=[progress.callback, *logger_callbacks(opts.loggers, run_dir, spec.name, opts.mlflow_uri, _log(opts))],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=0)),
    )


def run_search(spec: SearchSpec, run_dir: str | Path, opts: RunOptions | None = None) -> dict:
    """Run the search of ``spec`` into ``run_dir`` (a new folder); return the summary.

    The folder is locked for the whole search (a second search on it fails at once). A search
    that fails before its first trial starts (bad data, resources no node has) removes the
    folder it made, so the same name can be run again.
    """
    opts = opts or RunOptions()
    run_dir = Path(run_dir).resolve()
    storage = storage_root(opts.storage_path)  # a cloud URI or an unwritable folder fails before anything starts
    from speq_search.search.tracking import check_loggers

    opts.loggers = check_loggers(opts.loggers, opts.mlflow_uri)  # so does a logger that cannot log
    log = _log(opts)
    if not opts.address:
        _check_resources(spec, _local_resources(), None, log)  # before the float model trains
    spec = _absolute_paths(spec)
    with RunLock(run_dir) as lock:
        if (run_dir / "run.json").exists():
            raise ConfigError("name", str(run_dir), "a new run folder (this one holds a search: resume it to "
                              "continue it)")
        try:
            fp_state, reference, chance = _prepare_fp(spec, log)
            dump_space(spec, run_dir / "space.yaml")
            meta = {"experiment_name": "ray", "storage_path": storage, "address": opts.address,
                    "reference": reference, "chance_acc": chance, "fp_shared": fp_state is not None,
                    "created": time.strftime("%Y-%m-%d %H:%M:%S")}
            if spec.per_layer.get("sensitivity"):
                meta["sensitivity_seed"] = _sensitivity(spec, run_dir, log)
            if fp_state is not None:
                (run_dir / "fp_model.pt").write_bytes(fp_state)
            atomic_write(run_dir / "run.json", json.dumps(meta, indent=2) + "\n")
            return _execute(spec, run_dir, meta, fp_state, opts, restore=False, started=lock.keep)
        except BaseException:
            lock.discard()  # only while no trial has started: _execute disarms it once one may have
            raise


def resume_search(run_dir: str | Path, opts: RunOptions | None = None) -> dict:
    """Continue an interrupted search in ``run_dir``: finished trials are kept, the rest run.

    The folder may have been moved or copied since: the experiment and the study are read
    from (and written to) where it is now. A run stopped before Ray saved any state starts
    its trials from the beginning; a missing float model is rebuilt.
    """
    from speq_search.spec import load_space

    opts = opts or RunOptions()
    run_dir = Path(run_dir).resolve()
    if not (run_dir / "run.json").exists() or not (run_dir / "space.yaml").exists():
        raise ConfigError("resume", str(run_dir), "a run folder made by speq-search run (with run.json and space.yaml)")
    log = _log(opts)
    with RunLock(run_dir, field="resume"):
        meta = _read_run_json(run_dir)
        # A run folder's space.yaml holds the data folder as the run resolved it (older runs: as
        # given, relative to where they were started), not relative to the run folder.
        spec = load_space(str(run_dir / "space.yaml"), paths_relative_to_file=False)
        if opts.storage_path:
            raise ConfigError("storage_path", opts.storage_path, "nothing when resuming (the run folder's run.json "
                              "says where its experiment is)")
        opts.address = opts.address or meta.get("address")
        if not opts.address:
            _check_resources(spec, _local_resources(), None, log)
        experiment = experiment_root(run_dir, meta) / meta.get("experiment_name", "ray")
        finished = _check_study(run_dir, spec)
        restore = _can_restore(experiment)
        if not restore:
            if finished:
                raise ConfigError("resume", str(run_dir), f"a run whose Ray state was saved ({experiment} holds none, "
                                  f"while study.db holds {finished} finished trials: trials.csv keeps them; start a "
                                  "new run to search on)")
            log(f"{run_dir}: no trial had started; starting the search from its first trial")
            shutil.rmtree(experiment, ignore_errors=True)
            (run_dir / "study.db").unlink(missing_ok=True)
        fp_state = _shared_fp_state(run_dir, spec, meta, log)
        return _execute(spec, run_dir, meta, fp_state, opts, restore=restore)


def _read_run_json(run_dir: Path) -> dict:
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError("run.json", str(run_dir / "run.json"), f"the JSON file speq-search run wrote "
                          f"({type(err).__name__}: the run cannot be resumed without it)") from None
    if not isinstance(meta, dict) or "reference" not in meta:
        raise ConfigError("run.json", str(run_dir / "run.json"), "the JSON file speq-search run wrote (keys "
                          "experiment_name, storage_path, reference)")
    return meta


def _check_study(run_dir: Path, spec: SearchSpec) -> int:
    """How many finished trials ``run_dir/study.db`` holds; a corrupt study is one line, naming the file."""
    import optuna

    path = run_dir / "study.db"
    if not path.exists():
        return 0
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{path}", skip_table_creation=True)
        study = optuna.load_study(study_name=spec.name, storage=storage)
        return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    except Exception as err:  # noqa: BLE001 - sqlite3/sqlalchemy/optuna raise many kinds for a bad file
        raise ConfigError("study.db", str(path), f"the run's Optuna SQLite study ({type(err).__name__}: the file is "
                          "corrupt or not a study; restore it from a copy. trials.csv and the Ray trial folders keep "
                          "every finished trial, and `speq-search report` reads them)") from None


def _can_restore(experiment: Path) -> bool:
    from ray import tune

    return experiment.is_dir() and tune.Tuner.can_restore(str(experiment))


def _shared_fp_state(run_dir: Path, spec: SearchSpec, meta: dict, log) -> bytes | None:
    """The float model every trial shares (fp_model.pt); a missing or corrupt one is rebuilt and saved again."""
    if not meta.get("fp_shared"):
        return None
    import torch

    path = run_dir / "fp_model.pt"
    try:
        data = path.read_bytes()
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return data
    except Exception as err:  # noqa: BLE001 - missing, truncated, not a checkpoint
        reason = "missing" if not path.exists() else f"unreadable ({type(err).__name__})"
    log(f"{path} is {reason}: rebuilding the float model from the run's settings (the float-model cache, or "
        "training it again with the same seed)")
    fp_state, _, _ = _prepare_fp(spec, log)
    if fp_state is None:
        raise ConfigError("fp_model.pt", str(path), "a float model (this run's space searches the float model itself)")
    path.write_bytes(fp_state)
    return fp_state


def _execute(spec: SearchSpec, run_dir: Path, meta: dict, fp_state, opts: RunOptions, restore: bool,
             started=None) -> dict:
    """Run (or resume) the Tuner; ``started()`` is called once trials may have run (the folder is then kept)."""
    from speq_search.search.optuna_searcher import grid_size, resuming_in

    log = _log(opts)
    name = meta.get("experiment_name", "ray")
    experiment = experiment_root(run_dir, meta) / name
    storage = str(experiment.parent)
    total = spec.search.num_samples
    if spec.search.sampler == "grid" and total < grid_size(spec):
        log(f"grid of {grid_size(spec)} points: running {total} of them (search.num_samples)")
    global _active_progress
    with _RaySession(spec, opts), resuming_in(run_dir, experiment):
        progress = _active_progress = _Progress(spec, run_dir, experiment, meta["reference"], log, total)
        try:
            tuner = _tuner(spec, run_dir, name, storage, fp_state, opts, progress, restore,
                           meta.get("sensitivity_seed"))
            if restore:
                log(f"resuming {run_dir}")
            log(f"search '{spec.name}': {total} trials, sampler {spec.search.sampler}, up to "
                f"{spec.search.max_concurrent} at a time, objectives "
                + ", ".join(f"{o.metric} ({o.mode})" for o in spec.objectives))
            if started is not None:
                started()
            tuner.fit()
        finally:
            _active_progress = None
    summary = write_outputs(run_dir, spec, experiment, meta["reference"],
                            extra={"run_dir": str(run_dir), "resumed": restore},
                            chance_acc=meta.get("chance_acc"), table=progress.table).summary
    if summary.get("n_at_chance"):
        log(f"warning: {summary['n_at_chance']} of {summary['n_completed']} completed trials are at chance level "
            f"(val_acc < {1.5 * summary['chance_acc']:.3f}): check the learning rate, the bits and the data")
    finished = summary["n_completed"] + summary["n_failed"] + summary["n_stopped"] + summary["n_infeasible"]
    summary["stopped_on_failures"] = progress.failures > spec.search.max_failures
    summary["interrupted"] = finished < total and not summary["stopped_on_failures"]
    return summary
