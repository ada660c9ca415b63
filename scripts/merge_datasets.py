"""Merge dataset folders into one (the original project's training set: COCO 2017 train + all of Flickr30k).

    python scripts/merge_datasets.py --inputs datasets/coco-train datasets/flickr30k --out datasets/train

Each input's images go under a sub-folder named after it (coco-train/xxx.jpg), so names never collide.
Images are linked, not copied. Warns when an input shares images with --check-against (e.g. a test split).
"""
import argparse
import csv
import logging
import os
import sys

from scripts.dataset_writer import fail, item_logger, setup_script_logging, write_dataset

logger = logging.getLogger(__name__)


def read_rows(folder):
    path = os.path.join(folder, "captions.csv")
    if not os.path.isfile(path):
        fail(f"{path} not found")
    grouped = {}
    with open(path, encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("filename") and row.get("caption"):
                grouped.setdefault(row["filename"], []).append(row["caption"])
    return grouped


def real_name(folder, name):
    """The underlying file's base name (through links): how the same COCO image is recognised twice."""
    return os.path.basename(os.path.realpath(os.path.join(folder, "images", name)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--check-against", nargs="*", default=[], help="held-out splits that must not overlap")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    setup_script_logging()
    entries, seen = [], {}
    for folder in args.inputs:
        prefix = os.path.basename(os.path.normpath(folder))
        for name, captions in read_rows(folder).items():
            source = os.path.join(folder, "images", name)
            if not os.path.isfile(source):
                item_logger.warning(f"skipped {source}: file not found")
                continue
            entries.append((source, f"{prefix}/{name}", captions))
            seen[real_name(folder, name)] = f"{prefix}/{name}"
    for held_out in args.check_against:
        overlap = [name for name in read_rows(held_out) if real_name(held_out, name) in seen]
        if overlap:
            logger.warning(f"warning: {len(overlap)} images of {held_out} are also in the merged training set "
                           f"(e.g. {overlap[0]}): evaluating on {held_out} would leak")
    images, captions = write_dataset(args.out, entries, "link", args.overwrite)
    logger.info(f"wrote {args.out}: {images} images, {captions} captions from {len(args.inputs)} datasets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
