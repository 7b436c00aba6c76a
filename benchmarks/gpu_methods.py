"""QAT against SPEQ (and kd-fp) on one GPU: the full Fashion-MNIST, resnet20, W2A2, several seeds.

Needs torch alone (no Ray, Optuna or plotly), so it runs on a bare GPU machine. Two phases,
each in parallel processes that time-slice the GPU (a quantized step is bound by Python and
kernel launches, so several processes fill it better than one):
1. the float model of each seed, trained once and cached;
2. every (method, seed) quantized run from its seed's float model.
Each finished run is printed and appended to ``--out`` as one JSON line at once, so a run cut
short still leaves the rows it finished. Selection uses validation only; test accuracy is
read once, on the model validation chose.

    python benchmarks/gpu_methods.py --data-dir .data --out rows.jsonl
    python benchmarks/gpu_methods.py --device cpu --train-size 600 --epochs 1 --fp-epochs 1   # smoke test
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_methods import ROW_KEYS, VARIANTS  # noqa: E402  (one list of variants for CPU and GPU)


def _config(args, variant: str, seed: int):
    from speq_search.config import TrainConfig

    changes = {
        "data.dataset": args.dataset, "data.data_dir": args.data_dir, "data.batch_size": args.batch_size,
        "model.name": args.model, "model.width": args.width, "quant.w_bits": args.bits, "quant.a_bits": args.bits,
        "optim.epochs": args.epochs, "optim.fp_epochs": args.fp_epochs, "seed": seed,
        "device": args.device, "fp_cache_dir": args.cache, "progress": False, **VARIANTS[variant],
    }
    if args.train_size:
        changes["data.train_size"] = args.train_size
    return TrainConfig().replace(**changes)


def _setting(args) -> str:
    return (f"{args.dataset}{f' (train {args.train_size})' if args.train_size else ''}, {args.model} x{args.width:g}, "
            f"batch {args.batch_size}, {args.epochs} epochs (float {args.fp_epochs}), {args.device}")


def _float_model(job) -> dict:
    args, seed = job
    from speq_search.train import full_precision_model, load_data, resolve_device

    cfg = _config(args, "qat", seed)
    t0 = time.time()
    _, info = full_precision_model(cfg, load_data(cfg), resolve_device(cfg.device), log=lambda m: None)
    return {"phase": "fp", "seed": seed, "fp_val_acc": info["fp_val_acc"], "fp_test_acc": info["fp_test_acc"],
            "wall_s": round(time.time() - t0, 1)}


def _quantized(job) -> dict:
    args, variant, seed = job
    from speq_search.train import run

    cfg = _config(args, variant, seed)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as out:
        m = run(cfg, Path(out) / "run", log=lambda msg: None)
        history = (Path(out) / "run" / "metrics.csv").read_text().splitlines()
    # The row schema of bench_methods.py, so that `bench_methods.py --report` reads these rows.
    return {"phase": "quantized", "setting": _setting(args), "seed": seed, "bits": args.bits, "variant": variant,
            **{k: m.get(k) for k in ROW_KEYS}, "step_ms": round(1000 * m["step_time_s"], 2),
            "seconds": round(time.time() - t0, 1), "epochs": len(history) - 1}


def _emit(row: dict, out: Path | None) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    if out is not None:
        with open(out, "a") as f:
            f.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=".data")
    p.add_argument("--train-size", type=int)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--bits", type=int, default=2)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    p.add_argument("--variants", nargs="+", default=["qat", "speq"], choices=list(VARIANTS),
                   help="as in bench_methods.py")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--fp-epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cuda")
    p.add_argument("--processes", type=int, default=0, help="parallel processes (default: one per run)")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "speq-gpu-fp"))
    p.add_argument("--out", help="append each finished run here as a JSON line")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else None
    ctx = mp.get_context("spawn")  # a forked child cannot use CUDA once the parent has
    t0 = time.time()
    _emit({"phase": "start", "args": vars(args)}, out)
    with ctx.Pool(args.processes or len(args.seeds)) as pool:
        for row in pool.imap_unordered(_float_model, [(args, s) for s in args.seeds]):
            _emit(dict(row, at_s=round(time.time() - t0, 1)), out)
    jobs = [(args, v, s) for s in args.seeds for v in args.variants]
    with ctx.Pool(args.processes or len(jobs)) as pool:
        for row in pool.imap_unordered(_quantized, jobs):
            _emit(dict(row, at_s=round(time.time() - t0, 1)), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
