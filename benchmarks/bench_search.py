"""Search overhead, concurrency throughput and peak memory of `speq-search run`.

- overhead: wall time of a search over (sum of the trials' own times / concurrency);
- throughput: trials per minute with 2 concurrent trials over 1, on the same space and budget;
- peak memory: largest summed resident memory of the whole process tree (driver, Ray's daemons,
  trial workers), sampled every 0.2 s. RSS counts shared pages once per process, so it is an upper
  bound.

    python benchmarks/bench_search.py [--trials 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from _measure import run_polling


def _tree_rss_mb(root: int) -> float:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/statm") as f:
                rss[int(entry)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / 2**20


def run_search(tmp: Path, name: str, trials: int, concurrent: int, epochs: int) -> dict:
    cmd = [sys.executable, "-m", "speq_search.cli", "run", "default", "--out-dir", str(tmp), "--name", name,
           "--num-samples", str(trials), "--max-concurrent", str(concurrent), "--set", f"train.epochs={epochs}"]
    wall, peak = run_polling(cmd, _tree_rss_mb, 0.2)
    df = pd.read_csv(tmp / name / "trials.csv")
    done = df[df["status"] == "COMPLETED"]
    return {"name": name, "trials": int(len(done)), "concurrent": concurrent, "wall_s": round(wall, 1),
            "sum_trial_s": round(float(done["wall_time_s"].sum()), 1),
            "sum_train_s": round(float(done["train_time_s"].sum()), 1), "peak_rss_mb": round(peak)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=8, help="epochs per trial (the default space's)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # Warm the FP cache so both runs measure the search, not the one-off FP training.
        subprocess.run([sys.executable, "-m", "speq_search.cli", "train", "--out", str(tmp / "warm"), "--epochs", "1",
                        "--quiet"], check=True, capture_output=True)
        two = run_search(tmp, "c2", args.trials, 2, args.epochs)
        one = run_search(tmp, "c1", args.trials // 2, 1, args.epochs)
    out = {
        "c2": two, "c1": one,
        "overhead_wall_over_trials": round(two["wall_s"] / (two["sum_trial_s"] / 2), 3),
        "overhead_wall_over_training": round(two["wall_s"] / (two["sum_train_s"] / 2), 3),
        "throughput_2_over_1": round((two["trials"] / two["wall_s"]) / (one["trials"] / one["wall_s"]), 3),
        "peak_rss_gb": round(max(two["peak_rss_mb"], one["peak_rss_mb"]) / 1024, 2),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
