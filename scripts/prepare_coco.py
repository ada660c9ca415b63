"""COCO captions -> the datasets format (images/ + captions.csv).

    # every caption of COCO 2017 train / the original project's validation protocol (5,000 images, 1 caption each)
    python scripts/prepare_coco.py --captions annotations/captions_train2017.json --images train2017 --out datasets/coco-train
    python scripts/prepare_coco.py --captions annotations/captions_val2017.json --images val2017 --out datasets/valid --one-caption
    # the Karpathy split used by published CLIP numbers (5k test images, ~25k captions)
    python scripts/prepare_coco.py --karpathy dataset_coco.json --split test --images COCO_IMAGES --out datasets/coco-test

With --karpathy, --images may hold the 2014 folders (train2014/, val2014/) or the 2017 files: a 2014 name
COCO_val2014_000000391895.jpg is also looked up as 000000391895.jpg.
"""
import argparse
import json
import logging
import os
import sys

from scripts.dataset_writer import clean_caption, fail, item_logger, setup_script_logging, write_prepared

logger = logging.getLogger(__name__)

KARPATHY_SPLITS = ("train", "restval", "val", "test")


def load_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        fail(f"cannot read {path}: {error}")


def from_coco_json(data, images_dir):
    """[(path, file name, captions)] from a COCO captions_*.json; images without a file or captions skipped."""
    captions = {}
    for annotation in data.get("annotations", []):
        text = clean_caption(annotation.get("caption", ""))
        if text:
            captions.setdefault(annotation["image_id"], []).append(text)
    entries, missing, uncaptioned = [], 0, 0
    for image in sorted(data.get("images", []), key=lambda item: item["file_name"]):
        path = os.path.join(images_dir, image["file_name"])
        if image["id"] not in captions:
            uncaptioned += 1
            item_logger.warning(f"skipped {image['file_name']}: no captions")
        elif not os.path.isfile(path):
            missing += 1
            item_logger.warning(f"skipped {image['file_name']}: file not found in {images_dir}")
        else:
            entries.append((path, image["file_name"], captions[image["id"]]))
    return entries, missing, uncaptioned


def karpathy_entries(data, split, images_dir):
    """[(path, file name, captions)] for one Karpathy split ("train" also admits nothing else)."""
    entries, missing = [], 0
    for image in data.get("images", []):
        if image.get("split") != split:
            continue
        name = image["filename"]
        candidates = [os.path.join(images_dir, image.get("filepath", ""), name), os.path.join(images_dir, name)]
        if "cocoid" in image:
            candidates.append(os.path.join(images_dir, f"{image['cocoid']:012d}.jpg"))
        path = next((c for c in candidates if os.path.isfile(c)), None)
        texts = [clean_caption(s.get("raw", "")) for s in image.get("sentences", [])]
        texts = [t for t in texts if t]
        if path is None:
            missing += 1
            item_logger.warning(f"skipped {name}: file not found in {images_dir}")
        elif not texts:
            item_logger.warning(f"skipped {name}: no captions")
        else:
            entries.append((path, os.path.basename(path), texts))
    return entries, missing


def karpathy_held_out_ids(path):
    """COCO ids of the Karpathy val and test images."""
    return {image["cocoid"] for image in load_json(path).get("images", []) if image.get("split") in ("val", "test")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", help="COCO captions_{train,val}2017.json")
    parser.add_argument("--karpathy", help="Karpathy's dataset_coco.json (instead of --captions)")
    parser.add_argument("--split", choices=KARPATHY_SPLITS, help="Karpathy split (with --karpathy)")
    parser.add_argument("--images", required=True, help="folder with the COCO images")
    parser.add_argument("--out", required=True, help="output dataset folder")
    parser.add_argument("--one-caption", action="store_true", help="keep the first caption per image")
    parser.add_argument("--exclude-karpathy", metavar="DATASET_COCO_JSON",
                        help="with --captions: drop the Karpathy val/test images (avoids test leakage)")
    parser.add_argument("--copy", action="store_true", help="copy images instead of linking them")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="only the summary, not one line per skipped image")
    args = parser.parse_args(argv)
    setup_script_logging(args.quiet)
    if bool(args.captions) == bool(args.karpathy):
        parser.error("give exactly one of --captions or --karpathy")
    if args.karpathy and not args.split:
        parser.error("--karpathy needs --split")
    if not os.path.isdir(args.images):
        parser.error(f"--images {args.images} is not a folder")
    if args.captions:
        entries, missing, uncaptioned = from_coco_json(load_json(args.captions), args.images)
        if args.exclude_karpathy:
            held_out = karpathy_held_out_ids(args.exclude_karpathy)
            before = len(entries)
            entries = [e for e in entries if int(os.path.splitext(e[1])[0].split("_")[-1]) not in held_out]
            logger.info(f"excluded {before - len(entries)} Karpathy val/test images")
        elif "train2017" in os.path.basename(args.captions):
            logger.warning("warning: COCO 2017 train contains the Karpathy val/test images; a model trained on it "
                           "and evaluated on the Karpathy test split has seen its test images. Pass "
                           "--exclude-karpathy dataset_coco.json to drop them.")
    else:
        entries, missing = karpathy_entries(load_json(args.karpathy), args.split, args.images)
        uncaptioned = 0
    if args.one_caption:
        entries = [(path, name, captions[:1]) for path, name, captions in entries]
    return write_prepared(args.out, entries, args.copy, args.overwrite,
                          f"{missing} without a file, {uncaptioned} without captions")


if __name__ == "__main__":
    sys.exit(main())
