"""index.py images/s with 2 processes (torchrun) vs 1, on the same gallery, folder and shards.

The demo model (configs/demo/init.yaml: ResNet18 + 2-layer RoBERTa, 64 px, untrained: speed does not depend
on the weights) embeds generated demo images and their 5 captions each. index.py reports the embedding
phase's images/s (the slowest process's time, merge excluded); the merge's share of the wall time is shown.

    python bench/index_build.py [--images 3000]
"""
import argparse
import os
import re
import sys
import tempfile
import time

from bench._common import demo_dataset_shards_and_model, result, run_script


def images_per_second(stdout):
    rate = re.findall(r"embedding took [\d.]+ s, ([\d.]+) images/s", stdout)
    if not rate:
        sys.exit(f"no images/s in index.py's output:\n{stdout[-2000:]}")
    return float(rate[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        data, pattern, model = demo_dataset_shards_and_model(directory, args.images, 10, 250)
        sources = {"folder": (os.path.join(data, "train"), "txt"), "shards": (pattern, "captions")}
        rows = []
        for name, (source, caption_key) in sources.items():
            for processes in (1, 2):
                out = os.path.join(directory, f"index-{name}-{processes}")
                started = time.perf_counter()
                stdout = run_script("index.py", "--model-path", model, "--data", source, "--caption-key", caption_key,
                                   "--out", out, "--batch-size", "64", "--device", "cpu", torchrun=processes == 2)
                wall = time.perf_counter() - started
                rows.append((name, processes, images_per_second(stdout), wall))
    print(f"index.py, demo model, {args.images} images x 5 captions, batch 64, CPU ({os.cpu_count()} cores)")
    print(f"{'source':<8} {'processes':>9} {'images/s':>9} {'wall s':>7}")
    for name, processes, rate, wall in rows:
        print(f"{name:<8} {processes:>9} {rate:>9.1f} {wall:>7.1f}")
    rate = {(name, processes): value for name, processes, value, _ in rows}
    for name in sources:
        result(f"index_build_{name}_2_vs_1_processes", rate[(name, 2)], rate[(name, 1)], "higher", "images/s")


if __name__ == "__main__":
    main()
