"""ONNX export across bit-widths: file size against the run's estimate, and onnxruntime against PyTorch.

Trains cnn-small (x0.5) on digits for a few epochs at each setting, exports it with
``speq-search export``'s code path (``export_run``) and prints, per setting: the file and
weight bytes beside the run's ``size_bytes`` estimate, the test accuracy in onnxruntime and in
PyTorch, the largest logit difference, and the time of the export and of one inference pass
over the test split in each runtime (CPU, this process's threads).

    python benchmarks/bench_export.py [--epochs 3] [--out benchmarks/results/export.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speq_search.config import TrainConfig  # noqa: E402
from speq_search.export import export_run  # noqa: E402
from speq_search.train import load_data, load_trained  # noqa: E402
from speq_search.train import run as run_training  # noqa: E402

SETTINGS = {
    "W2A2": {"quant.w_bits": 2, "quant.a_bits": 2},
    "W3A3": {"quant.w_bits": 3, "quant.a_bits": 3},
    "W4A4": {"quant.w_bits": 4, "quant.a_bits": 4},
    "W8A8": {"quant.w_bits": 8, "quant.a_bits": 8},
    "mixed": {"quant.w_bits": 2, "quant.a_bits": 4, "quant.overrides": {"features.8": {"w_bits": 4, "a_bits": 2}}},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", help="write the rows here as JSON")
    args = ap.parse_args(argv)
    base = TrainConfig(progress=False).replace(**{"optim.epochs": args.epochs, "optim.fp_epochs": 10,
                                                  "model.width": 0.5, "speq.method": "qat", "compile": "off"})
    rows = []
    print(f"{'setting':<7} {'file KiB':>8} {'weights':>8} {'estimate':>8} {'file/est':>8} {'onnx %':>7} {'torch %':>7} "
          f"{'max |dlogit|':>12} {'export s':>8} {'ort/torch time':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, changes in SETTINGS.items():
            folder = Path(tmp) / name
            run_training(base.replace(**changes), folder, log=lambda msg: None)
            t0 = time.perf_counter()
            summary = export_run(folder, Path(tmp) / f"{name}.onnx", log=lambda msg: None)
            export_s = time.perf_counter() - t0
            ratio = _inference_ratio(folder, Path(tmp) / f"{name}.onnx")
            row = {"setting": name, **summary, "export_s": round(export_s, 2), "ort_over_torch_time": round(ratio, 3)}
            rows.append(row)
            est = summary["size_bytes_estimate"]
            print(f"{name:<7} {summary['file_bytes'] / 1024:8.1f} {summary['weight_bytes'] / 1024:8.1f} {est / 1024:8.1f} "
                  f"{summary['file_bytes'] / est:8.2f} {100 * summary['onnx_test_acc']:7.2f} {100 * summary['torch_test_acc']:7.2f} "
                  f"{summary['max_logit_diff']:12.2g} {export_s:8.1f} {ratio:14.2f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def _inference_ratio(folder: Path, onnx_path: Path, repeats: int = 5) -> float:
    """Median time of one pass over the test split in onnxruntime / in PyTorch (eager, no grad)."""
    import statistics

    import onnxruntime as ort

    cfg = TrainConfig.load(folder / "config.yaml")
    splits = load_data(cfg)
    model = load_trained(folder, splits)
    x = splits.test.x
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_times, torch_times = [], []
    for _ in range(repeats):  # interleaved, so that drift hits both alike
        t = time.perf_counter()
        session.run(None, {"input": x.numpy()})
        ort_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.no_grad():
            model(x)
        torch_times.append(time.perf_counter() - t)
    return statistics.median(ort_times) / statistics.median(torch_times)


if __name__ == "__main__":
    sys.exit(main())
