"""A Ray Tune ``Tuner`` for one segment of a search: the trainable, the searcher, the scheduler, storage."""

from __future__ import annotations

from pathlib import Path

from speq_search.search.searcher import StudySearcher
from speq_search.space import SearchSpec


def make_tuner(spec: SearchSpec, run_dir: Path, segment: str, storage: str, opts, progress, phase, num_samples: int):
    """The Tuner that runs ``num_samples`` trials of ``phase`` (:class:`~speq_search.search.phases.Phase`)
    into the Ray experiment ``storage/segment``.

    Its carried trials (see :class:`~speq_search.search.searcher.Carried`) come first and continue
    from their checkpoints; its warm-start points are enqueued in its study before anything is
    asked. A phase without a study runs one trial of the fixed configuration (the supernet).
    """
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from speq_search.search.tracking import logger_callbacks

    s = spec.search
    params = dict(phase.params, threads=max(1, int(s.cpus_per_trial)), verbose=opts.verbose)
    if phase.study is not None:
        params["resume_from"] = {c.number: c.checkpoint for c in phase.carried if c.checkpoint}
    trainable = tune.with_resources(tune.with_parameters(phase.trainable, spec=spec, **params),
                                    {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})
    search_alg = None
    if phase.study is not None:
        searcher = StudySearcher(spec, run_dir / "study.db", segment=segment, carried=phase.carried,
                                 warm_start=phase.warm_start, study_name=phase.study)
        search_alg = ConcurrencyLimiter(searcher, max_concurrent=s.max_concurrent)
    from ray.tune.schedulers import FIFOScheduler

    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=search_alg, num_samples=num_samples, reuse_actors=True,
                                    scheduler=_scheduler(spec, run_dir) if phase.scheduler else FIFOScheduler()),
        run_config=tune.RunConfig(
            name=segment, storage_path=storage, verbose=0, stop=progress.stopper,
            callbacks=[progress.callback, *logger_callbacks(opts.loggers, run_dir, spec.name, opts.mlflow_uri,
                                                            progress.log)],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=max_retries(spec, opts.address))),
    )


CLUSTER_RETRIES = 2


def max_retries(spec: SearchSpec, address: str | None) -> int:
    """How often a trial that raised is retried from its last checkpoint: ``search.max_retries``, else
    0 on a local instance (an error there is the trial's own) and 2 on a cluster (a node can be lost)."""
    given = spec.search.max_retries
    return given if given is not None else (CLUSTER_RETRIES if address else 0)


def _scheduler(spec: SearchSpec, run_dir: Path | None = None):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = spec.search
    if s.scheduler not in ("asha", "asha-first"):
        return FIFOScheduler()
    if s.scheduler == "asha" and len(spec.objectives) > 1:  # issue 27: asha ranks by non-dominated sorting
        from speq_search.search.scheduler import ParetoASHA

        return ParetoASHA.for_space(spec, run_dir)  # its rungs restored from the run's earlier trials
    first = spec.objectives[0]  # asha-first: Ray's ASHA on the first objective alone
    # epochs_done, not training_iteration: a trial a resumed search continues counts on from its checkpoint.
    return ASHAScheduler(metric=first.metric, mode=first.mode, time_attr="epochs_done",
                         max_t=spec.train.optim.epochs, grace_period=s.grace_period, reduction_factor=s.reduction_factor)
