"""Why does (or doesn't) SPEQ beat plain QAT? One variant of the method at a time.

Runs plain QAT and each variant below at W2A2 for the same seeds, each seed's runs from
the same cached full-precision model, and prints a Markdown table: mean test accuracy,
the paired difference to QAT per seed, the stochastic teacher's training accuracy and the
all-high-bits network's validation accuracy (batch statistics, as the teacher sees it).

    python benchmarks/investigate_speq.py --dataset fashion-mnist --data-dir .data \\
        --train-size 6000 --width 0.5 --epochs 6 --seeds 0 1 2 --out benchmarks/results/investigation.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from speq_search import TrainConfig, run_training

# name -> config changes on top of method "speq" (qat is the reference)
VARIANTS: dict[str, dict] = {
    "qat": {"speq.method": "qat"},
    "speq (default: cosine on probs, T=1, kd=1, ce=1, p=0.5, 8-bit)": {},
    "T=4": {"speq.temperature": 4.0},
    "kd_weight=5": {"speq.kd_weight": 5.0},
    "KD only (ce_weight=0)": {"speq.ce_weight": 0.0},
    "cosine on logits": {"speq.kd_loss": "cosine-logits"},
    "high_bits=32": {"speq.high_bits": 32},
    "p_high=1 (deterministic 8-bit teacher)": {"speq.p_high": 1.0},
    "p_high=0.25": {"speq.p_high": 0.25},
    "teacher BN running stats": {"speq.teacher_bn": "running"},
    "kd-kl (KL, T=1)": {"speq.method": "kd-kl"},
    "kd-fp (FP teacher, cosine)": {"speq.method": "kd-fp"},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--train-size", type=int)
    p.add_argument("--model", default="cnn-small")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--bits", type=int, default=2, help="activation bits (and weight bits unless --w-bits)")
    p.add_argument("--w-bits", type=int, help="weight bits, e.g. 8 for an activation-limited network")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--fp-epochs", type=int, default=15)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--only", nargs="*", help="run only variants whose name contains one of these")
    p.add_argument("--out")
    args = p.parse_args(argv)
    w_bits = args.w_bits or args.bits
    base = TrainConfig(progress=False).replace(**{
        "data.dataset": args.dataset, "data.data_dir": args.data_dir, "data.train_size": args.train_size,
        "model.name": args.model, "model.width": args.width, "optim.epochs": args.epochs,
        "optim.fp_epochs": args.fp_epochs, "quant.w_bits": w_bits, "quant.a_bits": args.bits})
    variants = {k: v for k, v in VARIANTS.items() if k == "qat" or not args.only or any(o in k for o in args.only)}
    rows = []
    for seed in args.seeds:
        for name, changes in variants.items():
            t0 = time.time()
            history: list[dict] = []
            m = run_training(base.replace(seed=seed, **changes), None, log=lambda s: None, callback=history.append)
            best = history[m["best_epoch"] - 1]
            row = {"variant": name, "seed": seed, "test_acc": m["test_acc"], "val_acc": m["val_acc"],
                   "teacher_train_acc": best["teacher_train_acc"], "train_acc": best["train_acc"],
                   "high_val_acc": m["high_val_acc"], "fp_test_acc": m["fp_test_acc"], "seconds": round(time.time() - t0, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [f"W{w_bits}A{args.bits}, {args.dataset}, {args.model} x{args.width:g}, {args.epochs} epochs"
             + (f", train subset {args.train_size}" if args.train_size else "") + f", seeds {args.seeds}", "",
             "| variant | test acc % | Δ vs qat per seed (points) | mean Δ | student train acc % | teacher train acc % "
             "| all-high-bits val acc % |", "|---|---|---|---|---|---|---|"]
    qat = {r["seed"]: r["test_acc"] for r in rows if r["variant"] == "qat"}
    for name in variants:
        rs = [r for r in rows if r["variant"] == name]
        diffs = [100 * (r["test_acc"] - qat[r["seed"]]) for r in rs]
        mean = lambda key, rs=rs: statistics.fmean(100 * r[key] for r in rs)  # noqa: E731
        teacher = f"{mean('teacher_train_acc'):.2f}" if name != "qat" else "-"
        lines.append(f"| {name} | {mean('test_acc'):.2f} | {', '.join(f'{d:+.2f}' for d in diffs)} | "
                     f"{statistics.fmean(diffs):+.2f} | {mean('train_acc'):.2f} | {teacher} | {mean('high_val_acc'):.2f} |")
    fp = statistics.fmean(100 * r["fp_test_acc"] for r in rows)
    lines.append(f"\nfull-precision test accuracy (same FP models): {fp:.2f} %")
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
