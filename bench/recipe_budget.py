"""Recall against training budget for the one-command recipe (scripts/recipe.py), on generated sets of
several sizes: one schedule fitted to minutes serves a thousand images as well as 5,000.

    python bench/recipe_budget.py --minutes 1 2 4 --images 1000 5000 --out bench-results/recipe-budget

Writes OUT/recipe-budget.png (R@1 both ways against minutes, a line per set size) and prints the table.
Finished runs (OUT/<images>/<minutes>min/recall.json) are reused.
"""
import argparse
import json
import os
import sys

from bench import _common  # noqa: F401  (sets HF_HUB_OFFLINE and TOKENIZERS_PARALLELISM)
from scripts.make_demo_dataset import main as make_dataset
from scripts.recipe import run_recipe


def dataset(root, kind, images):
    """A generated set of ``images`` training images (and a fifth as many, at least 200, to validate)."""
    folder = os.path.join(root, "datasets", f"{kind}-{images}")
    if not os.path.isfile(os.path.join(folder, "valid", "captions.csv")):
        assert make_dataset(["--kind", kind, "--seed", "1", "--out", folder, "--train", str(images),
                             "--valid", str(max(200, images // 5)), "--overwrite"]) == 0
    return folder


def plot(rows, path, kind):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for axis, key, title in ((axes[0], "i2t_r1", "image → text R@1"), (axes[1], "t2i_r1", "text → image R@1")):
        for images in sorted({row["images"] for row in rows}):
            points = sorted((row["minutes"], row[key]) for row in rows if row["images"] == images)
            axis.plot(*zip(*points), marker="o", label=f"{images} training images")
        axis.set_title(title)
        axis.set_xlabel("training minutes (time-budget), 2-core CPU")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("R@1")
    axes[0].legend()
    figure.suptitle(f"make recipe on generated {kind}: recall against budget")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--kind", choices=("shapes", "glyphs"), default="glyphs")
    parser.add_argument("--out", default="bench-results/recipe-budget")
    args = parser.parse_args(argv)
    rows = []
    for images in args.images:
        data = dataset(args.out, args.kind, images)
        for minutes in args.minutes:
            out = os.path.join(args.out, str(images), f"{minutes:g}min")
            if not os.path.isfile(os.path.join(out, "recall.json")):
                print(f"{images} images, {minutes:g} min", flush=True)
                run_recipe(data, out, minutes=minutes, overwrite=True, quiet=True)
            with open(os.path.join(out, "recall.json"), encoding="utf-8") as handle:
                recall = json.load(handle)
            # recall.json's own "images" counts the valid split: the training size goes after it
            rows.append({**recall, "valid images": recall["images"], "images": images, "minutes": minutes})
    print("\n| training / valid images | minutes | i2t R@1 | t2i R@1 | i2t R@10 | t2i R@10 | easy cue alone, R@1 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        cue = row.get("cue-image_to_text_R@1")
        print(f"| {row['images']} / {row['valid images']} | {row['minutes']:g} | {row['i2t_r1']:.3f} | {row['t2i_r1']:.3f} | "
              f"{row['i2t_r10']:.3f} | {row['t2i_r10']:.3f} | {f'{cue:.3f}' if cue is not None else '—'} |")
    path = os.path.join(args.out, "recipe-budget.png")
    plot(rows, path, args.kind)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
