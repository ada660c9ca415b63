#!/usr/bin/env bash
# Rehearse bench/gpu.sh on the CPU in the GPU machine's environment: a fresh venv holding only the packages
# that machine's python3 has among this project's requirements (all but faiss-cpu, fastapi, uvicorn,
# python-multipart, open_clip_torch, webdataset and braceexpand; at this project's pinned versions) plus the
# carried wheels. An import of anything else fails here, not in device time.
#   bash bench/gpu_rehearsal.sh        (VENV=... to place the venv; it is reused when present)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-/tmp/contrastive-gpu-rehearsal}
DEVICE_LACKS='faiss-cpu|fastapi|uvicorn|python-multipart|open_clip_torch|webdataset|braceexpand'
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
grep -E "^[A-Za-z]" requirements.txt | grep -v -E "^($DEVICE_LACKS)==" | cut -d' ' -f1 > "$VENV/device-packages.txt"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$VENV/device-packages.txt"
PIP="$VENV/bin/python -m pip" bash bench/gpu_carry.sh
mkdir -p bench-results
PYTHON="$VENV/bin/python" bash bench/gpu.sh --device cpu --quick --out bench-results/gpu-rehearsal.json
