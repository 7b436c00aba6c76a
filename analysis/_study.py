"""What the study scripts share: run (or reuse) a grid search, average over seeds, write figures and tables.

This folder (``analysis/``, top level) holds studies: scripts that run searches and write
their results. The library they use to load runs, find fronts and draw figures is the package
``speq_search.analysis``, which any user's script can import the same way.

A study's search runs into ``runs/studies/<name>/`` (Ray's experiment and checkpoints: not
committed); its outputs (PNG, HTML, Markdown table) go to ``analysis/results/<name>/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from speq_search.analysis.load import load_run
from speq_search.analysis.plots import image_session, write_figure
from speq_search.analysis.report import markdown_table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "analysis" / "results"
RUNS = ROOT / "runs" / "studies"


def w2a2_study(name: str, doc: str, speq: dict, params: dict) -> tuple[argparse.Namespace, dict]:
    """Arguments and grid space of a W2A2 SPEQ study on digits (cnn-small): ``params`` x ``--seeds``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--reuse", action="store_true", help="redraw from runs/studies/<name> when it exists")
    args = ap.parse_args()
    space = {
        "name": name,
        "train": {"data": {"dataset": "digits"}, "model": {"name": "cnn-small"}, "quant": {"w_bits": 2, "a_bits": 2},
                  "speq": {"method": "speq", **speq}, "optim": {"epochs": args.epochs, "fp_epochs": 30, "lr": 0.02}},
        "params": {**{k: {"type": "choice", "values": v} for k, v in params.items()},
                   "seed": {"type": "choice", "values": args.seeds}},
        "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "avg_bits", "mode": "min"}],
        "search": {"sampler": "grid", "max_concurrent": 2},
    }
    return args, space


def run_grid(name: str, space: dict, reuse: bool) -> pd.DataFrame:
    """Run ``space`` (a grid) into ``runs/studies/name``, or reuse a finished run there; return its trials."""
    from speq_search.search import RunOptions, run_search
    from speq_search.space import parse_space

    run_dir = RUNS / name
    if reuse and (run_dir / "trials.csv").exists():
        print(f"reusing {run_dir}", file=sys.stderr)
    else:
        if run_dir.exists():
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_dir.rename(run_dir.with_name(f"{name}-old-{stamp}"))  # keep earlier results, never overwrite
        t0 = time.time()
        run_search(parse_space(space), run_dir, RunOptions())
        print(f"{name}: search took {time.time() - t0:.0f} s", file=sys.stderr)
    trials = load_run(run_dir).trials
    failed = trials[trials.status != "COMPLETED"]
    if len(failed):
        print(f"{name}: {len(failed)} trials did not complete: " + ", ".join(failed["status"]), file=sys.stderr)
    return trials[trials.status == "COMPLETED"]


def seed_means(df: pd.DataFrame, by: list[str], metrics=("val_acc", "test_acc")) -> pd.DataFrame:
    """Mean and standard deviation over seeds of ``metrics`` (and the mean of the costs) per ``by`` group."""
    agg = {f"{m}_{s}": (m, s) for m in metrics for s in ("mean", "std")}
    agg.update({c: (c, "mean") for c in ("avg_bits", "bitops", "size_bytes", "fp_val_acc", "fp_test_acc") if c in df})
    agg["seeds"] = ("seed", "nunique") if "seed" in df else (metrics[0], "size")
    return df.groupby(by, as_index=False).agg(**agg)


def pct(mean: float, std: float) -> str:
    """``98.12 ± 0.31`` (accuracy in percent)."""
    return f"{100 * mean:.2f} ± {100 * (0 if pd.isna(std) else std):.2f}"


def write_study(name: str, tables: dict[str, pd.DataFrame], figures: dict, notes: list[str]) -> Path:
    """``analysis/results/<name>/``: one PNG (or HTML without Chromium) per figure and ``table.md``."""
    out = RESULTS / name
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {name}", "", *notes, ""]
    with image_session():
        for key, fig in figures.items():
            print(write_figure(fig, out / f"{key}.png"), file=sys.stderr)
            lines += [f"![{key}]({key}.png)", ""]
    for title, table in tables.items():
        lines += [f"## {title}", "", markdown_table(table), ""]
    (out / "table.md").write_text("\n".join(lines))
    print(f"wrote {out}/table.md", file=sys.stderr)
    return out
