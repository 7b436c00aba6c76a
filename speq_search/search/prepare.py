"""What a search prepares before its trials: paths every trial can read, the shared float model, the
reference costs of the hypervolume, and the per-layer sensitivity scores."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

from speq_search import schema
from speq_search.errors import ConfigError
from speq_search.space import SearchSpec, fields_of

# Fields that change the full-precision model: when one is searched, each trial gets its
# own FP model (from the shared cache) instead of the one trained before the trials.
_FP_FIELDS = ("model.", "data.", "optim.fp_", "optim.optimizer", "optim.momentum", "optim.weight_decay", "seed")


def absolute_paths(spec: SearchSpec, shared_folder: str | None = None) -> SearchSpec:
    """Trials run in other folders (and machines): make every path a trial reads absolute.

    ``shared_folder``: on a cluster, the experiments' shared storage folder, where the float-model
    cache goes unless ``fp_cache_dir`` is set (each node would otherwise train its own copy).
    """
    train, changes = spec.train, {}
    if train.data.data_dir:
        changes["data.data_dir"] = str(Path(train.data.data_dir).expanduser().resolve())
    if train.fp_checkpoint:
        changes["fp_checkpoint"] = str(Path(train.fp_checkpoint).expanduser().resolve())
    if train.cost_model and Path(train.cost_model).expanduser().is_file():  # a file, not a shipped table's name
        changes["cost_model"] = str(Path(train.cost_model).expanduser().resolve())
    from speq_search.train import fp_cache_dir

    if shared_folder and not train.fp_cache_dir:
        changes["fp_cache_dir"] = str(Path(shared_folder) / "fp-cache")
    else:
        changes["fp_cache_dir"] = str(fp_cache_dir(train).resolve())
    oneshot = spec.oneshot
    if oneshot is not None and oneshot.supernet:
        oneshot = dataclasses.replace(oneshot, supernet=str(Path(oneshot.supernet).expanduser().resolve()))
    return dataclasses.replace(spec, train=train.replace(**changes), oneshot=oneshot)


def check_supernet(spec: SearchSpec) -> None:
    """A one-shot space's given supernet (``oneshot.supernet``) is one of this model, data and per-layer
    choices: else one line, before anything trains."""
    if spec.oneshot is None or not spec.oneshot.supernet:
        return
    from speq_search.train.supernet import load_supernet

    load_supernet(spec.oneshot.supernet, spec.train, choices=spec.group_choices(), device=None)


def serialise_state(state_dict: dict) -> bytes:
    """A state dict as bytes that ``torch.load(weights_only=True)`` reads back."""
    import torch

    buf = io.BytesIO()
    torch.save({"state_dict": state_dict}, buf)
    return buf.getvalue()


def prepare_fp(spec: SearchSpec, log) -> tuple[bytes | None, dict, float]:
    """Train (or load) the FP model once, before the trials; its costs give the reference point.

    Returns the serialised float model (``None`` when each trial trains its own), the reference
    costs and the chance-level accuracy (1 / classes)."""
    from speq_search.costs import model_costs
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


def shared_fp_state(run_dir: Path, spec: SearchSpec, meta: dict, log) -> bytes | None:
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
    fp_state, _, _ = prepare_fp(spec, log)
    if fp_state is None:
        raise ConfigError("fp_model.pt", str(path), "a float model (this run's space searches the float model itself)")
    path.write_bytes(fp_state)
    return fp_state


def sensitivity_seed(spec: SearchSpec, run_dir: Path, log) -> dict:
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


def proxy_seed(spec: SearchSpec, run_dir: Path, log) -> list[dict]:
    """Issue 27 (``warm_start: sensitivity``): score every per-layer choice once
    (RUN_DIR/sensitivity-bits.csv), build the proxy front (RUN_DIR/proxy-front.csv) and return its
    points, to try first."""
    from speq_search.proxy import proxy_front, warm_start_points, write_proxy_front_csv
    from speq_search.sensitivity import write_bit_sensitivity_csv

    log(f"proxy front: each per-layer choice scored post-training; {spec.proxy_warm_start} points to try first")
    front = proxy_front(spec, points=spec.proxy_warm_start)
    write_bit_sensitivity_csv(run_dir / "sensitivity-bits.csv", front.base_acc, front.scores)
    write_proxy_front_csv(run_dir / "proxy-front.csv", front)
    log(f"proxy front: {len(front.points)} points from {front.points[0].costs[front.metric]:.4g} to "
        f"{front.points[-1].costs[front.metric]:.4g} {front.metric}, predicted val_acc "
        f"{front.points[0].predicted_acc:.4f} to {front.points[-1].predicted_acc:.4f}")
    return warm_start_points(front, spec.proxy_warm_start)


def warm_points(spec: SearchSpec, meta: dict) -> list[dict]:
    """What a new search tries first: the space's warm starts, the sensitivity seed and the proxy
    front's points (both computed when the run started, kept in run.json)."""
    seed = [meta["sensitivity_seed"]] if meta.get("sensitivity_seed") else []
    return list(spec.warm_start) + seed + list(meta.get("proxy_front", []))
