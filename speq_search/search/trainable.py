"""The Ray Tune trainables: thin functions around the training code of :mod:`speq_search.train`.

- :func:`speq_trainable`: one configuration trained (a per-trial search's trial, or a one-shot
  search's fine-tuning from the supernet);
- :func:`supernet_trainable`: a one-shot search's supernet;
- :func:`evaluate_trainable`: one per-layer assignment evaluated on the supernet.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from speq_search import schema
from speq_search.search.dedupe import REUSE_KEY, reused_result
from speq_search.space import SearchSpec


def _reportable(row: dict) -> dict:
    """Numbers, strings and booleans only (Ray's loggers choke on tensors and None)."""
    return {k: v for k, v in row.items() if isinstance(v, (int, float, str, bool))}


def _threads(threads: int) -> None:
    from speq_search.compiling import limit_compile_threads

    torch.set_num_threads(max(1, threads))
    limit_compile_threads(threads)


def _work_folder(tune, name: str, resume_from: str | None) -> tuple[Path, bool]:
    """The trial's working folder, filled from its checkpoint (Ray's, after a retry; else
    ``resume_from``, the last checkpoint of the Ray trial a resumed search continues); whether it resumes."""
    work = Path(tune.get_context().get_trial_dir()) / name
    checkpoint = tune.get_checkpoint()
    if checkpoint is None and resume_from:
        checkpoint = tune.Checkpoint(resume_from)  # a folder or an object-store URI
    if checkpoint is None:
        if work.exists():  # a restarted trial without a checkpoint starts over
            shutil.rmtree(work)
        return work, False
    with checkpoint.as_directory() as d:
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(d, work)
    return work, (work / "checkpoint.pt").exists()


def _weights_file(work: Path, name: str, data: bytes) -> str:
    """Shared weights (the float model, the supernet) written beside the working folder, for the run."""
    work.mkdir(parents=True, exist_ok=True)
    path = work.parent / name
    path.write_bytes(data)
    return str(path)


def _log(verbose: bool):
    return (lambda msg: print(msg, file=sys.stderr)) if verbose else (lambda msg: None)


def speq_trainable(config: dict, spec: SearchSpec, fp_state: bytes | None, threads: int, verbose: bool,
                   resume_from: dict | None = None, init_state: bytes | None = None, changes: dict | None = None,
                   fidelity: str | None = None) -> None:
    """Train one trial and report every epoch with a checkpoint.

    ``spec`` is the space the driver parsed (frozen, picklable: not parsed again here),
    ``config`` the values the sampler chose (and the Optuna trial they belong to,
    :data:`speq_search.schema.TRIAL_KEY`), ``fp_state`` the shared full-precision weights
    (serialised) when the searched parameters do not change the architecture. ``resume_from``
    maps an Optuna trial a resumed search continues to the last checkpoint of its earlier Ray trial.
    A one-shot search's fine-tuning passes ``init_state`` (the supernet's weights, trained from),
    ``changes`` (its epochs and learning rate) and ``fidelity`` (reported with every result).
    """
    from ray import tune

    from speq_search.train import run_repeats

    _threads(threads)
    values = {k: v for k, v in config.items() if k not in (schema.TRIAL_KEY, schema.STUDY_KEY, REUSE_KEY)}
    cfg = spec.trial_config(values)
    if changes:
        cfg = cfg.replace(trusted=True, **changes)
    if config.get(REUSE_KEY):  # issue 27: a finished trial had this effective configuration: its result, no training
        tune.report({**reused_result(cfg, config[REUSE_KEY], bool(spec.constraints)),
                     **({"fidelity": fidelity} if fidelity else {})})
        return
    work, resume = _work_folder(tune, "train", (resume_from or {}).get(config.get(schema.TRIAL_KEY)))
    if fp_state is not None and not resume:
        cfg = cfg.replace(fp_checkpoint=_weights_file(work, "fp_model.pt", fp_state))
    if init_state is not None and not resume:
        cfg = cfg.replace(init_checkpoint=_weights_file(work, "init_model.pt", init_state))
    total = cfg.optim.epochs * spec.search.repeats  # issue 28: search.repeats seeds, one after another
    extra = {"fidelity": fidelity} if fidelity else {}
    if spec.constraints and not resume:
        from speq_search.train import planned_costs

        # Costs are known before training: a trial over budget is reported and never trained.
        costs = _reportable(planned_costs(cfg))
        worst = max(spec.violations(costs).values())
        if worst > 0:
            tune.report({**costs, **extra, "feasible": False, "constraint_violation": worst, "epochs_done": 0,
                         "epochs_total": total, "full_fidelity": True})
            return

    def report(row: dict) -> None:
        metrics = {**_reportable(row), **extra}
        metrics["epochs_done"] = row["epoch"]
        metrics["epochs_total"] = total
        metrics["full_fidelity"] = row["epoch"] >= total
        if spec.constraints:
            metrics["feasible"] = True
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(work)))

    run_repeats(cfg, work, spec.search.repeats, resume=resume, callback=report, log=_log(verbose))  # run if 1


def supernet_trainable(config: dict, spec: SearchSpec, fp_state: bytes | None, threads: int, verbose: bool,
                       resume_from: str | None = None) -> None:
    """Train a one-shot search's supernet (:func:`speq_search.train.supernet.train_supernet`) as one
    Ray trial: every epoch reported with a checkpoint; the last checkpoint holds ``supernet.pt``."""
    from ray import tune

    from speq_search.train.supernet import train_supernet

    _threads(threads)
    work, resume = _work_folder(tune, "supernet", resume_from)
    cfg = spec.train
    if fp_state is not None and not resume:
        cfg = cfg.replace(fp_checkpoint=_weights_file(work, "fp_model.pt", fp_state))
    total = spec.oneshot.supernet_epochs

    def report(row: dict) -> None:
        last = row["epoch"] >= total and (work / "supernet.pt").exists()  # the last report carries the weights
        tune.report({**_reportable(row), "epochs_done": row["epoch"], "epochs_total": total, "full_fidelity": last,
                     "supernet_ready": last}, checkpoint=tune.Checkpoint.from_directory(str(work)))

    train_supernet(cfg, spec.oneshot, spec.group_choices(), work, resume=resume, callback=report, log=_log(verbose),
                   granularity=spec.per_layer.get("granularity", "layer"))


_SUPERNETS: dict[str, tuple] = {}  # in a worker process: the supernet it holds, by its key


def evaluate_trainable(config: dict, spec: SearchSpec, supernet: bytes, key: str, threads: int, verbose: bool,
                       resume_from: dict | None = None) -> None:
    """Evaluate one per-layer assignment on the supernet: a one-shot search's second phase.

    The worker builds the supernet once (``key`` names it) and keeps it between evaluations; an
    evaluation sets the bits, recalibrates BatchNorm and validates (no weights change)."""
    from ray import tune

    from speq_search.train import load_data, resolve_device
    from speq_search.train.supernet import evaluate_assignment, load_supernet

    _threads(threads)
    values = {k: v for k, v in config.items() if k not in (schema.TRIAL_KEY, schema.STUDY_KEY, REUSE_KEY)}
    cfg = spec.trial_config(values)
    if config.get(REUSE_KEY):  # an assignment evaluated before: its result, listed once on the evaluated front
        tune.report({**reused_result(cfg, config[REUSE_KEY], bool(spec.constraints)), "fidelity": "supernet",
                     "epochs_total": 0})
        return
    if key not in _SUPERNETS:
        _SUPERNETS.clear()
        path = Path(tune.get_context().get_trial_dir()) / "supernet.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(supernet)
        splits, device = load_data(spec.train), resolve_device(spec.train.device)
        model, _ = load_supernet(path, spec.train, splits, spec.group_choices(), device)
        _SUPERNETS[key] = (model, splits, device)
    model, splits, device = _SUPERNETS[key]
    result = _reportable(evaluate_assignment(model, cfg.quant.group_bits, splits, spec.train, spec.oneshot, device,
                                             test=True))
    result.update(fidelity="supernet", epochs_done=0, epochs_total=0, full_fidelity=True)
    if spec.constraints:
        worst = max(spec.violations(result).values())
        result["feasible"] = worst <= 0
        if worst > 0:  # over budget: its costs, never its accuracy
            result = {k: v for k, v in result.items() if not k.endswith(("_acc", "_loss"))}
            result["constraint_violation"] = worst
    tune.report(result)
