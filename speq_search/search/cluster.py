"""Checks of a search on a Ray cluster, before anything trains: every node sees the experiments'
storage and every file a trial reads.

Each alive node runs one small task (pinned to it with ``NodeAffinitySchedulingStrategy``, no CPU
held) that looks for those paths, and for a marker this driver writes into a shared storage
folder (the same path on a node's own disk is not the same folder).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from speq_search.errors import ConfigError

PROBE_TIMEOUT_S = 120
_WHAT = {
    "storage_path": "a folder every node of the cluster sees (shared storage mounted at the same path), or s3:// or "
                    "gs:// object storage",
    "train.data.data_dir": "a data folder every node of the cluster has, at the same path",
    "train.cost_model": "a cost table every node of the cluster has, at the same path",
    "train.fp_checkpoint": "a float checkpoint every node of the cluster has, at the same path",
    "train.fp_cache_dir": "a float-model cache folder every node of the cluster sees",
}


def _probe(paths: dict[str, str], marker: str | None, uri: str | None) -> tuple[str, list[tuple[str, str]]]:
    """Runs on one node: ``(its address, [(field, path) it cannot see]``."""
    import ray

    missing = [(field, path) for field, path in paths.items() if not os.path.exists(path)]
    if marker is not None and not os.path.exists(marker):
        missing.append(("storage_path", os.path.dirname(marker)))
    if uri is not None:
        from speq_search.storage import check_object_store

        try:
            check_object_store(uri)
        except ConfigError:
            missing.append(("storage_path", uri))
    return ray.util.get_node_ip_address(), missing


def trial_paths(train) -> dict[str, str]:
    """``{field: path}`` of every file a trial reads (made absolute by the driver already)."""
    paths = {"train.data.data_dir": train.data.data_dir, "train.fp_checkpoint": train.fp_checkpoint,
             "train.fp_cache_dir": train.fp_cache_dir}
    if train.cost_model and Path(train.cost_model).is_absolute():  # a shipped table's name is not a path
        paths["train.cost_model"] = train.cost_model
    return {k: v for k, v in paths.items() if v}


def check_nodes(storage: str, train, log) -> int:
    """One line naming the first node and path that fail; returns how many nodes were checked.

    ``storage`` is the experiments' storage as run.json records it: a folder or an object-store URI.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from speq_search.schema import is_uri

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if train.fp_cache_dir:  # a cache: made here if missing, then every node must see this same folder
        Path(train.fp_cache_dir).mkdir(parents=True, exist_ok=True)
    marker = None
    if not is_uri(storage):
        marker = os.path.join(storage, f".speq-search-node-check-{secrets.token_hex(4)}")
        Path(marker).write_text("written by the driver of a speq-search run; a node that sees it shares the folder\n")
    probe = ray.remote(num_cpus=0)(_probe)
    answers = []
    try:
        pending = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                   .remote(trial_paths(train), marker, storage if is_uri(storage) else None) for n in nodes]
        for ref in pending:
            try:
                answers.append(ray.get(ref, timeout=PROBE_TIMEOUT_S))
            except ray.exceptions.TaskUnschedulableError:  # a node that died since ray.nodes() listed it
                continue
    finally:
        if marker is not None:
            Path(marker).unlink(missing_ok=True)
    for address, missing in answers:
        for field, path in missing:
            raise ConfigError(field, path, f"{_WHAT[field]} (node {address} does not see it)")
    log(f"cluster: {len(answers)} nodes see the experiments' storage and every file a trial reads")
    return len(answers)
