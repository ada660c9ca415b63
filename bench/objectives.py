"""Every loss and batching option x {shapes demo, glyphs} x seeds, each trained for the same minutes of
training (time-budget) by the same recipe (scripts/recipe.py); prints R@1/5/10 both ways as mean ± spread over
the seeds (the spread is the sample standard deviation), as the README's table.

    python bench/objectives.py --minutes 1 --seeds 0 1 2 --out bench-results/objectives
    python bench/objectives.py --options infonce --text-ngram 9     # every run with init.py's word-order block

Each run: a tokenizer from the domain's training captions, init (the seed's random towers), train.py with the
option for --minutes, eval.py on best.pt. Finished runs (OUT/<domain>/<option>/seed-N/recall.json) are reused,
so an interrupted comparison continues where it stopped; --fresh redoes them.
"""
import argparse
import json
import os
import shutil
import statistics
import sys

from bench import _common  # noqa: F401  (sets HF_HUB_OFFLINE and TOKENIZERS_PARALLELISM)
from scripts.make_demo_dataset import main as make_dataset
from scripts.recipe import run_recipe

OPTIONS = {  # name -> train.py overrides on top of configs/recipe/train.yaml (the demo recipe)
    "infonce": [],
    "siglip": ["--loss", "siglip"],
    "multi-positive, 2 captions per image": ["--captions-per-image", "2"],
    "HN-NCE, beta 0.5": ["--hard-negative-beta", "0.5"],
    "max-violation": ["--loss", "max-violation"],
    "hard-negative batches, groups of 8": ["--batching", "hard-negatives", "--hard-negative-group", "8"],
    "compositional negatives": ["--compositional-negatives", "true"],
}
COLUMNS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")


def domains(root, glyph_images):
    """{name: dataset folder}, generating what is missing: the shapes demo (datasets/demo, as make demo
    writes it) and a glyph set of ``glyph_images`` training images."""
    shapes = os.path.join("datasets", "demo")
    if not os.path.isfile(os.path.join(shapes, "valid", "captions.csv")):
        assert make_dataset(["--out", shapes]) == 0
    glyphs = os.path.join(root, "datasets", f"glyphs-{glyph_images}")
    if not os.path.isfile(os.path.join(glyphs, "valid", "captions.csv")):
        assert make_dataset(["--kind", "glyphs", "--seed", "1", "--out", glyphs, "--train", str(glyph_images),
                             "--valid", str(max(200, glyph_images // 5)), "--overwrite"]) == 0
    return {"shapes demo": shapes, "glyphs": glyphs}


def applies(option, data):
    return option != "compositional negatives" or os.path.isfile(os.path.join(data, "train", "negatives.csv"))


def cell(values):
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="training minutes of every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--options", nargs="+", choices=sorted(OPTIONS), help="a subset (default: all)")
    parser.add_argument("--glyph-images", type=int, default=2000)
    parser.add_argument("--domains", nargs="+", choices=("shapes demo", "glyphs"), help="a subset (default: both)")
    parser.add_argument("--out", default="bench-results/objectives")
    parser.add_argument("--fresh", action="store_true", help="redo finished runs")
    parser.add_argument("--text-ngram", type=int, default=0, help="init.py's text-ngram for every run (the "
                        "recipe's default: 0); its runs go to OUT/<domain>/<option>-ngram-N/")
    args = parser.parse_args(argv)
    options = args.options or list(OPTIONS)
    ngram = ["--text-ngram", str(args.text_ngram)] if args.text_ngram else []
    results = {}
    for domain, data in domains(args.out, args.glyph_images).items():
        if args.domains and domain not in args.domains:
            continue
        for option in options:
            if not applies(option, data):
                continue
            for seed in args.seeds:
                name = option.replace(" ", "-").replace(",", "") + (f"-ngram-{args.text_ngram}"
                                                                    if args.text_ngram else "")
                out = os.path.join(args.out, domain.replace(" ", "-"), name, f"seed-{seed}")
                done = os.path.join(out, "recall.json")
                if args.fresh or not os.path.isfile(done):
                    shutil.rmtree(out, ignore_errors=True)
                    print(f"{domain} / {option} / seed {seed}: training {args.minutes:g} min", flush=True)
                    run_recipe(data, out, minutes=args.minutes, seed=seed, train_overrides=OPTIONS[option],
                               overwrite=True, quiet=True, init_overrides=ngram)
                with open(done, encoding="utf-8") as handle:
                    recall = json.load(handle)
                results.setdefault((domain, option), []).append(recall)
                print(f"  {domain} / {option} / seed {seed}: R@1 i2t {recall['i2t_r1']:.3f} "
                      f"t2i {recall['t2i_r1']:.3f}", flush=True)
    print(f"\n{len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}), {args.minutes:g} min of training each "
          f"(python bench/objectives.py --minutes {args.minutes:g}{' '.join([''] + ngram)}); mean ± standard "
          f"deviation over the seeds\n")
    print("| domain | option | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@1 | t2i R@5 | t2i R@10 | compositional |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (domain, option), runs in results.items():
        composed = [run["compositional"] for run in runs if "compositional" in run]
        print(f"| {domain} | {option} | " + " | ".join(cell([run[c] for run in runs]) for c in COLUMNS)
              + f" | {cell(composed) if composed else '—'} |")
    cues = {domain: runs[0] for (domain, _), runs in results.items()}
    for domain, run in cues.items():
        if "cue-image_to_text_R@1" in run:
            print(f"\n{domain}: the easy cue alone reaches R@1 i2t {run['cue-image_to_text_R@1']:.3f}, "
                  f"t2i {run['cue-text_to_image_R@1']:.3f}")
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump({f"{domain} / {option}": runs for (domain, option), runs in results.items()}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
