"""Search quality: hypervolume of tpe, nsga2 and random against the true front of a grid.

1. Runs the exhaustive grid of ``search_spaces/grid-small.yaml`` with ``speq-search run``
   (48 trials): every configuration's real result and the true front.
2. Replays each sampler with Optuna against that table (training is seeded, so a
   configuration always gives the same result): 3 seeds each, at the same budget. This
   measures the samplers, not Ray's scheduling (trials are told one at a time).

Prints, per sampler, the hypervolume at the budget as a fraction of the grid's and how many
trials each seed needed to reach 95 % of it.

    python benchmarks/bench_search_quality.py [--grid-run RUN_DIR] [--budget 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from speq_search.analysis.pareto import box_hypervolume, hypervolume, hypervolume_history
from speq_search.samplers import distribution, make_sampler
from speq_search.space import load_space, parse_space


def grid_range_hv(values, best, worst, modes) -> list[float]:
    """Hypervolume history with each objective scaled to [0, 1] between the grid's best and worst values
    (the usual normalisation for benchmarking a search against a known space)."""
    v = np.asarray(values, dtype=float)
    return [box_hypervolume(v[:k], best, worst) for k in range(1, len(v) + 1)]


def replay(spec, table: pd.DataFrame, sampler_name: str, seed: int, budget: int, reference: dict) -> list[list]:
    names = [p.name for p in spec.params]
    metrics = [o.metric for o in spec.objectives]
    raw = spec.to_dict()
    raw["search"].update(sampler=sampler_name, seed=seed, num_samples=budget)
    sampler = make_sampler(parse_space(raw))
    study = optuna.create_study(directions=["maximize" if o.mode == "max" else "minimize" for o in spec.objectives],
                                sampler=sampler)
    lookup = {tuple(r[n] for n in names): tuple(r[m] for m in metrics) for _, r in table.iterrows()}
    dists = {p.name: distribution(p) for p in spec.params}
    values = []
    for _ in range(budget):
        trial = study.ask(dists)
        v = lookup[tuple(trial.params[n] for n in names)]
        study.tell(trial, list(v))
        values.append(v)
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid-run", help="an existing grid run folder (skips step 1)")
    p.add_argument("--budget", type=int, default=16)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_space("grid-small")
    if args.grid_run:
        run_dir = Path(args.grid_run)
    else:
        run_dir = Path(tempfile.mkdtemp()) / "grid"
        subprocess.run([sys.executable, "-m", "speq_search.cli", "run", "grid-small", "--out-dir", str(run_dir.parent),
                        "--name", "grid"], check=True)
    table = pd.read_csv(run_dir / "trials.csv")
    table = table[table["status"] == "COMPLETED"]
    reference = json.loads((run_dir / "run.json").read_text())["reference"]
    metrics = [o.metric for o in spec.objectives]
    modes = [o.mode for o in spec.objectives]
    grid_values = table[metrics].to_numpy(float)
    best = [grid_values[:, j].max() if m == "max" else grid_values[:, j].min() for j, m in enumerate(modes)]
    worst = [grid_values[:, j].min() if m == "max" else grid_values[:, j].max() for j, m in enumerate(modes)]
    rules = {
        "run's rule (summary.json: accuracy 0, float-model BitOps)": (
            lambda v: hypervolume_history(v, metrics, modes, reference),
            hypervolume(grid_values, metrics, modes, reference)),
        "grid range (each objective scaled between the grid's best and worst)": (
            lambda v: grid_range_hv(v, best, worst, modes), grid_range_hv(grid_values, best, worst, modes)[-1]),
    }
    lines = [f"grid: {len(table)} trials; budget {args.budget} trials per sampler, seeds {args.seeds}"]
    result = {"grid_trials": int(len(table)), "budget": args.budget, "rules": {}}
    histories = {(name, seed): replay(spec, table, name, seed, args.budget, reference)
                 for name in ("tpe", "nsga2", "random") for seed in args.seeds}
    for rule, (history, true_hv) in rules.items():
        lines += ["", f"Reference: {rule}; grid hypervolume {true_hv:.5f}", "",
                  f"| sampler | HV / grid HV at {args.budget} trials, per seed | mean | trials to reach 0.95, per seed |",
                  "|---|---|---|---|"]
        result["rules"][rule] = {"grid_hv": true_hv, "samplers": {}}
        for name in ("tpe", "nsga2", "random"):
            fracs, reach = [], []
            for seed in args.seeds:
                hist = history(histories[(name, seed)])
                fracs.append(hist[-1] / true_hv)
                reach.append(next((i + 1 for i, h in enumerate(hist) if h >= 0.95 * true_hv), None))
            result["rules"][rule]["samplers"][name] = {"fraction": fracs, "reach_095": reach}
            lines.append(f"| {name} | {', '.join(f'{f:.3f}' for f in fracs)} | {statistics.fmean(fracs):.3f} | "
                         f"{', '.join(str(r) if r else f'>{args.budget}' for r in reach)} |")
    print("\n".join(lines))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
