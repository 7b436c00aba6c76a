"""Experiment tracking through Ray Tune's own logger callbacks: TensorBoard, MLflow, W&B.

Each logs every trial's parameters (the sampled configuration), every epoch's metrics (accuracy,
losses, the teacher diagnostic) and the costs a trial reports (bits, size, BitOps). Checked before
a search starts: an unknown logger, a missing package or a missing W&B login is one line.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from speq_search.errors import ConfigError

LOGGERS = ("tensorboard", "mlflow", "wandb")
_PACKAGES = {"tensorboard": ("tensorboardX", "pip install tensorboardX"),
             "mlflow": ("mlflow", "pip install 'speq-search[mlflow]'"),
             "wandb": ("wandb", "pip install 'speq-search[wandb]'")}


def check_loggers(loggers, mlflow_uri: str | None = None) -> tuple[str, ...]:
    """The loggers, validated: known names, their packages installed, W&B logged in."""
    names = tuple(dict.fromkeys(loggers or ()))
    for name in names:
        if name not in LOGGERS:
            raise ConfigError("--logger", name, " | ".join(LOGGERS))
        package, hint = _PACKAGES[name]
        if importlib.util.find_spec(package) is None:
            raise ConfigError("--logger", name, f"a logger whose package is installed ({package} is not: {hint})")
    if "wandb" in names and not _wandb_logged_in():
        raise ConfigError("--logger", "wandb", "a W&B login: run `wandb login`, set WANDB_API_KEY, or WANDB_MODE=offline")
    if mlflow_uri is not None and "mlflow" not in names:
        raise ConfigError("--mlflow-uri", mlflow_uri, "only with --logger mlflow")
    return names


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def mlflow_tracking_uri(run_dir: Path, given: str | None) -> str:
    """``given``, else ``$MLFLOW_TRACKING_URI``, else a file store in the run folder (``RUN_DIR/mlruns``)."""
    return given or os.environ.get("MLFLOW_TRACKING_URI") or (Path(run_dir) / "mlruns").resolve().as_uri()


def logger_callbacks(loggers, run_dir: Path, name: str, mlflow_uri: str | None = None, log=print) -> list:
    """Ray Tune callbacks for ``loggers`` (see :func:`check_loggers`), each said where it writes."""
    callbacks = []
    for logger in loggers:
        if logger == "tensorboard":
            from ray.tune.logger import TBXLoggerCallback

            callbacks.append(TBXLoggerCallback())
            log(f"tensorboard: one event file per trial in {run_dir}: tensorboard --logdir {run_dir}")
        elif logger == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            uri = mlflow_tracking_uri(run_dir, mlflow_uri)
            if uri.startswith("file:"):
                # MLflow 3 keeps its file store in maintenance mode and asks for this opt-in; a local
                # folder is what a laptop has (give a database or server URI with --mlflow-uri).
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            callbacks.append(MLflowLoggerCallback(tracking_uri=uri, experiment_name=name, tags={"tool": "speq-search"},
                                                  save_artifact=False))
            log(f"mlflow: experiment '{name}' at {uri}")
        elif logger == "wandb":
            from ray.air.integrations.wandb import WandbLoggerCallback

            callbacks.append(WandbLoggerCallback(project="speq-search", group=name))
            log(f"wandb: project speq-search, group '{name}'")
    return callbacks
