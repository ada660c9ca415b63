#!/usr/bin/env bash
# One GPU, under 10 minutes: RN50 + RoBERTa-base, batch 192, bf16 -> samples/s, peak memory, MFU,
# largest batch with and without the gradient cache. Usage: bash bench/gpu.sh [extra gpu_step.py flags]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'bf16', torch.cuda.is_bf16_supported())"
timeout 540 "$PY" bench/gpu_step.py "$@"
