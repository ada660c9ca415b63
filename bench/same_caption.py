"""same-caption-positives, measured: a domain whose captions repeat (class-style labels), trained with and
without the option for the same minutes, scored by zero-shot classification over the labels.

    python bench/same_caption.py --minutes 2 --seeds 0 1 2

The domain is the shapes demo (datasets/demo, generated if missing) with each image's captions replaced by
one label naming its set of colours (cues.csv: "shapes in green and orange", 93 labels over 5,000 images), so
a batch of 128 holds many images with the same caption: without the option those are false negatives of each
other. Each run is scripts/recipe.py's (a tokenizer from the labels, the demo's random towers, train.py for
--minutes); then classify.py --data on the valid images sorted into one folder per label, with the label itself
as the only prompt. Prints the accuracies side by side and one RESULT line (ours: with the option).
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys

from bench import _common
from scripts.make_demo_dataset import main as make_dataset
from scripts.recipe import run_recipe

SOURCE = os.path.join("datasets", "demo")
SETTINGS = {"off": ["--same-caption-positives", "false"], "on": ["--same-caption-positives", "true"]}


def label(cue):
    """The class-style caption of a set of colours ("green orange" -> "shapes in green and orange")."""
    return "shapes in " + " and ".join(cue.split())


def write_label_domain(source, out):
    """out/{train,valid}/captions.csv with one label per image (the images are source's, linked), and
    out/valid-classes/<label>/<image> for classify.py. -> (data folder, classes folder, label count)."""
    labels = set()
    for split in ("train", "valid"):
        folder = os.path.join(out, split)
        os.makedirs(folder, exist_ok=True)
        images = os.path.join(folder, "images")
        if not os.path.islink(images):
            os.symlink(os.path.abspath(os.path.join(source, split, "images")), images)
        with open(os.path.join(source, split, "cues.csv"), encoding="utf-8", newline="") as handle:
            rows = [(row["filename"], label(row["cue"])) for row in csv.DictReader(handle)]
        with open(os.path.join(folder, "captions.csv"), "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["filename", "caption"])
            writer.writerows(rows)
        labels.update(caption for _, caption in rows)
        if split == "valid":
            classes = os.path.join(out, "valid-classes")
            for filename, caption in rows:
                os.makedirs(os.path.join(classes, caption), exist_ok=True)
                link = os.path.join(classes, caption, filename)
                if not os.path.islink(link):
                    os.symlink(os.path.abspath(os.path.join(source, split, "images", filename)), link)
    return out, classes, len(labels)


def zero_shot_accuracy(model, classes, templates):
    done = subprocess.run([sys.executable, "classify.py", "--model-path", model, "--data", classes, "--templates",
                           templates, "--json", "true", "--quiet"], cwd=_common.ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"classify.py failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["accuracy"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="training minutes of every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default="bench-results/same-caption")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(SOURCE, "valid", "cues.csv")):
        assert make_dataset(["--out", SOURCE]) == 0
    data, classes, count = write_label_domain(SOURCE, os.path.join(args.out, "data"))
    templates = os.path.join(args.out, "templates.txt")
    with open(templates, "w", encoding="utf-8") as handle:
        handle.write("{}\n")  # the label is the caption trained on
    accuracy = {}
    for seed in args.seeds:
        for setting, overrides in SETTINGS.items():
            out = os.path.join(args.out, setting, f"seed-{seed}")
            run_recipe(data, out, minutes=args.minutes, seed=seed, train_overrides=overrides, overwrite=True,
                       quiet=True)
            accuracy.setdefault(setting, []).append(zero_shot_accuracy(os.path.join(out, "best.pt"), classes,
                                                                       templates))
            print(f"seed {seed}, same-caption-positives {setting}: zero-shot accuracy {accuracy[setting][-1]:.3f} "
                  f"({count} labels)", flush=True)

    def cell(values):
        return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")

    print(f"\n{args.minutes:g} min of training, seeds {' '.join(map(str, args.seeds))}: zero-shot accuracy over "
          f"{count} labels, off {cell(accuracy['off'])}, on {cell(accuracy['on'])}")
    _common.result("same_caption_zero_shot", statistics.mean(accuracy["on"]), statistics.mean(accuracy["off"]),
                   "higher", "zero-shot accuracy (same-caption-positives on vs off)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
