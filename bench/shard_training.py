"""Training samples/s from webdataset shards vs from the same dataset as a folder, through the real train.py.

The demo recipe (configs/demo/train.yaml: ResNet18 + 2-layer RoBERTa, 64 px, batch 128, 2 persistent
workers) trains 2 epochs on the same generated images, from the folder and from shards made of it by
scripts/make_shards.py, in turn for ``--rounds`` rounds. Each source's best last-epoch samples/s (as train.py
reports it) are compared (goal >= 1.0): one run of 8 steps an epoch swings by +-20% on a shared 2-core machine.

    python bench/shard_training.py [--images 1024] [--rounds 2]
"""
import argparse
import os
import re
import sys
import tempfile

from bench._common import demo_dataset_shards_and_model, result, run_script


def samples_per_second(stdout):
    rates = re.findall(r"epoch \d+/\d+ .* (\d+) samples/s", stdout)
    if not rates:
        sys.exit("no samples/s in train.py's output")
    return float(rates[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        data, pattern, start = demo_dataset_shards_and_model(directory, args.images, 100, 128)
        rates = {"folder": 0.0, "shards": 0.0}
        for name, source in (("folder", os.path.join(data, "train")), ("shards", pattern)) * args.rounds:
            out = os.path.join(directory, name)
            stdout = run_script("train.py", "--config", "configs/demo/train.yaml", "--load-path", start, "--train-data", source,
                         "--caption-key", "captions" if name == "shards" else "txt",
                         "--valid-data", os.path.join(data, "valid"), "--epochs", str(args.epochs),
                         "--best-path", os.path.join(out, "best.pt"), "--last-path", os.path.join(out, "last.pt"),
                         "--log-dir", os.path.join(out, "logs"), "--overwrite", "true")
            rates[name] = max(rates[name], samples_per_second(stdout))
    print(f"demo recipe, {args.images} images (shards of 128), 2 workers, epoch {args.epochs}'s samples/s, "
          f"best of {args.rounds} rounds")
    print(f"{'source':<8} {'samples/s':>10}")
    for name, rate in rates.items():
        print(f"{name:<8} {rate:>10.1f}")
    result("shard_training", rates["shards"], rates["folder"], "higher", "samples/s")


if __name__ == "__main__":
    main()
