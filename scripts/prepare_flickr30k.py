"""Flickr30k -> the datasets format (images/ + captions.csv).

    # the widely used Kaggle copy: results.csv is "image_name| comment_number| comment"
    python scripts/prepare_flickr30k.py --results flickr30k_images/results.csv --images flickr30k_images/flickr30k_images --out datasets/flickr30k
    # the Karpathy split (1k test images)
    python scripts/prepare_flickr30k.py --karpathy dataset_flickr30k.json --split test --images DIR --out datasets/flickr-test

The Kaggle file has stray spaces around fields and one known row whose last pipe is missing
("2199200615.jpg| 4 A dog runs ..."); both are repaired, anything else unparseable is reported and skipped.
"""
import argparse
import os
import re
import sys

from scripts.dataset_writer import clean_caption, fail, item_logger, setup_script_logging, write_prepared
from scripts.prepare_coco import karpathy_entries, load_json

_MISSING_PIPE = re.compile(r"^\s*(\d+)\s+(.+)$")


def parse_results(path):
    """{file name: [captions]} from the Kaggle results.csv, in file order."""
    captions, bad = {}, 0
    try:
        with open(path, encoding="utf-8-sig") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        fail(f"cannot read {path}: {error}")
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) == 2:  # "name| 4 caption": the pipe after comment_number is missing
            match = _MISSING_PIPE.match(parts[1])
            parts = [parts[0], match.group(1), match.group(2)] if match else parts
        if len(parts) < 3:
            bad += 1
            item_logger.warning(f"{path}:{number}: skipped: cannot split into image_name| comment_number| comment")
            continue
        name, caption = parts[0].strip(), clean_caption("|".join(parts[2:]))
        if not name or not caption:
            bad += 1
            item_logger.warning(f"{path}:{number}: skipped: empty image name or caption")
            continue
        captions.setdefault(name, []).append(caption)
    return captions, bad


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", help="Kaggle results.csv")
    parser.add_argument("--karpathy", help="Karpathy's dataset_flickr30k.json (instead of --results)")
    parser.add_argument("--split", choices=("train", "val", "test"))
    parser.add_argument("--images", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--copy", action="store_true", help="copy images instead of linking them")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    setup_script_logging(args.quiet)
    if bool(args.results) == bool(args.karpathy):
        parser.error("give exactly one of --results or --karpathy")
    if args.karpathy and not args.split:
        parser.error("--karpathy needs --split")
    if not os.path.isdir(args.images):
        parser.error(f"--images {args.images} is not a folder")
    if args.results:
        captions, bad = parse_results(args.results)
        entries, missing = [], 0
        for name, texts in captions.items():
            path = os.path.join(args.images, name)
            if os.path.isfile(path):
                entries.append((path, name, texts))
            else:
                missing += 1
                item_logger.warning(f"skipped {name}: file not found in {args.images}")
    else:
        entries, missing = karpathy_entries(load_json(args.karpathy), args.split, args.images)
        bad = 0
    return write_prepared(args.out, entries, args.copy, args.overwrite,
                          f"{missing} without a file, {bad} unparseable rows")


if __name__ == "__main__":
    sys.exit(main())
