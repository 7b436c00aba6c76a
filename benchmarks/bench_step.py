"""Median time per training step of fp, qat and speq, and peak memory of a ``train`` run.

The step is the library's own (``speq_search.train.make_step``) plus backward and the
optimiser. Methods are interleaved round by round so that they share the machine's state.
Prints one JSON line per workload with ``speq_over_qat`` and ``qat_over_fp``.

    python benchmarks/bench_step.py [--rounds 30] [--device cpu|cuda] [--compile]

On CUDA each timed step ends with a synchronize (wall time of the whole step), and one
extra step per method is profiled to count its GPU kernels and their summed time.
``--compile`` wraps each model's forward in ``torch.compile`` (compile time reported).
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _kernels(run_step, device: torch.device) -> tuple[int, float]:
    """(GPU kernels launched, their summed ms) in one step, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run_step()
        _sync(device)
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return len(events), sum(e.device_time for e in events) / 1000


def step_times(model_name: str, x: torch.Tensor, y: torch.Tensor, rounds: int, warmup: int = 3,
               device: torch.device | None = None, compile_model: bool = False) -> dict:
    device = device or torch.device("cpu")
    x, y = x.to(device), y.to(device)
    fp_model = create_model(model_name, num_classes=10, in_channels=x.shape[1]).to(device)
    workers = {}
    for method in ("fp", "qat", "speq"):
        cfg = TrainConfig(progress=False).replace(**{
            "speq.method": method, "model.name": model_name, "quant.w_bits": 2, "quant.a_bits": 2,
            "data.batch_size": len(x)})
        student = prepare_student(cfg, fp_model, _Fake(x), device)
        student.train()
        optimizer = make_optimizer(student, cfg, 0.01)
        if compile_model:
            student.forward = torch.compile(student.forward)
        workers[method] = (make_step(cfg, student, fp_model, torch.Generator().manual_seed(0), device), optimizer)

    def one(step, optimizer):
        loss = step(x, y)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    times = {m: [] for m in workers}
    t_first = {}
    for r in range(warmup + rounds):
        for method, (step, optimizer) in workers.items():
            _sync(device)
            t0 = time.perf_counter()
            one(step, optimizer)
            _sync(device)
            if r == 0:
                t_first[method] = time.perf_counter() - t0
            if r >= warmup:
                times[method].append(time.perf_counter() - t0)
    med = {m: statistics.median(t) for m, t in times.items()}
    extra = {}
    if device.type == "cuda":
        for method, (step, optimizer) in workers.items():
            n, ms = _kernels(lambda s=step, o=optimizer: one(s, o), device)
            extra[f"{method}_kernels"], extra[f"{method}_kernel_ms"] = n, round(ms, 2)
    if compile_model:
        extra.update({f"{m}_first_step_s": round(t, 1) for m, t in t_first.items()})
    return {
        "workload": f"{model_name} batch {tuple(x.shape)} on {device.type}" + (" compiled" if compile_model else ""),
        **{f"{m}_ms": round(1000 * v, 2) for m, v in med.items()}, **extra,
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
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--compile", action="store_true", help="torch.compile each model's forward")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.memory_only:
        print(json.dumps(peak_memory_of_train_run()))
        return 0
    torch.manual_seed(0)
    gpu = f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""
    print(json.dumps({"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
                      f"torch {torch.__version__}{gpu}"}))
    from speq_search import create_dataset

    digits = create_dataset("digits")
    kw = {"device": device, "compile_model": args.compile}
    print(json.dumps(step_times("cnn-small", digits.train.x[:64], digits.train.y[:64], args.rounds, **kw)), flush=True)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    rounds = args.rounds if device.type == "cuda" else max(args.rounds // 3, 5)
    print(json.dumps(step_times("resnet20", x, y, rounds, **kw)), flush=True)
    if device.type == "cpu":
        print(json.dumps(peak_memory_of_train_run()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
