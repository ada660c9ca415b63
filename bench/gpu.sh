#!/usr/bin/env bash
# The prepared GPU check (one H100/H200, well under 8 minutes): every CUDA path of training PASS/FAIL, then
# RN50 + RoBERTa-base samples/s, memory, MFU, largest batches and open_clip side by side; a JSON report.
#   bash bench/gpu.sh [--out gpu-report.json]        rehearsal anywhere: bash bench/gpu.sh --device cpu --quick
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3). Wheels in .carry/wheels
# (bench/gpu_carry.sh) are installed into .carry/site first, for a python3 that lacks them (the GPU machine's).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if compgen -G ".carry/wheels/*.whl" > /dev/null; then
    "$PYTHON" -m pip install --disable-pip-version-check -q --no-deps --no-index --upgrade --target .carry/site \
        .carry/wheels/*.whl
    export PYTHONPATH="$PWD/.carry/site${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
# Every module the check runs, imported before any device time goes into it: a missing package stops here.
"$PYTHON" -c "import init, train, eval, bench.gpu_check, bench.gpu_step, training.step, scripts.make_demo_dataset" \
    || { echo "error: a module the check needs does not import with $PYTHON (see above)"; exit 2; }
"$PYTHON" -c "import open_clip" 2>/dev/null \
    || echo "note: open_clip does not import: its side-by-side step will SKIP (bash bench/gpu_carry.sh, carry .carry)"
timeout ${GPU_CHECK_TIMEOUT:-480} "$PYTHON" -m bench.gpu_check "$@"  # -m from the root: bench/ imports without an install
