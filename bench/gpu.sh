#!/usr/bin/env bash
# Every GPU measurement and check of the project, in one run of about 8 minutes on an
# H100/H200-class GPU (the `device` tool lends one to some sessions for 15 minutes in all):
#   bash bench/gpu.sh > gpu.txt 2>&1
# Paste the figures into src/mtm/data/throughput.csv (source=measured, the GPU, the date).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
echo "== CUDA tests (fp32/bf16 parity, training, stacking)"
timeout 180 "$PY" -m pytest -q tests/test_cuda.py -p no:cacheprovider
echo "== one model against K stacked, paper size, bf16 (the trainer's settings of config/paper.yaml)"
for backbone in ndt1 ndt2; do
  timeout 120 "$PY" bench/bench_stack.py --config config/paper.yaml --backbone "$backbone" --model paper \
    --units 668 --trials 256 --rounds 3 --device cuda
done
echo "== single-model throughput at paper size"
timeout 120 "$PY" bench/bench_ndt2.py --rounds 2
