"""Training samples/s from webdataset shards vs from the same dataset as a folder, through the real train.py.

The demo recipe (configs/demo/train.yaml: ResNet18 + 2-layer RoBERTa, 64 px, batch 128, 2 persistent
workers) trains 2 epochs on the same generated images, once from the folder and once from shards made of it
by scripts/make_shards.py. The samples/s train.py reports for its last epoch are compared (goal >= 1.0).

    python bench/shard_training.py [--images 1024]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

from _common import ROOT, result


def run(*args):
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(args[:1])} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def samples_per_second(stdout):
    rates = re.findall(r"epoch \d+/\d+ .* (\d+) samples/s", stdout)
    if not rates:
        sys.exit("no samples/s in train.py's output")
    return float(rates[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        data = os.path.join(directory, "data")
        run("scripts/make_demo_dataset.py", "--out", data, "--train", str(args.images), "--valid", "100")
        run("scripts/make_shards.py", "--data", os.path.join(data, "train"), "--out", os.path.join(directory, "shards"),
            "--samples-per-shard", "128", "--quiet")
        shards = len([name for name in os.listdir(os.path.join(directory, "shards")) if name.endswith(".tar")])
        text = os.path.join(directory, "text")
        run("scripts/make_demo_text_tower.py", "--captions", os.path.join(data, "train", "captions.csv"), "--out", text)
        start = os.path.join(directory, "init.pt")
        run("init.py", "--config", "configs/demo/init.yaml", "--text-model", text, "--save-path", start)
        rates = {}
        for name, source in (("folder", os.path.join(data, "train")),
                             ("shards", os.path.join(directory, "shards", "{00000..%05d}.tar" % (shards - 1)))):
            out = os.path.join(directory, name)
            stdout = run("train.py", "--config", "configs/demo/train.yaml", "--load-path", start, "--train-data", source,
                         "--caption-key", "captions" if name == "shards" else "txt",
                         "--valid-data", os.path.join(data, "valid"), "--epochs", str(args.epochs),
                         "--best-path", os.path.join(out, "best.pt"), "--last-path", os.path.join(out, "last.pt"),
                         "--log-dir", os.path.join(out, "logs"))
            rates[name] = samples_per_second(stdout)
    print(f"demo recipe, {args.images} images ({shards} shards of 128), 2 workers, epoch {args.epochs}'s samples/s")
    print(f"{'source':<8} {'samples/s':>10}")
    for name, rate in rates.items():
        print(f"{name:<8} {rate:>10.1f}")
    result("shard_training", rates["shards"], rates["folder"], "higher", "samples/s")


if __name__ == "__main__":
    main()
