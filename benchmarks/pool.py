"""Train a pool of a per-layer space's configurations once, each with its per-epoch validation curve.

The scheduler, proxy-front and sampler benchmarks (``bench_cheaper.py``) replay searches on this
pool instead of running dozens of live searches: training is seeded, so a configuration always
gives the same curve, and a replayed search that proposes it reads the curve instead of training.

Each line of the output (JSON lines) is one configuration: its parameters, its planned costs, and,
when it is within the space's budgets, every epoch's ``val_acc`` (best so far, the objective),
``epoch_val_acc`` and the final metrics. Lines already in the output are skipped (the script can be
stopped and started again). The float model is trained once (the cache) before the workers start.

    python benchmarks/pool.py per-layer --grid --out benchmarks/results/pool-digits.jsonl --procs 2
    python benchmarks/pool.py SPACE.yaml --random 64 --seed 0 --out pool-fmnist.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import random
import sys
import tempfile
import time
from pathlib import Path

from speq_search.space import load_space


def configurations(spec, grid: bool, count: int, seed: int) -> list[dict]:
    """Every point of the per-layer choices (``grid``), else ``count`` distinct seeded random points
    (the all-equal points at each bit-width first)."""
    params = [p for p in spec.params if p.type == "choice"]
    if grid:
        return [dict(zip([p.name for p in params], values)) for values in itertools.product(*[p.values for p in params])]
    rng, seen, out = random.Random(seed), set(), []
    for b in sorted({v for p in params for v in p.values}):
        point = {p.name: b for p in params if b in p.values}
        if len(point) == len(params):
            out.append(point)
            seen.add(tuple(point.values()))
    while len(out) < count:
        point = {p.name: rng.choice(p.values) for p in params}
        if tuple(point.values()) not in seen:
            seen.add(tuple(point.values()))
            out.append(point)
    return out[:count] if count else out


def _train_one(args) -> dict:
    spec, values = args
    import torch

    from speq_search.train import planned_costs, run

    torch.set_num_threads(1)
    cfg = spec.trial_config(values)
    costs = {k: v for k, v in planned_costs(cfg).items() if isinstance(v, (int, float))}
    feasible = all(v <= 0 for v in spec.violations(costs).values())
    line = {"params": values, "costs": costs, "feasible": feasible}
    if not feasible:
        return line
    curve = []

    def callback(row: dict) -> None:
        curve.append({"epoch": int(row["epoch"]), "val_acc": float(row["val_acc"]),
                      "epoch_val_acc": float(row["epoch_val_acc"])})

    t0 = time.time()
    with tempfile.TemporaryDirectory() as work:
        final = run(cfg, work, callback=callback, log=lambda msg: None)
    line.update(curve=curve, final={k: v for k, v in final.items() if isinstance(v, (int, float))},
                seconds=round(time.time() - t0, 2))
    return line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("space")
    p.add_argument("--out", required=True)
    p.add_argument("--grid", action="store_true", help="every point of the per-layer choices")
    p.add_argument("--random", type=int, default=0, help="this many seeded random points (and the uniform ones)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    import yaml

    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    spec = load_space(args.space, overrides)
    out = Path(args.out)
    done = set()
    if out.exists():
        done = {json.dumps(json.loads(line)["params"], sort_keys=True) for line in out.read_text().splitlines() if line}
    todo = [v for v in configurations(spec, args.grid, args.random, args.seed) if json.dumps(v, sort_keys=True) not in done]
    print(f"{len(done)} configurations done, {len(todo)} to train", file=sys.stderr)
    import torch

    from speq_search.train import full_precision_model, load_data

    torch.set_num_threads(1)
    full_precision_model(spec.train, load_data(spec.train), torch.device("cpu"), log=lambda m: print(m, file=sys.stderr))
    t0 = time.time()
    with mp.get_context("spawn").Pool(args.procs) as pool, out.open("a") as f:
        for i, line in enumerate(pool.imap_unordered(_train_one, [(spec, v) for v in todo]), start=1):
            f.write(json.dumps(line) + "\n")
            f.flush()
            if i % 20 == 0 or i == len(todo):
                print(f"{i}/{len(todo)} in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
