#!/usr/bin/env bash
# Build .carry/wheels: the wheels bench/gpu.sh needs that the GPU machine's python3 lacks (it has torch,
# torchvision, transformers, timm, pyyaml, pillow, tqdm, tensorboard, safetensors, onnx, regex, pyarrow; no
# network). Wheels for the device's interpreter (CPython 3.12, x86-64), whatever this machine's Python is,
# pinned as in requirements.txt; bench/gpu.sh installs them into .carry/site there, leaving its python3 as it is.
#   bash bench/gpu_carry.sh            then: device run, carry [".carry"] (README, "On a GPU")
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-python3 -m pip}
rm -rf .carry/wheels && mkdir -p .carry/wheels
# open_clip_torch: the side-by-side step; ftfy + wcwidth: open_clip's tokenizer imports ftfy at import time
$PIP download --disable-pip-version-check -q --no-deps --only-binary=:all: -d .carry/wheels \
    --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 \
    open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
ls .carry/wheels
echo "carry: $(du -sk .carry/wheels | cut -f1) KiB in .carry/wheels (the device takes 64 MiB with the tree)"
