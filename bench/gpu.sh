#!/usr/bin/env bash
# The prepared GPU check (one H100/H200, well under 8 minutes): every CUDA path of training PASS/FAIL, then
# RN50 + RoBERTa-base samples/s, memory, MFU, largest batches and open_clip side by side; a JSON report.
#   bash bench/gpu.sh [--out gpu-report.json]        rehearsal anywhere: bash bench/gpu.sh --device cpu --quick
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
timeout 480 "$PYTHON" -m bench.gpu_check "$@"  # -m from the root: bench/ imports without an install
