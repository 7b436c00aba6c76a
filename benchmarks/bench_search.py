"""Search overhead, concurrency throughput and peak memory of `speq-search run`.

- overhead: wall time of a search over (sum of the trials' own times / concurrency);
- throughput: trials per minute with 2 concurrent trials over 1, on the same space and budget;
- peak memory: largest summed resident memory of the whole process tree (driver, Ray's daemons,
  trial workers), sampled every 0.2 s. RSS counts shared pages once per process, so it is an upper
  bound.

- compile: the same search end to end with ``train.compile`` set to each of ``--modes`` (the
  default ``auto`` against ``off``), each in a fresh compile cache, so one-off compiles count;
  per trial, the seconds it spent compiling (a worker process compiles once and its later
  trials load the result).

    python benchmarks/bench_search.py [--trials 16]
    python benchmarks/bench_search.py --compile-compare [--space fashion-mnist] [--trials 8] [--epochs 2]
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


def run_search(tmp: Path, name: str, trials: int, concurrent: int, epochs: int, space: str = "default",
               sets: tuple[str, ...] = (), env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "speq_search.cli", "run", space, "--out-dir", str(tmp), "--name", name,
           "--num-samples", str(trials), "--max-concurrent", str(concurrent), "--set", f"train.epochs={epochs}"]
    for item in sets:
        cmd += ["--set", item]
    wall, peak = run_polling(cmd, _tree_rss_mb, 0.2, env=env)
    df = pd.read_csv(tmp / name / "trials.csv")
    done = df[df["status"] == "COMPLETED"]
    out = {"name": name, "trials": int(len(done)), "concurrent": concurrent, "wall_s": round(wall, 1),
           "sum_trial_s": round(float(done["wall_time_s"].sum()), 1),
           "sum_train_s": round(float(done["train_time_s"].sum()), 1), "peak_rss_mb": round(peak)}
    if "compile" in done:
        out["compile_modes"] = sorted(done["compile"].astype(str).unique().tolist())
        out["compile_s_per_trial"] = [round(float(v), 1) for v in done["compile_s"]]
        out["median_step_ms"] = round(1000 * float(done["step_time_s"].median()), 2)
    return out


def compare_compile(space: str, trials: int, epochs: int, modes: list[str]) -> dict:
    """The same search with each compile mode, fresh compile caches, FP models trained beforehand."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # Train and cache the FP model first: every variant then measures the same work.
        subprocess.run([sys.executable, "-m", "speq_search.cli", "train", "--config", _space_train_config(space, tmp),
                        "--out", str(tmp / "warm"), "--epochs", "1", "--compile", "off", "--quiet"],
                       check=True, capture_output=True)
        results = {}
        for mode in modes:
            env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp / f"inductor-{mode}"))
            results[mode] = run_search(tmp, f"compile-{mode}", trials, 2, epochs, space,
                                       (f"train.compile={mode}",), env)
    base = results[modes[0]]
    out = {"space": space, "trials": trials, "epochs": epochs, **results}
    for mode in modes[1:]:
        out[f"wall_{mode}_over_{modes[0]}"] = round(results[mode]["wall_s"] / base["wall_s"], 3)
    return out


def _space_train_config(space: str, tmp: Path) -> str:
    """The space's train section as a config file (to warm the FP cache with the same settings)."""
    import yaml

    from speq_search.space import load_space

    path = tmp / f"{space}-train.yaml"
    path.write_text(yaml.safe_dump(load_space(space).train.to_dict()))
    return str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=8, help="epochs per trial (the default space's)")
    p.add_argument("--compile-compare", action="store_true", help="compare train.compile modes end to end")
    p.add_argument("--space", default="default", help="space of --compile-compare (default: default)")
    p.add_argument("--modes", nargs="+", default=["off", "auto"], help="modes of --compile-compare, baseline first")
    args = p.parse_args(argv)
    if args.compile_compare:
        print(json.dumps(compare_compile(args.space, args.trials, args.epochs, args.modes)))
        return 0
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
