"""Bookkeeping after each trial of a large search: does it stay flat as trials accumulate?

A search rewrites trials.csv, pareto.csv and summary.json after every finished trial (and the
report draws the hypervolume history). This script builds a synthetic Ray experiment folder
(trial folders with params.json and a result.json of 8 epochs each, as a search writes them),
adds trials one at a time, and times each rewrite with the run's TrialTable, as a search does;
for comparison, a rewrite that reads every trial again (what a search did before) at a few
counts, and the hypervolume history incremental against recomputed for every prefix.

    python benchmarks/bench_bookkeeping.py [--trials 2000] [--out benchmarks/results/bookkeeping.json]

Prints one line per checkpoint and writes the figures as JSON. No Ray, no training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speq_search.analysis import pareto  # noqa: E402
from speq_search.search.results import TrialTable, write_outputs  # noqa: E402
from speq_search.space import parse_space  # noqa: E402

SPACE = {
    "name": "bookkeeping",
    "train": {"data": {"dataset": "digits"}, "optim": {"epochs": 8}},
    "params": {"w_bits": {"type": "choice", "values": [2, 3, 4, 8]}, "a_bits": {"type": "choice", "values": [2, 3, 4, 8]},
               "p_high": {"type": "uniform", "low": 0.2, "high": 0.8}},
    "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "bitops", "mode": "min"}],
    "search": {"num_samples": 2000},
}
EPOCHS = 8
REFERENCE = {"bitops": 4.0e7, "size_bytes": 50_000}


def add_trial(experiment: Path, i: int, rng: np.random.Generator) -> None:
    params = {"w_bits": int(rng.choice([2, 3, 4, 8])), "a_bits": int(rng.choice([2, 3, 4, 8])),
              "p_high": float(rng.uniform(0.2, 0.8))}
    trial_id = f"{i:08x}"
    folder = experiment / f"speq_trainable_{trial_id}_{i}_w_bits={params['w_bits']}_2026-11-30_00-00-00"
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps(params))
    bits = params["w_bits"] * params["a_bits"]
    acc = 0.97 - 0.1 / bits + rng.normal(0, 0.01)
    lines = []
    for e in range(1, EPOCHS + 1):
        row = {"trial_id": trial_id, "epoch": e, "epochs_done": e, "epochs_total": EPOCHS, "full_fidelity": e == EPOCHS,
               "val_acc": acc * e / EPOCHS, "val_loss": 0.1, "avg_w_bits": params["w_bits"], "avg_a_bits": params["a_bits"],
               "avg_bits": (params["w_bits"] + params["a_bits"]) / 2, "size_bytes": 1000 * params["w_bits"],
               "bitops": 1.2e6 * bits, "macs": 1.2e6, "params": 9000, "step_time_s": 0.01, "train_time_s": e,
               "fp_val_acc": 0.98, "fp_test_acc": 0.98, "best_epoch": e, "timestamp": 1_800_000_000 + i * 10 + e,
               "time_total_s": float(e)}
        if e == EPOCHS:
            row["test_acc"] = acc
        lines.append(json.dumps(row))
    (folder / "result.json").write_text("\n".join(lines) + "\n")


def timed(fn, *args, **kwargs) -> float:
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


def every_prefix(loss: np.ndarray) -> list[float]:
    """The hypervolume history as the report computed it before: each prefix from scratch."""
    return [pareto._hypervolume_of_losses(loss[:k]) for k in range(1, len(loss) + 1)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--out", help="write the figures here as JSON")
    args = ap.parse_args(argv)
    spec = parse_space(SPACE)
    checkpoints = sorted({c for c in (100, 1000, 2000, args.trials) if c <= args.trials})
    rng = np.random.default_rng(0)
    result = {"trials": args.trials, "checkpoints": []}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, experiment = Path(tmp), Path(tmp) / "ray"
        experiment.mkdir()
        table = TrialTable()
        per_trial = []
        for i in range(1, args.trials + 1):
            add_trial(experiment, i, rng)
            # What a search does after each finished trial: rewrite the run files from its table.
            per_trial.append(timed(lambda: write_outputs(run_dir, spec, experiment, REFERENCE, plots=False, table=table)))
            if i in checkpoints:
                recent = per_trial[-min(50, i):]
                full = [timed(lambda: write_outputs(run_dir, spec, experiment, REFERENCE, plots=False)) for _ in range(3)]
                values = np.column_stack([np.linspace(0.5, 0.97, i), np.linspace(1e6, 8e7, i)[::-1]])
                values = values[rng.permutation(i)]
                hv_new = timed(pareto.hypervolume_history, values, ["val_acc", "bitops"], ["max", "min"], REFERENCE)
                hv_old = None
                if i <= 1000:  # every prefix from scratch: what the report did before
                    loss = pareto.normalise(values, ["val_acc", "bitops"], ["max", "min"], REFERENCE)
                    hv_old = timed(every_prefix, loss)
                point = {"trials": i, "rewrite_s_median": statistics.median(recent), "rewrite_s_max": max(recent),
                         "rewrite_reading_all_s": statistics.median(full), "trial_reads": table.reads,
                         "hypervolume_history_s": hv_new, "hypervolume_history_every_prefix_s": hv_old}
                result["checkpoints"].append(point)
                print(f"{i:5d} trials: rewrite after a trial {1000 * point['rewrite_s_median']:6.1f} ms median "
                      f"(max {1000 * point['rewrite_s_max']:.1f} over the last {len(recent)}); reading every trial again "
                      f"{1000 * point['rewrite_reading_all_s']:7.1f} ms; hypervolume history {1000 * hv_new:.1f} ms"
                      + (f" (every prefix from scratch: {hv_old:.2f} s)" if hv_old is not None else ""), flush=True)
    first, last = result["checkpoints"][0], result["checkpoints"][-1]
    result["growth"] = last["rewrite_s_median"] / first["rewrite_s_median"]
    print(f"rewrite per trial: {1000 * first['rewrite_s_median']:.1f} ms at {first['trials']} trials -> "
          f"{1000 * last['rewrite_s_median']:.1f} ms at {last['trials']} ({result['growth']:.2f}x; goal: under 1 s)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
