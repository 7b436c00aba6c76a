"""The Ray Tune trainable: a thin function around :func:`speq_search.train.run`."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from speq_search import schema
from speq_search.space import SearchSpec


def _reportable(row: dict) -> dict:
    """Numbers, strings and booleans only (Ray's loggers choke on tensors and None)."""
    return {k: v for k, v in row.items() if isinstance(v, (int, float, str, bool))}


def speq_trainable(config: dict, spec: SearchSpec, fp_state: bytes | None, threads: int, verbose: bool,
                   resume_from: dict | None = None) -> None:
    """Train one trial and report every epoch with a checkpoint.

    ``spec`` is the space the driver parsed (frozen, picklable: not parsed again here),
    ``config`` the values the sampler chose (and the Optuna trial they belong to,
    :data:`speq_search.schema.TRIAL_KEY`), ``fp_state`` the shared full-precision weights
    (serialised) when the searched parameters do not change the architecture. ``resume_from``
    maps an Optuna trial a resumed search continues to the last checkpoint of its earlier Ray trial.
    """
    from ray import tune

    from speq_search.compiling import limit_compile_threads
    from speq_search.train import run_repeats

    torch.set_num_threads(max(1, threads))
    limit_compile_threads(threads)
    values = {k: v for k, v in config.items() if k != schema.TRIAL_KEY}
    cfg = spec.trial_config(values)
    work = Path(tune.get_context().get_trial_dir()) / "train"
    resume = False
    checkpoint = tune.get_checkpoint()
    if checkpoint is None and (resume_from or {}).get(config.get(schema.TRIAL_KEY)):
        checkpoint = tune.Checkpoint(resume_from[config[schema.TRIAL_KEY]])  # a folder or a storage URI
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            if work.exists():
                shutil.rmtree(work)
            shutil.copytree(d, work)
        resume = (work / "checkpoint.pt").exists()
    elif work.exists():  # a restarted trial without a checkpoint starts over
        shutil.rmtree(work)
    if fp_state is not None and not resume:
        work.mkdir(parents=True, exist_ok=True)
        fp_path = work.parent / "fp_model.pt"
        fp_path.write_bytes(fp_state)
        cfg = cfg.replace(fp_checkpoint=str(fp_path))
    total = cfg.optim.epochs * spec.search.repeats  # issue 28: search.repeats seeds, one after another
    if spec.constraints and not resume:
        from speq_search.train import planned_costs

        # Costs are known before training: a trial over budget is reported and never trained.
        costs = _reportable(planned_costs(cfg))
        worst = max(spec.violations(costs).values())
        if worst > 0:
            tune.report({**costs, "feasible": False, "constraint_violation": worst, "epochs_done": 0,
                         "epochs_total": total, "full_fidelity": True})
            return

    def report(row: dict) -> None:
        metrics = _reportable(row)
        metrics["epochs_done"] = row["epoch"]
        metrics["epochs_total"] = total
        metrics["full_fidelity"] = row["epoch"] >= total
        if spec.constraints:
            metrics["feasible"] = True
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(work)))

    log = (lambda msg: print(msg, file=sys.stderr)) if verbose else (lambda msg: None)
    run_repeats(cfg, work, spec.search.repeats, resume=resume, callback=report, log=log)  # issue 28: run if 1
