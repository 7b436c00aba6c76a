"""Study (a): the accuracy-versus-bits fronts of fp, qat, kd-kl and speq, averaged over seeds.

A grid search over method x uniform bits (weights = activations) x seed; every point of a
method's front is the seed mean of one bit-width. fp is the full-precision model each seed
starts from (a reference line and a table row).

    python analysis/method_comparison.py                      # digits, cnn-small, ~3 min on 2 cores
    python analysis/method_comparison.py --dataset fashion-mnist --data-dir .data --train-size 6000 \\
        --width 0.5 --epochs 6 --fp-epochs 15 --bits 2 4 --seeds 0 1  # make data first
    python analysis/method_comparison.py --reuse              # redraw from the finished search
"""

from __future__ import annotations

import argparse

import pandas as pd
from _study import pct, run_grid, seed_means, write_study

from speq_search.analysis.plots import front_data, render_fronts

METHODS = ("qat", "kd-kl", "speq")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir")
    ap.add_argument("--train-size", type=int)
    ap.add_argument("--model", default="cnn-small")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--fp-epochs", type=int, default=30)
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--reuse", action="store_true", help="redraw from runs/studies/<name> when it exists")
    args = ap.parse_args()
    name = f"methods-{args.dataset}"
    data = {"dataset": args.dataset, "batch_size": 64 if args.dataset == "digits" else 128}
    if args.data_dir:
        data["data_dir"] = args.data_dir
    if args.train_size:
        data["train_size"] = args.train_size
    space = {
        "name": name,
        "train": {"data": data, "model": {"name": args.model, "width": args.width},
                  "optim": {"epochs": args.epochs, "fp_epochs": args.fp_epochs, "lr": 0.02}},
        "params": {"method": {"type": "choice", "values": list(METHODS)},
                   "bits": {"type": "choice", "values": args.bits},
                   "seed": {"type": "choice", "values": args.seeds}},
        "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "avg_bits", "mode": "min"}],
        "search": {"sampler": "grid", "max_concurrent": 2},
    }
    trials = run_grid(name, space, args.reuse)
    means = seed_means(trials, ["method", "bits"])

    fig_rows = means.rename(columns={"test_acc_mean": "test_acc"}).assign(status="COMPLETED")
    data_ = front_data(fig_rows, "avg_bits", "test_acc", group="method",
                       hover=["method", "bits", "test_acc", "test_acc_std", "avg_bits", "bitops", "seeds"])
    fig = render_fronts(data_, f"{args.dataset}, {args.model} x{args.width:g}: test accuracy (mean of "
                               f"{len(args.seeds)} seeds) vs average bits")

    by = means.set_index(["method", "bits"])
    rows = []
    for b in args.bits:
        row = {"bits": str(b)}
        row.update({m: pct(by.loc[(m, b), "test_acc_mean"], by.loc[(m, b), "test_acc_std"]) for m in METHODS})
        row["speq − qat (points)"] = f"{100 * (by.loc[('speq', b), 'test_acc_mean'] - by.loc[('qat', b), 'test_acc_mean']):+.2f}"
        rows.append(row)
    fp = trials.groupby("seed")["fp_test_acc"].first()
    rows.append({"bits": "fp (32)", **{m: pct(fp.mean(), fp.std()) for m in METHODS}, "speq − qat (points)": ""})
    table = pd.DataFrame(rows)
    notes = [f"Grid: method {list(METHODS)} x bits {args.bits} (W = A; first/last layer weights at 8) x seeds "
             f"{args.seeds}; {args.model} x{args.width:g} on {args.dataset}"
             + (f" ({args.train_size} training images)" if args.train_size else "")
             + f", {args.epochs} epochs from a {args.fp_epochs}-epoch FP model.",
             "Test accuracy (%), mean ± std over seeds; the fp row is the full-precision model each run starts from."]
    write_study(name, {"Test accuracy by method and bits": table}, {"front": fig}, notes)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
