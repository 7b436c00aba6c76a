"""Resources a search asks of Ray, checked before anything trains."""

from __future__ import annotations

import os

from speq_search.errors import ConfigError
from speq_search.space import SearchSpec


def local_resources() -> dict:
    """What a local Ray instance of this machine has: ``{"CPU": n, "GPU": n}``."""
    from speq_search.search.session import local_gpus

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(local_gpus())}


def check_resources(spec: SearchSpec, available: dict, address: str | None, log) -> None:
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
