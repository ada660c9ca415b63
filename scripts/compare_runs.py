"""Per-epoch R@1 of training runs side by side, with cumulative training minutes (from metrics.jsonl).

    python scripts/compare_runs.py checkpoints/demo/logs checkpoints/demo-pretrained/logs
"""
import argparse
import json
import os
import sys


def load(log_dir, batch):
    """[(cumulative training minutes, i2t R@1, t2i R@1)] per epoch."""
    path = os.path.join(log_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        print(f"error: {path} not found", file=sys.stderr)
        raise SystemExit(2)
    rows, total, previous_step = [], 0.0, 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            item = json.loads(line)
            # train_seconds is recorded by current runs; older ones give steps x batch / throughput
            total += item.get("train_seconds") or (item["step"] - previous_step) * batch / item["samples_per_s"]
            previous_step = item["step"]
            rows.append((total / 60, item["i2t_r1"], item["t2i_r1"]))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log_dirs", nargs="+")
    parser.add_argument("--batch", type=int, default=128, help="batch size, for logs without train_seconds")
    args = parser.parse_args(argv)
    runs = [load(directory, args.batch) for directory in args.log_dirs]
    print("| epoch | " + " | ".join(f"{d}: train min / i2t R@1 / t2i R@1" for d in args.log_dirs) + " |")
    print("| --- |" + " --- |" * len(runs))
    for epoch in range(max(len(rows) for rows in runs)):
        cells = [f"{r[epoch][0]:.1f} / {r[epoch][1]:.3f} / {r[epoch][2]:.3f}" if epoch < len(r) else "" for r in runs]
        print(f"| {epoch + 1} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
