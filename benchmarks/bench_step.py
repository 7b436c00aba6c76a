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
from speq_search.compiling import compile_seconds, compiled_forward
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
               device: torch.device | None = None, modes: tuple[str, ...] = ("off",)) -> list[dict]:
    """One result per compile mode; every (mode, method) pair is timed in the same rounds."""
    device = device or torch.device("cpu")
    x, y = x.to(device), y.to(device)
    torch.manual_seed(0)
    fp_model = create_model(model_name, num_classes=10, in_channels=x.shape[1]).to(device)
    workers = {}
    for mode in modes:
        for method in ("fp", "qat", "speq"):
            cfg = TrainConfig(progress=False).replace(**{
                "speq.method": method, "model.name": model_name, "quant.w_bits": 2, "quant.a_bits": 2,
                "data.batch_size": len(x)})
            student = prepare_student(cfg, fp_model, _Fake(x), device)
            student.train()
            optimizer = make_optimizer(student, cfg, 0.01)
            forward = compiled_forward(student, mode)
            step = make_step(cfg, student, fp_model, torch.Generator().manual_seed(0), device, forward)
            workers[mode, method] = (step, optimizer)

    def one(step, optimizer):
        loss = step(x, y)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    times = {key: [] for key in workers}
    first, compile_s = {}, {}
    for r in range(warmup + rounds):
        for key, (step, optimizer) in workers.items():
            _sync(device)
            c0, t0 = compile_seconds(), time.perf_counter()
            one(step, optimizer)
            _sync(device)
            if r == 0:
                first[key], compile_s[key] = time.perf_counter() - t0, compile_seconds() - c0
            if r >= warmup:
                times[key].append(time.perf_counter() - t0)
    med = {key: statistics.median(t) for key, t in times.items()}
    results = []
    for mode in modes:
        extra = {}
        if device.type == "cuda":
            for method in ("fp", "qat", "speq"):
                step, optimizer = workers[mode, method]
                n, ms = _kernels(lambda s=step, o=optimizer: one(s, o), device)
                extra[f"{method}_kernels"], extra[f"{method}_kernel_ms"] = n, round(ms, 2)
            extra["qat_kernels_over_fp"] = round(extra["qat_kernels"] / extra["fp_kernels"], 3)
        if mode != "off":
            extra.update({f"{m}_compile_s": round(compile_s[mode, m], 1) for m in ("fp", "qat", "speq")})
            if "off" in modes:
                extra["qat_over_qat_off"] = round(med[mode, "qat"] / med["off", "qat"], 3)
        m = {method: med[mode, method] for method in ("fp", "qat", "speq")}
        results.append({
            "workload": f"{model_name} batch {tuple(x.shape)} on {device.type}", "compile": mode,
            **{f"{k}_ms": round(1000 * v, 2) for k, v in m.items()}, **extra,
            "speq_over_qat": round(m["speq"] / m["qat"], 3),
            "qat_over_fp": round(m["qat"] / m["fp"], 3),
            "rounds": rounds,
        })
    return results


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
    p.add_argument("--compile", nargs="+", default=["off", "kernels"], choices=["off", "kernels", "on"],
                   help="compile modes to measure, interleaved in the same rounds (default: off kernels)")
    p.add_argument("--models", nargs="+", default=["cnn-small", "resnet20"], choices=["cnn-small", "resnet20"])
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
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    kw = {"device": device, "modes": tuple(args.compile)}
    results = []
    if "cnn-small" in args.models:
        results += step_times("cnn-small", digits.train.x[:64], digits.train.y[:64], args.rounds, **kw)
    if "resnet20" in args.models:
        rounds = args.rounds if device.type == "cuda" else max(args.rounds // 3, 5)
        results += step_times("resnet20", x, y, rounds, **kw)
    for result in results:
        print(json.dumps(result), flush=True)
    if device.type == "cpu":
        print(json.dumps(peak_memory_of_train_run()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
