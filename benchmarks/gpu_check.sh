#!/usr/bin/env bash
# The GPU check of the fast training step, in one command (under 8 minutes on one H100/H200).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # default OUT_DIR: benchmarks/results/gpu
#
# Needs only torch with CUDA, numpy, scikit-learn, pyyaml and tqdm (no Ray, Optuna or plotly),
# and no network. It runs, each under its own time limit so that a slow part still leaves the
# others' results:
#   1. bench_step.py on CUDA, resnet20 batch 128 at W2A2: fp, qat and speq steps with compile
#      off, kernels and on, interleaved; wall ms, GPU kernel ms and kernels per step;
#   2. a short `speq-search train --device cuda` (compile auto) on the full Fashion-MNIST when
#      its files are in DATA_DIR (default .gpu: FashionMNIST/raw/*.gz from `make data` + gzip),
#      else on digits.
# DEVICE=cpu runs the same commands on a CPU, tiny, to test this script without a GPU
# (PYTHON=.venv/bin/python picks the interpreter; default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
DEVICE=${DEVICE:-cuda}
DATA_DIR=${DATA_DIR:-.gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1

if [ "$DEVICE" = cuda ]; then
    nvidia-smi -L || true
    ROUNDS=20; STEP_LIMIT=330; TRAIN_LIMIT=120
    TRAIN_ARGS=(--epochs 2 --fp-epochs 2 --batch-size 256)
else
    ROUNDS=2; STEP_LIMIT=600; TRAIN_LIMIT=300
    TRAIN_ARGS=(--epochs 1 --fp-epochs 1 --train-size 512)
fi
$PY -c "import torch, sys; sys.exit(0 if '$DEVICE' == 'cpu' or torch.cuda.is_available() else 'no CUDA device')" || exit 1

echo "== step benchmark ($DEVICE)"
timeout "$STEP_LIMIT" $PY benchmarks/bench_step.py --device "$DEVICE" --rounds "$ROUNDS" \
    --compile off kernels on --models resnet20 | tee "$OUT/step.jsonl"
echo "step benchmark exit code ${PIPESTATUS[0]}"

echo "== train ($DEVICE)"
if ls "$DATA_DIR"/FashionMNIST/raw/train-images-idx3-ubyte* >/dev/null 2>&1; then
    DATA=(--dataset fashion-mnist --data-dir "$DATA_DIR" --model resnet20)
else
    echo "no Fashion-MNIST in $DATA_DIR: training on digits"
    DATA=(--dataset digits --model cnn-small)
fi
rm -rf "$OUT/train"
timeout "$TRAIN_LIMIT" $PY -m speq_search.cli train --device "$DEVICE" "${DATA[@]}" "${TRAIN_ARGS[@]}" \
    --compile auto --fp-cache-dir "$OUT/fp-cache" --out "$OUT/train" --quiet 2>&1 | tail -n 8
echo "train exit code ${PIPESTATUS[0]}"
[ -f "$OUT/train/metrics.json" ] && cat "$OUT/train/metrics.json"
exit 0
