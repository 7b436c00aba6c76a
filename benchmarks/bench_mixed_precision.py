"""Mixed per-layer precision against uniform precision, at the same trial budget.

For each setting, two searches with the same sampler, seed, budget, training and warm start
(all-2, all-4, all-8 bits first): ``uniform`` searches one weight and one activation
bit-width for the whole network; ``mixed`` searches them per layer (``per_layer``). Both
fronts are compared on val_acc against bitops:

- hypervolume under summary.json's rule (accuracy 0, the float model's BitOps): stable but
  coarse, every quantized point is near the ideal corner;
- hypervolume against a shared reference fitted to this comparison: accuracy from the worst
  to the best completed trial of either search, log10(BitOps) from the cheapest to the
  dearest; each axis scaled to [0, 1] there (so 1.0 = every trial's best accuracy at every
  trial's lowest cost);
- coverage: the share of one front's points that the other front weakly dominates.

    python benchmarks/bench_mixed_precision.py --out benchmarks/results/mixed-precision.json
    python benchmarks/bench_mixed_precision.py --settings cnn-small --budget 12 --seeds 0   # quick
    python benchmarks/bench_mixed_precision.py --settings resnet20-fashion --resnet-budget 16 --seeds 0 \
        --granularity block --out benchmarks/results/mixed-precision-resnet20-fashion.json   # make data first
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from speq_search.analysis.pareto import box_hypervolume, hypervolume, pareto_mask

BITS = [2, 3, 4, 8]
SETTINGS = {
    "cnn-small": {"data": {"dataset": "digits"}, "model": {"name": "cnn-small"}, "optim": {"epochs": 8, "fp_epochs": 30}},
    "mlp": {"data": {"dataset": "digits"}, "model": {"name": "mlp"}, "optim": {"epochs": 8, "fp_epochs": 30}},
    # resnet20 on real data the CPU can afford: a 3,000-image Fashion-MNIST subset (`make data` first).
    "resnet20-fashion": {"data": {"dataset": "fashion-mnist", "data_dir": ".data", "train_size": 3000, "batch_size": 100},
                         "model": {"name": "resnet20", "width": 0.5}, "optim": {"epochs": 3, "fp_epochs": 10}},
    # Random 32x32 data: the accuracy axis is noise; this setting checks costs and the machinery on resnet20.
    "resnet20-random": {"data": {"dataset": "random32", "batch_size": 100}, "model": {"name": "resnet20", "width": 0.5},
                        "optim": {"epochs": 1, "fp_epochs": 1}},
}


def space(setting: str, kind: str, budget: int, seed: int, granularity: str) -> dict:
    base = {"name": f"{kind}-{setting}-s{seed}", "train": {**SETTINGS[setting], "speq": {"method": "speq"}},
            "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
            "warm_start": "uniform",
            "search": {"sampler": "tpe", "num_samples": budget, "max_concurrent": 2, "seed": seed}}
    if kind == "uniform":
        base["params"] = {"w_bits": {"type": "choice", "values": BITS}, "a_bits": {"type": "choice", "values": BITS}}
    else:
        base["per_layer"] = {"granularity": granularity, "w_bits": BITS, "a_bits": BITS}
    return base


def coverage(a: np.ndarray, b: np.ndarray) -> float:
    """Share of b's points weakly dominated by some point of a (val_acc max, bitops min)."""
    if not len(b):
        return float("nan")
    hit = [any(pa[0] >= pb[0] and pa[1] <= pb[1] for pa in a) for pb in b]
    return float(np.mean(hit))


def fitted_hv(values: np.ndarray, acc_range: tuple[float, float], cost_range: tuple[float, float]) -> float:
    """Hypervolume in the box from (best accuracy, cheapest BitOps) to (worst accuracy, dearest BitOps), log cost."""
    return box_hypervolume(values, [acc_range[1], cost_range[0]], [acc_range[0], cost_range[1]],
                           log_axes=[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=["cnn-small", "mlp", "resnet20-random"], choices=list(SETTINGS))
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--granularity", default="layer")
    ap.add_argument("--resnet-budget", type=int, help="trials per search for the resnet20 settings (default: budget/2)")
    ap.add_argument("--runs", default="runs/bench-mixed", help="where the searches go")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()

    from speq_search.search import RunOptions, run_search
    from speq_search.space import parse_space

    results = []
    for setting in args.settings:
        budget = args.budget if not setting.startswith("resnet20") else max(8, args.budget // 2)
        budget = args.resnet_budget if setting.startswith("resnet20") and args.resnet_budget else budget
        for seed in args.seeds:
            runs, times = {}, {}
            for kind in ("uniform", "mixed"):
                # The uniform search does not depend on the granularity: one run serves every granularity.
                tag = f"{kind}-{setting}" + (f"-{args.granularity}" if kind == "mixed" else "")
                run_dir = Path(args.runs) / f"{tag}-s{seed}-b{budget}"
                if not (run_dir / "summary.json").exists():
                    t0 = time.time()
                    run_search(parse_space(space(setting, kind, budget, seed, args.granularity)), run_dir,
                               RunOptions(log=lambda msg: None))
                    times[kind] = round(time.time() - t0, 1)
                df = pd.read_csv(run_dir / "trials.csv")
                runs[kind] = (df[df.status == "COMPLETED"], json.loads((run_dir / "summary.json").read_text()))
            both = pd.concat([r[0] for r in runs.values()])
            acc_range = (float(both.val_acc.min()), float(both.val_acc.max()))
            cost_range = (float(both.bitops.min()), float(both.bitops.max()))
            row = {"setting": setting, "seed": seed, "budget": budget, "granularity": args.granularity,
                   "search_time_s": times}
            fronts = {}
            for kind, (done, summary) in runs.items():
                v = done[["val_acc", "bitops"]].to_numpy(float)
                fronts[kind] = v[pareto_mask(v, ["max", "min"])]
                row[f"{kind}_hv_summary_rule"] = round(hypervolume(v, ["val_acc", "bitops"], ["max", "min"],
                                                                   summary["full_precision_costs"]), 5)
                row[f"{kind}_hv_fitted"] = round(fitted_hv(v, acc_range, cost_range), 4)
                row[f"{kind}_front"] = [[round(a, 4), int(c)] for a, c in sorted(fronts[kind].tolist(), key=lambda p: p[1])]
                row[f"{kind}_completed"] = int(len(done))
            row["mixed_covers_uniform"] = coverage(fronts["mixed"], fronts["uniform"])
            row["uniform_covers_mixed"] = coverage(fronts["uniform"], fronts["mixed"])
            row["hv_fitted_ratio_mixed_over_uniform"] = round(row["mixed_hv_fitted"] / max(row["uniform_hv_fitted"],
                                                                                            1e-12), 3)
            results.append(row)
            print(f"{setting} seed {seed} ({budget} trials each): hypervolume fitted mixed {row['mixed_hv_fitted']:.4f}"
                  f" vs uniform {row['uniform_hv_fitted']:.4f} (ratio {row['hv_fitted_ratio_mixed_over_uniform']}); "
                  f"summary rule {row['mixed_hv_summary_rule']:.5f} vs {row['uniform_hv_summary_rule']:.5f}; mixed "
                  f"covers {row['mixed_covers_uniform']:.0%} of the uniform front, uniform covers "
                  f"{row['uniform_covers_mixed']:.0%} of the mixed one", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
