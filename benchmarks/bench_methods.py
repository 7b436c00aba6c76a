"""Does SPEQ beat QAT? Paired runs of several methods from one float model per seed.

Every variant of a seed starts from the same cached full-precision model, so differences
between variants of one seed are paired. Each finished run is appended to ``--out`` as one
JSON line at once; running the same command again skips the runs already there (a cut
session loses at most the run in progress). ``--report`` only prints the tables.

Variants (``--variants``): qat, speq (defaults), speq-kd3 (kd_weight 3), speq-cosine-decay
(speq.kd_schedule cosine-decay), speq-linear-decay, kd-kl, kd-fp (distillation from the float
model: if even that does not beat QAT, the setting leaves no room for distillation).

The tables give, per bit-width, test accuracy per variant, the paired difference against
QAT per seed with its mean, standard deviation and standard error, whether the mean exceeds
two standard errors, the seeds needed for a 0.3-point gain to exceed two standard errors
(``n >= (2 * sd / 0.3) ** 2``), and the teacher diagnostic (teacher - student, same
BatchNorm statistics) at the selected epoch. Selection uses validation only.

    python benchmarks/bench_methods.py --dataset digits --seeds 0 1 2 3 4 --out rows.jsonl
    python benchmarks/bench_methods.py --dataset fashion-mnist --data-dir .data --width 0.5 \\
        --epochs 15 --fp-epochs 15 --batch-size 128 --bits 2 --seeds 0 1 2 3 --out rows.jsonl
    python benchmarks/bench_methods.py --report rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import yaml

# name -> config changes on top of the setting's base configuration
VARIANTS: dict[str, dict] = {
    "qat": {"speq.method": "qat"},
    "speq": {"speq.method": "speq"},
    "speq-kd3": {"speq.method": "speq", "speq.kd_weight": 3.0},
    "speq-cosine-decay": {"speq.method": "speq", "speq.kd_schedule": "cosine-decay"},
    "speq-linear-decay": {"speq.method": "speq", "speq.kd_schedule": "linear-decay"},
    "kd-kl": {"speq.method": "kd-kl"},
    "kd-fp": {"speq.method": "kd-fp"},
}
DEFAULT_VARIANTS = ["qat", "speq", "speq-kd3", "speq-cosine-decay", "kd-kl", "kd-fp"]
EFFECT = 0.3  # points: the gain the comparison must be able to see
ROW_KEYS = ("val_acc", "test_acc", "val_acc_batch", "high_val_acc", "teacher_val_acc", "high_gap", "teacher_gap",
            "teacher_gap_mean", "best_epoch", "avg_w_bits", "avg_a_bits", "bitops", "fp_val_acc", "fp_test_acc",
            "step_time_s", "compile")


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def seeds_needed(sd: float, effect: float = EFFECT) -> int | None:
    """Seeds for which ``effect`` exceeds two standard errors of a paired mean with spread ``sd``."""
    if not math.isfinite(sd):
        return None
    return max(2, math.ceil((2 * sd / effect) ** 2))


def paired(rows: list[dict], bits: int, variant: str, base: str = "qat") -> dict[int, float]:
    """``variant - base`` in test accuracy points, per seed that has both."""
    acc = {(r["seed"], r["variant"]): 100 * r["test_acc"] for r in rows if r["bits"] == bits}
    return {s: acc[(s, variant)] - acc[(s, base)] for (s, v) in acc if v == variant and (s, base) in acc}


def tables(rows: list[dict], label: str = "") -> str:
    """Markdown: accuracy per variant, paired differences against QAT, teacher diagnostic."""
    order = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    lines: list[str] = []
    for bits in sorted({r["bits"] for r in rows}):
        rs = [r for r in rows if r["bits"] == bits]
        fp = {r["seed"]: 100 * r["fp_test_acc"] for r in rs}
        fp_mu, fp_sd = _mean_sd(list(fp.values()))
        lines += [f"W{bits}A{bits}{label}: test accuracy (%), float model {fp_mu:.2f} ± {fp_sd:.2f} (n={len(fp)})", "",
                  "| variant | test acc | − qat per seed | mean ± sd (se) | > 2 se? | seeds for 0.3 | "
                  "teacher − student | high-bits − student |",
                  "|---|---|---|---|---|---|---|---|"]
        for v in order:
            vr = [r for r in rs if r["variant"] == v]
            if not vr:
                continue
            mu, sd = _mean_sd([100 * r["test_acc"] for r in vr])
            acc = f"{mu:.2f} ± {sd:.2f} (n={len(vr)})" if len(vr) > 1 else f"{mu:.2f} (n=1)"
            gap = _mean_sd([100 * r["teacher_gap"] for r in vr if math.isfinite(r.get("teacher_gap", math.nan))])
            high = _mean_sd([100 * r["high_gap"] for r in vr if math.isfinite(r.get("high_gap", math.nan))])
            gaps = f"{gap[0]:+.2f}" if vr and math.isfinite(gap[0]) else "-"
            highs = f"{high[0]:+.2f}" if vr and math.isfinite(high[0]) else "-"
            if v == "qat":
                lines.append(f"| {v} | {acc} | | | | | {gaps} | {highs} |")
                continue
            d = paired(rs, bits, v)
            if not d:
                lines.append(f"| {v} | {acc} | (no paired qat run) | | | | {gaps} | {highs} |")
                continue
            dmu, dsd = _mean_sd(list(d.values()))
            se = dsd / math.sqrt(len(d)) if len(d) > 1 else math.nan
            clears = "yes" if math.isfinite(se) and dmu > 2 * se else ("no" if math.isfinite(se) else "n<2")
            need = seeds_needed(dsd)
            lines.append(f"| {v} | {acc} | {', '.join(f'{x:+.2f}' for x in d.values())} | "
                         f"{dmu:+.2f} ± {dsd:.2f} ({se:.2f}) | {clears} | {need if need else '-'} | {gaps} | {highs} |")
        lines.append("")
    lines.append(f"seeds for 0.3: n with 2 · sd / √n ≤ {EFFECT}, i.e. n ≥ (2 · sd / {EFFECT})², from the paired sd "
                 "measured here. teacher − student: the stochastic teacher (mean of the seeded draws) and the "
                 "all-high-bits network against the student, same BatchNorm statistics, validation, selected "
                 "epoch (points).")
    return "\n".join(lines)


def read_rows(path: Path, setting: str | None = None) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "variant" in r and (setting is None or r.get("setting") == setting)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--train-size", type=int)
    p.add_argument("--model", default="cnn-small")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    p.add_argument("--bits", nargs="+", type=int, default=[2, 3])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--fp-epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config change for every run")
    p.add_argument("--quick", action="store_true", help="2 seeds, 2 epochs: a smoke run of the script")
    p.add_argument("--out", help="append each finished run here as a JSON line; runs already there are skipped")
    p.add_argument("--report", metavar="ROWS", help="print the tables of a rows file and exit")
    args = p.parse_args(argv)
    if args.report:
        rows = read_rows(Path(args.report))
        for setting in dict.fromkeys(r["setting"] for r in rows):
            print(f"## {setting}\n\n" + tables([r for r in rows if r["setting"] == setting]) + "\n")
        return 0
    if args.quick:
        args.seeds, args.epochs, args.fp_epochs = args.seeds[:2], 2, 3

    from speq_search import TrainConfig, run_training

    sets = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    base = TrainConfig(progress=False).replace(**{
        "data.dataset": args.dataset, "data.data_dir": args.data_dir, "data.train_size": args.train_size,
        "data.batch_size": args.batch_size, "model.name": args.model, "model.width": args.width,
        "optim.epochs": args.epochs, "optim.fp_epochs": args.fp_epochs, **sets,
    })
    # One line names the setting, so that rows of several settings can share a file.
    setting = (f"{args.dataset}{f' (train {args.train_size})' if args.train_size else ''}, {args.model} "
               f"x{args.width:g}, batch {args.batch_size}, {args.epochs} epochs (float {args.fp_epochs})"
               + (f", {' '.join(args.set)}" if args.set else ""))
    out = Path(args.out) if args.out else None
    rows = read_rows(out, setting) if out else []
    done = {(r["seed"], r["bits"], r["variant"]) for r in rows}
    todo = [(s, b, v) for s in args.seeds for b in args.bits for v in args.variants if (s, b, v) not in done]
    print(f"{setting}: {len(todo)} runs to do, {len(done)} already in {out}", file=sys.stderr)
    t_start = time.time()
    for i, (seed, bits, variant) in enumerate(todo, 1):
        cfg = base.replace(seed=seed, **{"quant.w_bits": bits, "quant.a_bits": bits, **VARIANTS[variant]})
        t0 = time.time()
        m = run_training(cfg, None, log=lambda msg: None)
        row = {"setting": setting, "seed": seed, "bits": bits, "variant": variant,
               **{k: m.get(k) for k in ROW_KEYS}, "seconds": round(time.time() - t0, 1)}
        rows.append(row)
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
        print(f"[{i}/{len(todo)}] seed {seed} W{bits}A{bits} {variant}: test {100 * row['test_acc']:.2f} "
              f"(float {100 * row['fp_test_acc']:.2f}), teacher − student {100 * row['teacher_gap']:+.2f}, "
              f"{row['seconds']:.0f} s", file=sys.stderr, flush=True)
    print(tables(rows, f" — {setting}"))
    print(f"\n{len(todo)} runs in {time.time() - t_start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
