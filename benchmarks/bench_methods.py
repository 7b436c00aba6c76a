"""Accuracy of fp, qat, kd-kl and speq at several bit-widths and seeds (issue: SPEQ beats QAT?).

Every method of a seed starts from the same cached full-precision model. Prints one line per
run, then Markdown tables: mean and standard deviation of test accuracy per method and bits,
and the paired difference ``speq - qat`` per seed. Raw rows go to ``--out`` (JSON).

    python benchmarks/bench_methods.py --dataset digits --seeds 0 1 2 3 4
    python benchmarks/bench_methods.py --dataset fashion-mnist --data-dir .data --train-size 12000 --seeds 0 1 2
    python benchmarks/bench_methods.py --set speq.temperature=4 ...   # a variant, for the investigation
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

from speq_search import TrainConfig, run_training


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def tables(rows: list[dict], label: str = "") -> str:
    """Markdown tables of test accuracy and of the paired speq - qat difference."""
    methods = [m for m in ("fp", "qat", "kd-kl", "speq", "kd-fp") if any(r["method"] == m for r in rows)]
    bits = sorted({r["bits"] for r in rows if r["method"] != "fp"})
    lines = [f"Test accuracy (%), mean ± std over seeds{label}", "",
             "| method | " + " | ".join(f"W{b}A{b}" for b in bits) + " |",
             "|---|" + "---|" * len(bits)]
    for m in methods:
        cells = []
        for b in bits:
            accs = [100 * r["test_acc"] for r in rows if r["method"] == m and (m == "fp" or r["bits"] == b)]
            if accs:
                mu, sd = _mean_std(accs)
                cells.append(f"{mu:.2f} ± {sd:.2f} (n={len(accs)})")
            else:
                cells.append("-")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "Paired difference speq − qat in test accuracy (points), per seed", "",
              "| bits | per seed | mean ± std | qat seed-to-seed std | beyond noise? |", "|---|---|---|---|---|"]
    for b in bits:
        by_seed = {}
        for r in rows:
            if r["bits"] == b and r["method"] in ("speq", "qat"):
                by_seed.setdefault(r["seed"], {})[r["method"]] = 100 * r["test_acc"]
        diffs = [v["speq"] - v["qat"] for v in by_seed.values() if len(v) == 2]
        if not diffs:
            continue
        mu, sd = _mean_std(diffs)
        _, qat_sd = _mean_std([v["qat"] for v in by_seed.values() if "qat" in v])
        se = sd / len(diffs) ** 0.5 if len(diffs) > 1 else float("inf")
        verdict = "yes" if mu > 2 * se and mu > qat_sd else "no"
        lines.append(f"| W{b}A{b} | {', '.join(f'{d:+.2f}' for d in diffs)} | {mu:+.2f} ± {sd:.2f} | {qat_sd:.2f} | {verdict} |")
    teach = [r for r in rows if r["method"] == "speq"]
    if teach:
        lines += ["", "Teacher diagnostics (speq runs, validation accuracy %, at the selected epoch)", "",
                  "| bits | student | all-high-bits network |", "|---|---|---|"]
        for b in bits:
            rs = [r for r in teach if r["bits"] == b]
            if rs:
                lines.append(f"| W{b}A{b} | {statistics.fmean(100 * r['val_acc'] for r in rs):.2f} | "
                             f"{statistics.fmean(100 * r['high_val_acc'] for r in rs):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--train-size", type=int)
    p.add_argument("--model", default="cnn-small")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--methods", nargs="+", default=["fp", "qat", "kd-kl", "speq"])
    p.add_argument("--bits", nargs="+", type=int, default=[2, 4])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--fp-epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config change for every run")
    p.add_argument("--quick", action="store_true", help="2 seeds, 3 epochs: a smoke run of the script")
    p.add_argument("--out", help="write raw rows as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.fp_epochs = args.seeds[:2], 3, 5

    base = TrainConfig(progress=False).replace(**{
        "data.dataset": args.dataset, "data.data_dir": args.data_dir, "data.train_size": args.train_size,
        "data.batch_size": args.batch_size, "model.name": args.model, "model.width": args.width,
        "optim.epochs": args.epochs, "optim.fp_epochs": args.fp_epochs,
        **{k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)},
    })
    rows = []
    t_start = time.time()
    for seed in args.seeds:
        for method in args.methods:
            for bits in ([32] if method == "fp" else args.bits):
                cfg = base.replace(seed=seed, **{"speq.method": method, "quant.w_bits": min(bits, 32),
                                                 "quant.a_bits": min(bits, 32)})
                t0 = time.time()
                m = run_training(cfg, None, log=lambda msg: None)
                row = {"seed": seed, "method": method, "bits": bits, **{k: m[k] for k in (
                    "val_acc", "test_acc", "high_val_acc", "best_epoch", "avg_w_bits", "avg_a_bits", "bitops",
                    "fp_test_acc")}, "seconds": round(time.time() - t0, 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    label = f" — {args.dataset}, {args.model} x{args.width:g}, {args.epochs} epochs" + (
        f", train subset {args.train_size}" if args.train_size else "") + (f", {' '.join(args.set)}" if args.set else "")
    report = tables(rows, label)
    print("\n" + report)
    print(f"\n{len(rows)} runs in {time.time() - t_start:.0f} s", file=sys.stderr)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "table": report}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
