"""A new domain from scratch in one command: a tokenizer trained on its own captions, init, train, eval.

    python scripts/recipe.py --data datasets/mine --out checkpoints/mine --minutes 5
    make recipe DATA=datasets/mine MINUTES=5
    python scripts/recipe.py --train-data "shards/{00000..00099}.tar" --valid-data shards/valid.tar \
        --caption-key all_captions --out checkpoints/mine

DATA holds train/ and valid/, each in any layout train.py reads (images/ + captions.csv, img2dataset's files or
parquet output); --train-data and --valid-data name the two sources directly instead (webdataset shards
too), with --caption-key as train.py's. The run's length is minutes of
training (time-budget) or samples seen (--samples, train-samples), never epochs, so the same command fits a
thousand images as well as 5,000. Any further train.py override follows '--', e.g. '-- --loss siglip'.
Writes OUT/text-tower, OUT/pretrain.pt, OUT/best.pt, OUT/last.pt, OUT/logs and OUT/recall.json.
"""
import argparse
import json
import os
import re
import subprocess
import sys

from data.shard_source import URL_SCHEMES
from scripts.make_demo_text_tower import read_captions
from utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CJK = re.compile(r"[\u3400-\u9fff]")


def local(value):
    """A data value the steps can read from the project root: local paths made absolute (each '::' part)."""
    return "::".join(part if part.startswith(URL_SCHEMES) else os.path.abspath(part) for part in value.split("::"))


def caption_language(captions):
    """zh when most captions hold CJK characters (a character-level tokenizer then), else en (byte-level BPE)."""
    chinese = sum(1 for caption in captions if CJK.search(caption))
    return "zh" if chinese * 2 > len(captions) else "en"


def recipe_steps(train_data, valid_data, out, minutes=None, samples=None, lang="auto", seed=0, train_overrides=(),
                 caption_key="txt", init_overrides=()):
    """The commands of the recipe, in order: [(name, argv for the Python interpreter)]."""
    if lang == "auto":
        lang = caption_language(read_captions(train_data, caption_key, limit=10_000))
    tower, pretrain = os.path.join(out, "text-tower"), os.path.join(out, "pretrain.pt")
    length = (["--train-samples", str(samples), "--time-budget", "null"] if samples
              else ["--time-budget", str(minutes)] if minutes else [])
    return [
        ("tokenizer", ["scripts/make_demo_text_tower.py", "--data", train_data, "--caption-key", caption_key,
                       "--out", tower, "--lang", lang]),
        ("init", ["init.py", "--config", "configs/recipe/init.yaml", "--text-model", tower, "--save-path", pretrain,
                  "--seed", str(seed), "--overwrite", "true", *init_overrides]),
        ("train", ["train.py", "--config", "configs/recipe/train.yaml", "--load-path", pretrain,
                   "--train-data", train_data, "--valid-data", valid_data, "--caption-key", caption_key,
                   "--best-path", os.path.join(out, "best.pt"), "--last-path", os.path.join(out, "last.pt"),
                   "--log-dir", os.path.join(out, "logs"), "--seed", str(seed), "--overwrite", "true",
                   *length, *train_overrides]),
        ("eval", ["eval.py", "--config", "configs/recipe/eval.yaml", "--model-path", os.path.join(out, "best.pt"),
                  "--valid-data", valid_data, "--caption-key", caption_key,
                  "--output", os.path.join(out, "recall.json")]),
    ]


def problem_with(data, out, overwrite):
    """A sentence saying why the recipe cannot start, or None. ``data``: the --data folder, or None."""
    for split in ("train", "valid") if data else ():
        if not os.path.exists(os.path.join(data, split)):
            return (f"{os.path.join(data, split)} not found: DATA needs train/ and valid/, each with images/ and "
                    f"captions.csv (filename,caption) or in another layout train.py reads; see docs/data.md")
    if os.path.exists(os.path.join(out, "best.pt")) and not overwrite:
        return f"{out} holds an earlier run (best.pt); pass --overwrite to replace it, or choose another --out"
    return None


def run_recipe(data, out, minutes=None, samples=None, lang="auto", seed=0, train_overrides=(), overwrite=False,
               quiet=False, train_data=None, valid_data=None, caption_key="txt", init_overrides=()):
    """Run every step; returns eval.py's recall dict, or raises SystemExit with the failing step's code.
    ``data``: a folder with train/ and valid/, or None with ``train_data`` and ``valid_data`` (any sources)."""
    out = os.path.abspath(out)  # the steps run in the project root
    if data:
        data = os.path.abspath(data)
        train_data, valid_data = os.path.join(data, "train"), os.path.join(data, "valid")
    problem = problem_with(data, out, overwrite)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    os.makedirs(out, exist_ok=True)
    try:
        steps = recipe_steps(local(train_data), local(valid_data), out, minutes, samples, lang, seed,
                             train_overrides, caption_key, init_overrides)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    for name, argv in steps:
        if not quiet:
            print(f"== recipe: {name}: python {' '.join(argv)}", flush=True)
        result = subprocess.run([sys.executable, *argv], cwd=ROOT,
                                stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.PIPE, text=True)
        if result.stderr and not quiet:
            sys.stderr.write(result.stderr)
        if result.returncode:
            if quiet:
                sys.stderr.write(result.stderr[-3000:])
            print(f"error: the recipe's {name} step failed (exit {result.returncode})", file=sys.stderr)
            raise SystemExit(result.returncode)
    with open(os.path.join(out, "recall.json"), encoding="utf-8") as handle:
        return json.load(handle)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sources = parser.add_mutually_exclusive_group(required=True)
    sources.add_argument("--data", help="dataset folder with train/ and valid/")
    sources.add_argument("--train-data", help="training data, any source train.py takes (with --valid-data)")
    parser.add_argument("--valid-data", help="validation data, with --train-data")
    parser.add_argument("--caption-key", default="txt", help="as train.py's caption-key")
    parser.add_argument("--out", help="output folder (default: checkpoints/<name of DATA>)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="minutes of training (default: configs/recipe/train.yaml's "
                                                      "time-budget, 5)")
    length.add_argument("--samples", type=int, help="samples seen instead of minutes")
    parser.add_argument("--lang", choices=("auto", "en", "zh"), default="auto",
                        help="caption language: auto decides from the training captions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    args = parser.parse_args(argv)
    if bool(args.train_data) != bool(args.valid_data):
        parser.error("--train-data and --valid-data go together (or give --data)")
    if (args.minutes is not None and args.minutes <= 0) or (args.samples is not None and args.samples < 2):
        parser.error("--minutes must be > 0 and --samples at least 2")
    if not args.out and not args.data:
        parser.error("--out is needed with --train-data")
    out = args.out or os.path.join("checkpoints", os.path.basename(os.path.normpath(args.data)))
    recall = run_recipe(args.data, out, args.minutes, args.samples, args.lang, args.seed, overrides,
                        args.overwrite, train_data=args.train_data, valid_data=args.valid_data,
                        caption_key=args.caption_key)
    print(f"recipe done: {out}/best.pt; R@1 image→text {recall['i2t_r1']:.3f}, text→image {recall['t2i_r1']:.3f} "
          f"({out}/recall.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
