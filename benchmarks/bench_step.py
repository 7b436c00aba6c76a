"""Median time per training step of fp, qat and speq, and peak memory of a ``train`` run.

The step is the library's own (``speq_search.train.make_step``) plus backward and the
optimiser. Methods are interleaved round by round so that they share the machine's state.
Prints one JSON line per workload with ``speq_over_qat`` and ``qat_over_fp``.

    python benchmarks/bench_step.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time

import torch
from _measure import run_polling

from speq_search import TrainConfig, create_model
from speq_search.train import make_optimizer, make_step, prepare_student


class _Fake:
    """Just enough of a Splits for prepare_student's calibration batch."""

    def __init__(self, x):
        self.train = type("S", (), {"x": x})()


def step_times(model_name: str, x: torch.Tensor, y: torch.Tensor, rounds: int, warmup: int = 3) -> dict:
    device = torch.device("cpu")
    fp_model = create_model(model_name, num_classes=10, in_channels=x.shape[1])
    workers = {}
    for method in ("fp", "qat", "speq"):
        cfg = TrainConfig(progress=False).replace(**{
            "speq.method": method, "model.name": model_name, "quant.w_bits": 2, "quant.a_bits": 2,
            "data.batch_size": len(x)})
        student = prepare_student(cfg, fp_model, _Fake(x), device)
        student.train()
        optimizer = make_optimizer(student, cfg, 0.01)
        workers[method] = (make_step(cfg, student, fp_model, torch.Generator().manual_seed(0), device), optimizer)
    times = {m: [] for m in workers}
    for r in range(warmup + rounds):
        for method, (step, optimizer) in workers.items():
            t0 = time.perf_counter()
            loss = step(x, y)[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if r >= warmup:
                times[method].append(time.perf_counter() - t0)
    med = {m: statistics.median(t) for m, t in times.items()}
    return {
        "workload": f"{model_name} batch {tuple(x.shape)}",
        **{f"{m}_ms": round(1000 * v, 2) for m, v in med.items()},
        "speq_over_qat": round(med["speq"] / med["qat"], 3),
        "qat_over_fp": round(med["qat"] / med["fp"], 3),
        "rounds": rounds,
    }


def _peak_rss_mb(pid: int) -> float:
    """The process's own peak resident memory (VmHWM: reset at exec, unlike ru_maxrss of a fork)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_memory_of_train_run() -> dict:
    """Peak resident memory of ``speq-search train`` on digits, polled from /proc while it runs."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "speq_search.cli", "train", "--out", f"{tmp}/run", "--epochs", "3",
               "--fp-epochs", "5", "--fp-cache-dir", f"{tmp}/fp", "--quiet"]
        seconds, peak = run_polling(cmd, _peak_rss_mb, 0.05)
    return {"workload": "speq-search train (digits, cnn-small, 5 fp + 3 speq epochs)",
            "peak_rss_mb": round(peak, 1), "wall_s": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--memory-only", action="store_true", help="only the peak memory of a train run")
    args = p.parse_args(argv)
    if args.memory_only:
        print(json.dumps(peak_memory_of_train_run()))
        return 0
    torch.manual_seed(0)
    print(json.dumps({"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
                      f"torch {torch.__version__}"}))
    from speq_search import create_dataset

    digits = create_dataset("digits")
    print(json.dumps(step_times("cnn-small", digits.train.x[:64], digits.train.y[:64], args.rounds)), flush=True)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    print(json.dumps(step_times("resnet20", x, y, max(args.rounds // 3, 5))), flush=True)
    print(json.dumps(peak_memory_of_train_run()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
