"""Training input pipeline images/s: ours vs open_clip's image_transform(..., is_train=True).

Both decode the same COCO-sized JPEGs (640x480, generated) and produce normalised 224x224 float tensors
with a random resized crop (scale 0.9-1.0, open_clip's default). Ours decodes at reduced size (PIL draft),
then crops and resizes once on uint8 tensors; open_clip decodes full size and crops/resizes in PIL.
Single process, so the ratio is per-core throughput.

    python bench/input_pipeline.py [--images 120] [--size 224]
"""
import argparse
import os
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from bench._common import result
from data.image_file import open_image_rgb
from data.transforms import train_transform


def make_jpegs(directory, count):
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        # Photo-like content: a smooth colour field plus fine noise, so JPEG decoding does real work.
        field = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((640, 480), Image.BICUBIC)
        noise = rng.normal(0, 12, (480, 640, 3))
        pixels = np.clip(np.asarray(field, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
        path = os.path.join(directory, f"{index:04d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def rate(load, paths, rounds=3):
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for path in paths:
            tensor = load(path)
        best = min(best, time.perf_counter() - started)
    assert tensor.dtype == torch.float32
    return len(paths) / best, tensor


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from open_clip.transform import image_transform

    theirs = image_transform(args.size, is_train=True)
    ours = train_transform(args.size, 0.9, flip=False, color=False)
    with tempfile.TemporaryDirectory() as directory:
        paths = make_jpegs(directory, args.images)
        torch.manual_seed(0)
        their_rate, their_tensor = rate(lambda p: theirs(Image.open(p)), paths)
        our_rate, our_tensor = rate(lambda p: ours(open_image_rgb(p, draft_size=args.size)), paths)
    assert our_tensor.shape == their_tensor.shape == (3, args.size, args.size)
    print(f"{args.images} JPEGs 640x480 -> {args.size}x{args.size} float32, random resized crop 0.9-1.0, 1 thread")
    print(f"{'pipeline':<12} {'images/s':>9}")
    print(f"{'ours':<12} {our_rate:>9.1f}")
    print(f"{'open_clip':<12} {their_rate:>9.1f}")
    result("input_pipeline", our_rate, their_rate, "higher", "images/s")


if __name__ == "__main__":
    main()
