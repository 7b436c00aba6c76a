"""What a run's files say, named once: metrics, trial statuses, Ray's trial folders, ``layer_bits``,
and where a run folder keeps its Ray experiment.

Search (the Ray trainable, the Optuna searcher, the run files), analysis (loading, Pareto
fronts, plots, reports) and the CLI read these names from here; adding a metric is one entry
in :data:`METRICS`. Plain Python: importing it loads neither torch nor pandas.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path

# ----------------------------------------------------------------------------------- costs


@dataclass(frozen=True)
class Costs:
    """What every run reports about its model besides accuracy (see README "Costs");
    :func:`speq_search.costs.model_costs` computes it. Each field is a metric of the same name."""

    avg_w_bits: float  # weighted by weight count
    avg_a_bits: float  # weighted by activation count
    avg_bits: float  # mean of the two: one axis for "how many bits"
    size_bytes: int  # weights at their bits + scales + other parameters at 32 bits
    bitops: int  # sum over layers of MACs * w_bits * a_bits
    macs: int
    params: int  # every parameter of the model, learned clips included

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------- metrics

# Kinds of metric. A "score" is an accuracy, better when higher; "bits" and "model" costs are
# known before training (budgets may bound them), as are "table" costs when train.cost_model
# names a table reporting them; the float model's "model" costs are the hypervolume's reference.
KINDS = ("score", "loss", "bits", "model", "table", "time", "diagnostic", "info")


@dataclass(frozen=True)
class Metric:
    """One number a trial reports."""

    name: str
    kind: str
    title: str  # axis and colour-bar title, with its unit
    objective: bool = False  # a search may optimise it (never test_acc: the sampler must not see the test split)
    column: str = "always"  # in trials.csv: "always", "optional" (only when a trial reports it) or "no"
    stored: bool = False  # kept in the Optuna study's trial attributes, so study.db alone can be analysed
    shown: bool = False  # a column of the front table `speq-search run` prints at the end
    unit: str = ""  # how a value reads: "bits" (2 decimals), "bytes" (KiB), "BitOps"/"MACs" (M, G), "params" (k)

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.column not in ("always", "optional", "no"):
            raise ValueError(f"metric {self.name}: kind one of {KINDS}, column always | optional | no")


_COST_UNITS = {"avg_w_bits": "bits", "avg_a_bits": "bits", "avg_bits": "bits", "size_bytes": "bytes", "bitops": "BitOps",
               "macs": "MACs", "params": "params"}
_COST_TITLES = {
    "avg_w_bits": "average weight bits", "avg_a_bits": "average activation bits",
    "avg_bits": "average bits (mean of weights and activations)", "size_bytes": "model size (bytes)",
    "bitops": "BitOps per image", "macs": "MACs per image", "params": "parameters",
}


def _metrics() -> dict[str, Metric]:
    costs = [Metric(f.name, "bits" if f.name.startswith("avg_") else "model", _COST_TITLES[f.name], objective=True,
                    stored=True, shown=f.name not in ("macs", "params"), unit=_COST_UNITS[f.name])
             for f in dataclasses.fields(Costs)]
    listed = [
        Metric("val_acc", "score", "validation accuracy (%)", objective=True, stored=True, shown=True),
        Metric("test_acc", "score", "test accuracy (%)", stored=True, shown=True),
        Metric("val_loss", "loss", "validation loss (cross-entropy)", objective=True),
        Metric("high_val_acc", "score", "accuracy with every activation at the teacher's high bits (%)"),
        *costs,
        Metric("latency_ms", "table", "latency per image (ms, cost table)", objective=True, column="optional",
               shown=True),
        Metric("energy", "table", "energy per image (cost-table units)", objective=True, column="optional", shown=True),
        Metric("step_time_s", "time", "time per training step (s)", objective=True),
        Metric("train_time_s", "time", "training time (s)", objective=True),
        Metric("fp_val_acc", "score", "float model validation accuracy (%)", stored=True),
        Metric("fp_test_acc", "score", "float model test accuracy (%)", stored=True),
        Metric("best_epoch", "info", "the selected epoch"),
        Metric("epoch_val_acc", "score", "validation accuracy of the epoch (%)", column="no"),
        Metric("epochs_done", "info", "epochs trained", column="no", stored=True),
        Metric("teacher_val_acc", "score", "the stochastic teacher's validation accuracy (%)", column="optional"),
        Metric("teacher_gap", "diagnostic", "teacher minus student accuracy", column="optional"),
        Metric("high_gap", "diagnostic", "high-bits network minus student accuracy", column="optional"),
        Metric("compile", "info", "torch.compile mode", column="optional"),
        Metric("compile_s", "time", "compile time (s)", column="optional"),
        Metric("layer_bits", "info", "bits per layer (name=w/a;...)", column="optional"),
        Metric("fidelity", "info", "how the accuracy was measured: supernet evaluation or fine-tuned", column="optional"),
        Metric("supernet_val_acc", "score", "validation accuracy on the supernet (%)", column="optional", stored=True),
        Metric("feasible", "info", "within the space's budgets", column="optional"),
        Metric("constraint_violation", "info", "how far over budget (relative)", column="optional"),
        # How sure an accuracy is (speq_search.analysis.stats): the split sizes, a search's repeats
        # (search.repeats: seeds per configuration, the accuracy their mean), and the 95 % interval
        # columns the run files add from them (never reported by a trial).
        Metric("val_images", "info", "validation images (the split's size)", column="optional", stored=True),
        Metric("test_images", "info", "test images (the split's size)", column="optional", stored=True),
        Metric("repeats", "info", "seeds the configuration was trained with", column="optional", stored=True),
        Metric("val_acc_sd", "diagnostic", "standard deviation of the validation accuracy over seeds",
               column="optional", stored=True),
        Metric("test_acc_sd", "diagnostic", "standard deviation of the test accuracy over seeds", column="optional",
               stored=True),
        Metric("val_acc_seeds", "info", "each seed's validation accuracy (;-separated)", column="optional"),
        Metric("test_acc_seeds", "info", "each seed's test accuracy (;-separated)", column="optional"),
        *[Metric(f"{acc}_{end}", "info", f"{word} end of the {split} accuracy's 95 % interval", column="no")
          for acc, split in (("val_acc", "validation"), ("test_acc", "test")) for end, word in (("lo", "lower"),
                                                                                               ("hi", "upper"))],
    ]
    return {m.name: m for m in listed}


METRICS: dict[str, Metric] = _metrics()
"""Every metric a trial reports, by name. The tuples below are read from it when called."""


def _names(keep) -> tuple[str, ...]:
    return tuple(name for name, m in METRICS.items() if keep(m))


def objective_metrics() -> tuple[str, ...]:
    """Metrics a search may optimise."""
    return _names(lambda m: m.objective)


def cost_metrics() -> tuple[str, ...]:
    """Costs known before training, which budgets (a space's constraints) may bound."""
    return _names(lambda m: m.kind in ("bits", "model", "table"))


def table_metrics() -> tuple[str, ...]:
    """Costs that exist only when ``train.cost_model`` names a table reporting them."""
    return _names(lambda m: m.kind == "table")


def bit_metrics() -> tuple[str, ...]:
    """Average bit-widths: the hypervolume's reference for them is 32 bits."""
    return _names(lambda m: m.kind == "bits")


def model_cost_metrics() -> tuple[str, ...]:
    """Costs of the float model too: the hypervolume's reference is the float model's."""
    return _names(lambda m: m.kind == "model")


def metric_columns() -> tuple[str, ...]:
    """Columns of trials.csv every trial has (NaN until reported)."""
    return _names(lambda m: m.column == "always")


def optional_columns() -> tuple[str, ...]:
    """Columns of trials.csv only some searches have (per-layer bits, a cost table, constraints...)."""
    return _names(lambda m: m.column == "optional")


def hidden_metrics() -> tuple[str, ...]:
    """Metrics the front table printed after a search leaves out."""
    return _names(lambda m: not m.shown)


def shown_metrics() -> tuple[str, ...]:
    """Metrics a front table shows (the one ``speq-search run`` prints, the report's), in this order."""
    return _names(lambda m: m.shown)


def stored_metrics() -> tuple[str, ...]:
    """Metrics kept in the Optuna study's trial attributes."""
    return _names(lambda m: m.stored)


def is_score(metric: str) -> bool:
    """Higher is better: an accuracy (``*_acc`` for metrics not listed, e.g. of a foreign Ray run)."""
    base = metric.split(" (")[0]  # "val_acc (run a)": a column of a comparison
    m = METRICS.get(base)
    return m.kind == "score" if m is not None else base.endswith("_acc")


def default_mode(metric: str) -> str:
    """``max`` for a score, ``min`` for everything else."""
    return "max" if is_score(metric) else "min"


def unit(metric: str) -> str:
    """How a value of ``metric`` reads (see :attr:`Metric.unit`); ``""`` for names not listed."""
    m = METRICS.get(metric.split(" (")[0])
    return m.unit if m is not None else ""


def format_value(metric: str, value: object, style: str = "table") -> str:
    """A value of ``metric`` as a person reads it, by the metric's unit (:attr:`Metric.unit`).

    ``style="table"``, in a column headed by the metric, one format per column: an accuracy in
    % (``98.20 %``), bytes in KiB (``26.8 KiB``), BitOps and MACs in M or G (``15.40 M``), bits
    with two decimals (``3.25``), a whole number as it is, anything else to 4 digits.
    ``style="text"``, in a sentence, the unit said: ``15.4 M BitOps``, ``26.8 KiB``,
    ``12.3 k params``, ``3.25 avg bits`` (the metric's name in words when it has no unit).
    A NaN is ``""``; what is not a number (a name, a flag) is ``str(value)``.
    """
    if style not in ("table", "text"):
        raise ValueError(f"format_value: style 'table' or 'text', not {style!r}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy's bool is no Real either
        return str(value)
    v = float(value)
    if v != v:
        return ""
    base = metric.split(" (")[0]  # "val_acc (run a)": a column of a comparison
    kind = unit(base)
    if is_score(base) and 0 <= v <= 1:
        return f"{100 * v:.2f} %"
    if kind == "bytes":
        return f"{v / 1024:.1f} KiB"
    if kind in ("BitOps", "MACs"):
        big, scaled = ("G", v / 1e9) if abs(v) >= 1e9 else ("M", v / 1e6)
        return f"{scaled:.2f} {big}" if style == "table" else f"{scaled:.{2 if big == 'G' else 1}f} {big} {kind}"
    if style == "text":
        return f"{v / 1e3:.1f} k params" if kind == "params" else f"{v:.4g} {base.replace('_', ' ')}"
    if kind == "bits":
        return f"{v:.2f}"
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return format(v, ".4g")


def title(metric: str) -> str:
    """``"validation accuracy (%)"`` for ``val_acc``; names not listed as they are."""
    m = METRICS.get(metric)
    return m.title if m is not None else metric


# --------------------------------------------------------------------------------- statuses
COMPLETED, FAILED, STOPPED, INCOMPLETE, INFEASIBLE = "COMPLETED", "FAILED", "STOPPED", "INCOMPLETE", "INFEASIBLE"
STATUSES = (COMPLETED, FAILED, STOPPED, INCOMPLETE, INFEASIBLE)
# Statuses a trial never leaves within one search. FAILED is not one: Ray retries a trial whose node
# was lost (search.max_retries), from its last checkpoint.
FINAL_STATUSES = (COMPLETED, INFEASIBLE, STOPPED)
# How the search tells each final status to the Optuna study (an infeasible trial is COMPLETE, with
# placeholder values and its constraint violations, which constrained samplers rank last).
OPTUNA_STATES = {COMPLETED: "COMPLETE", INFEASIBLE: "COMPLETE", FAILED: "FAIL", STOPPED: "PRUNED"}


def trial_status(last: dict | None, error: str = "", stopped: bool = False, live: bool = True) -> str:
    """A trial's status from its last reported result, its error and its ``stopped`` marker.

    - FAILED: it raised (an error written after its last result: see :func:`read_trial_folder`);
    - INCOMPLETE: nothing reported yet, or (``live``: its search may still run it) still training;
    - INFEASIBLE: over a budget, so never trained;
    - COMPLETED: trained every epoch (``full_fidelity``; a trial of another tool, which does not
      report it: its last result is where it ended);
    - STOPPED: ended before its last epoch: a scheduler such as ASHA stopped it (``done``, or
      the marker), or, read after the search (``live=False``), it never got further.
    """
    if error:
        return FAILED
    if not last:
        return INCOMPLETE
    if last.get("feasible") is False:
        return INFEASIBLE
    if last.get("full_fidelity", True):
        return COMPLETED
    if last.get("done") or stopped or not live:
        return STOPPED
    return INCOMPLETE


# What an Optuna trial state says of a trial's end, as the last result of a Ray trial would say it.
# speq-search tells Optuna COMPLETE only at full fidelity (a trial of another tool: where it ended),
# PRUNED for a trial stopped before its last epoch, FAIL for one that raised.
_OPTUNA_ENDS = {"COMPLETE": {"full_fidelity": True}, "PRUNED": {"full_fidelity": False, "done": True}}


def optuna_trial_status(state: str, constraints: dict[str, float] | None = None) -> str:
    """A trial's status from its Optuna state's name and its constraint values, by :func:`trial_status`'s rule.

    FAIL is FAILED, PRUNED is STOPPED, RUNNING and WAITING are INCOMPLETE; COMPLETE is COMPLETED,
    or INFEASIBLE where a constraint value is above 0 (Optuna's feasibility: every value <= 0).
    """
    if state == "FAIL":
        return trial_status(None, error=state)
    last = dict(_OPTUNA_ENDS.get(state, {}))
    if state == "COMPLETE" and any(v > 0 for v in (constraints or {}).values()):
        last["feasible"] = False
    return trial_status(last, live=True)


# Columns of trials.csv besides the id, the status, the parameters and the metrics.
TRIAL_COLUMNS = ("epochs_done", "epochs_total", "full_fidelity", "wall_time_s", "error", "trial_dir")

# ---------------------------------------------------------------------- Ray's trial folders
# <trainable>_<8 hex>_<n>_<params>_<date> (Ray >= 2.10), once <5 hex>_<5 digits>.
_TRIAL_ID = re.compile(r"_([0-9a-f]{8})_\d+_|_([0-9a-f]{5}_\d{5})_")
# The files a trial folder is read from (a trial folder is one with params.json).
TRIAL_FILES = ("params.json", "result.json", "error.txt", "stopped")


def is_trial_folder(path: str | os.PathLike) -> bool:
    """A folder of a Ray Tune experiment holding one trial (it has ``params.json``)."""
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "params.json"))


def trial_folders(experiment: str | Path) -> list[Path]:
    """The trial folders of a Ray Tune experiment, by name."""
    with os.scandir(experiment) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir() and is_trial_folder(e.path))


def read_results(path: Path) -> list[dict]:
    """Rows of a Ray ``result.json`` (JSON lines); a half-written last line is skipped."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return rows


_FAILURE = re.compile(r"Failure # \d+ \(occurred at (\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)\)")


def error_time(error_file: Path) -> float:
    """When a trial's last failure happened: Ray's ``Failure # N (occurred at ...)`` line (local
    time), else the file's modification time (which a sync of the experiment may move later)."""
    import time

    found = _FAILURE.findall(error_file.read_text(errors="replace"))
    if found:
        return time.mktime(time.strptime(found[-1], "%Y-%m-%d_%H-%M-%S"))
    return error_file.stat().st_mtime


def error_reason(trial_dir: Path) -> str:
    """The last line of a trial's ``error.txt`` (``ExceptionType: message``), or ``""``."""
    err = trial_dir / "error.txt"
    if not err.exists():
        return ""
    lines = [ln.strip() for ln in err.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "error"


def trial_id_of(trial_dir: Path, last: dict | None = None) -> str:
    """A trial's id: as its last result says, else as its folder name says, else the folder name."""
    if last and last.get("trial_id"):
        return str(last["trial_id"])
    match = _TRIAL_ID.search(trial_dir.name)
    return next(g for g in match.groups() if g) if match else trial_dir.name


@dataclass(frozen=True)
class TrialFolder:
    """One trial folder, read: what it was given, what it reported, how it ended."""

    path: Path
    params: dict
    results: list[dict]
    error: str  # why it failed, if it did (an error after its last result)
    stopped: bool  # a ``stopped`` marker file
    retried_after: str = ""  # an error it reported results after: it was retried (a lost node) and went on

    @property
    def last(self) -> dict:
        return self.results[-1] if self.results else {}

    @property
    def trial_id(self) -> str:
        return trial_id_of(self.path, self.last)

    def status(self, live: bool = True) -> str:
        """See :func:`trial_status`."""
        return trial_status(self.last, self.error, self.stopped, live)

    @property
    def order_key(self) -> float:
        """When it last reported (the folder's time before it did): roughly the order the sampler saw."""
        return self.last.get("timestamp", 0) if self.results else self.path.stat().st_mtime


def read_trial_folder(path: str | Path) -> TrialFolder:
    """Read a trial folder's ``params.json``, ``result.json``, ``error.txt`` and ``stopped`` marker.

    Its status comes from its last result: an ``error.txt`` older than the last result is left by
    an attempt Ray retried from a checkpoint (a lost node, ``search.max_retries``), after which the
    trial went on; it is kept as :attr:`TrialFolder.retried_after`, not as the trial's error.
    """
    path = Path(path)
    results, error = read_results(path / "result.json"), error_reason(path)
    retried_after = ""
    if error and results and isinstance(results[-1].get("timestamp"), (int, float)):
        if error_time(path / "error.txt") < results[-1]["timestamp"]:  # Ray's timestamps: whole seconds
            error, retried_after = "", error
    return TrialFolder(path, json.loads((path / "params.json").read_text() or "{}"), results, error,
                       (path / "stopped").exists(), retried_after)


# ------------------------------------------------------------------------------ run folders
# The key, in each Ray trial's config (params.json), of the Optuna trial it runs: a resumed search
# continues an interrupted Optuna trial in a new Ray trial, and the run files list it once.
TRIAL_KEY = "optuna_trial"
STUDY_KEY = "optuna_study"  # with TRIAL_KEY, in the trials of a study other than the run's own (a one-shot search's)
# How a trial's accuracy was measured: "trained" (a trial of a per-trial search: the default, not
# reported), "supernet" (a one-shot search's evaluation of the supernet at the trial's assignment),
# "finetuned" (an assignment fine-tuned from the supernet). A run's front holds its highest fidelity.
FIDELITIES = ("trained", "supernet", "finetuned")
IN_RUN_DIR = "."  # run.json's storage_path when the Ray experiment is inside the run folder (moves with it)


OBJECT_STORES = ("s3://", "gs://")  # through pyarrow's file systems, as Ray Tune itself writes them
# In a run folder whose experiments live in object storage: each trial's small files (params.json,
# result.json, error.txt, and remote.json naming its folder in the store), copied as the search runs.
MIRROR = "experiments"


def is_uri(storage: str | None) -> bool:
    """``storage`` is an object-store location (``s3://bucket/path``, ``gs://...``), not a folder."""
    return bool(storage) and str(storage).startswith(OBJECT_STORES)


def experiment_storage(run_dir: Path, meta: dict) -> str:
    """Where Ray keeps the run's experiments: an object-store URI, or a folder."""
    storage = meta.get("storage_path")
    return storage if is_uri(storage) else str(experiment_root(run_dir, meta))


def experiment_root(run_dir: Path, meta: dict) -> Path:
    """The folder holding the run's Ray experiment, from run.json (``.`` means the run folder itself).

    Runs made before storage was recorded relative to the folder hold the absolute path of
    their original place; where that is the run folder's old place, the folder is used.
    """
    storage = meta.get("storage_path") or IN_RUN_DIR
    if storage == IN_RUN_DIR or not Path(storage).is_absolute():
        return (run_dir / storage).resolve()
    name = meta.get("experiment_name", "ray")
    if not (Path(storage) / name).is_dir() and (run_dir / name).is_dir():
        return run_dir
    return Path(storage)


def experiment_folders(run_dir: Path, meta: dict) -> list[Path]:
    """The run's Ray experiments as folders to read, oldest first: one per time the search ran (its
    first run and each resume), as run.json's ``segments`` lists them (runs before segments:
    ``experiment_name``). Experiments in object storage are read from the run folder's copy
    (:data:`MIRROR`)."""
    root = run_dir / MIRROR if is_uri(meta.get("storage_path")) else experiment_root(run_dir, meta)
    return [root / name for name in meta.get("segments") or [meta.get("experiment_name", "ray")]]


# ------------------------------------------------------------------------------- layer_bits


def encode_layer_bits(layers) -> str:
    """``name=w/a`` per layer, ``;``-separated (one trials.csv column); ``layers`` is a mapping
    ``{name: (w_bits, a_bits)}`` or an iterable of ``(name, w_bits, a_bits)``."""
    items = layers.items() if hasattr(layers, "items") else ((n, (w, a)) for n, w, a in layers)
    return ";".join(f"{name}={w}/{a}" for name, (w, a) in items)


def decode_layer_bits(text: str) -> list[tuple[str, int, int]]:
    """``[(name, w_bits, a_bits), ...]`` from :func:`encode_layer_bits`'s text."""
    out = []
    for item in str(text).split(";"):
        if item:
            layer, _, bits = item.partition("=")
            w, _, a = bits.partition("/")
            out.append((layer, int(w), int(a)))
    return out
