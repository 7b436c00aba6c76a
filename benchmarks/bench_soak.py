"""Soak: does a long search's memory stay flat? A 64-trial search of 1-epoch trials on digits.

Runs ``speq-search run`` as a subprocess and samples, every half second, the resident memory
(RSS, from /proc) of the driver and every process below it: Ray's daemons (gcs_server,
raylet...) and the trial workers. Each time another trial completes, the sample is kept.
Prints one JSON line per completed-trial count and a summary line with the growth per trial
over the last half of the trials (the goal: under 1 MB per trial), for the total and for the
largest worker.

    python benchmarks/bench_soak.py [--trials 64] [--out benchmarks/results/soak.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def _rss_mb(pid: int) -> tuple[str, float]:
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return fields["Name"].strip(), int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return "", 0.0


def tree_memory(root: int) -> dict[str, float]:
    """RSS in MB of ``root`` and all its descendants, by process (name:pid)."""
    kids, out, todo = _children(), {}, [root]
    while todo:
        pid = todo.pop()
        name, rss = _rss_mb(pid)
        if rss:
            out[f"{name}:{pid}"] = rss
        todo += kids.get(pid, [])
    return out


def _completed(run_dir: Path) -> int:
    try:
        lines = (run_dir / "trials.csv").read_text().splitlines()
    except OSError:
        return 0
    return sum(",COMPLETED," in line for line in lines[1:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--out", help="also write the JSON lines here")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "runs" / "soak"
        cmd = [sys.executable, "-m", "speq_search.cli", "run", "default", "--out-dir", str(run_dir.parent), "--name",
               "soak", "--num-samples", str(args.trials), "--set", "train.optim.epochs=1",
               "--set", "train.optim.fp_epochs=5", "--set", f"train.fp_cache_dir={tmp}/fp"]
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen = 0
        while proc.poll() is None:
            done = _completed(run_dir)
            if done > seen:
                mem = tree_memory(proc.pid)
                workers = {k: v for k, v in mem.items() if k.split(":")[0] not in ("gcs_server", "raylet", "python")
                           or "ray::" in k}
                row = {"trials": done, "t_s": round(time.time() - t0, 1), "total_mb": round(sum(mem.values()), 1),
                       "driver_mb": round(mem.get(f"python:{proc.pid}", 0.0), 1),
                       "largest_worker_mb": round(max(workers.values(), default=0.0), 1), "processes": len(mem)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                seen = done
            time.sleep(0.5)
        if proc.returncode != 0:
            raise SystemExit(f"the search failed with exit code {proc.returncode}")
    # The last half, while every process is up (at the very end workers exit, which is no trend).
    most = max(r["processes"] for r in rows)
    half = [r for r in rows if r["trials"] > args.trials // 2 and r["processes"] == most]
    summary = {"summary": True, "trials": args.trials, "samples": len(rows), "wall_s": round(time.time() - t0, 1),
               "peak_total_mb": max(r["total_mb"] for r in rows)}
    for key in ("total_mb", "largest_worker_mb", "driver_mb"):
        if len(half) >= 2:
            slope = np.polyfit([r["trials"] for r in half], [r[key] for r in half], 1)[0]
            summary[f"{key[:-3]}_growth_mb_per_trial_last_half"] = round(float(slope), 3)
    print(json.dumps(summary), flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(json.dumps(r) for r in [*rows, summary]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
