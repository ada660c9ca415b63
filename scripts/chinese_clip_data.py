"""Convert between Chinese-CLIP's dataset split and the project's dataset folder, both ways.

    python scripts/chinese_clip_data.py to-folder --split datasets/MUGE/valid --out datasets/muge-valid
    python scripts/chinese_clip_data.py from-folder --data datasets/valid --out datasets/mine --split valid

A Chinese-CLIP split is {split}_imgs.tsv (image_id<TAB>urlsafe base64 image) and {split}_texts.jsonl
({"text_id", "text", "image_ids"}); see data/cn_clip_layout.py. train.py, eval.py and index.py also read a split
directly (--valid-data datasets/MUGE/valid): converting is for other tools or for editing. to-folder writes
images/{image_id}.{format} and a captions.csv row per (text, image) pair; ids may be strings; bad lines are
reported and skipped; images no text names are left out (and counted). from-folder numbers images and texts
0, 1, ... in the folder's order (Chinese-CLIP's evaluation wants integer ids) and writes both files atomically.
"""
import argparse
import base64
import io
import json
import logging
import os
import sys

from PIL import Image

from data.caption_table import read_caption_table, safe_image_name
from data.cn_clip_layout import split_files
from data.sources import open_source
from scripts.dataset_writer import fail, setup_script_logging, write_dataset
from utils.atomic_file import atomic_write
from utils.errors import UserError

logger = logging.getLogger(__name__)
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


def image_extension(data):
    """The file extension of encoded image bytes, or None when they are no image PIL knows."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return EXTENSIONS.get(image.format)
    except (OSError, Image.DecompressionBombError):
        return None


def to_folder(split_value, out, overwrite):
    source = open_source(split_value)
    if not hasattr(source, "split"):
        fail(f"{split_value}: not a Chinese-CLIP split ({{split}}_imgs.tsv + {{split}}_texts.jsonl, or lmdb/{{split}})")
    split, captions = source.split(), source.captions_by_image()
    entries, problems, names = [], list(split.problems), set()
    for image_id, data in split.images.items():
        if not captions[image_id]:
            continue
        extension = image_extension(data)
        if extension is None:
            problems.append(f"image {image_id}: skipped: not an image PIL can read")
            continue
        name = f"{image_id}.{extension}"
        unsafe = safe_image_name(name)
        if not unsafe and ("/" in name or "\\" in name or name.startswith(".") or len(name) > 200):
            unsafe = "the id cannot be a file name"
        if not unsafe and name.lower() in names:  # one file on case-insensitive disks
            unsafe = "its file name differs from another only in case"
        if unsafe:
            problems.append(f"image {image_id}: skipped: {unsafe}")
            continue
        names.add(name.lower())
        entries.append((data, name, captions[image_id]))
    for problem in problems:
        logger.warning(problem)
    unnamed = sum(1 for image_captions in captions.values() if not image_captions)
    if not entries:
        fail(f"{split_value}: no image with a text to write")
    images, pairs = write_dataset(out, entries, overwrite=overwrite)
    logger.info(f"wrote {out}: {images} images, {pairs} captions; skipped {len(problems)} line(s) or image(s); "
                f"{unnamed} image(s) no text names left out")


def from_folder(data, out, split_name, overwrite):
    table = read_caption_table(data)
    images_path, texts_path = split_files(os.path.join(out, split_name))
    existing = [path for path in (images_path, texts_path) if os.path.exists(path)]
    if existing and not overwrite:
        fail(f"{existing[0]} exists; pass --overwrite to replace it")
    os.makedirs(out, exist_ok=True)
    texts = {}  # caption -> (text_id, [image ids]): a caption shared by images is one text naming all of them
    for image_id, record in enumerate(table.images):
        for caption in record.captions:
            texts.setdefault(caption, (len(texts), []))[1].append(image_id)

    def write_images(handle):
        for image_id, record in enumerate(table.images):
            with open(record.path, "rb") as image:
                handle.write(f"{image_id}\t".encode() + base64.urlsafe_b64encode(image.read()) + b"\n")

    def write_texts(handle):
        for caption, (text_id, image_ids) in texts.items():
            handle.write((json.dumps({"text_id": text_id, "text": caption, "image_ids": image_ids},
                                     ensure_ascii=False) + "\n").encode("utf-8"))

    try:
        atomic_write(images_path, write_images)
    except OSError as error:  # an image that went away or cannot be read
        fail(f"cannot read an image of {data}: {error}")
    atomic_write(texts_path, write_texts)
    logger.info(f"wrote {images_path} ({len(table.images)} images) and {texts_path} ({len(texts)} texts)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    to = commands.add_parser("to-folder", help="a Chinese-CLIP split -> images/ + captions.csv")
    to.add_argument("--split", required=True, help="the split's prefix (DIR/valid) or one of its two files")
    to.add_argument("--out", required=True)
    back = commands.add_parser("from-folder", help="images/ + captions.csv -> a Chinese-CLIP split")
    back.add_argument("--data", required=True, help="dataset folder: images/ + captions.csv")
    back.add_argument("--out", required=True, help="folder for {split}_imgs.tsv and {split}_texts.jsonl")
    back.add_argument("--split", default="valid", help="the split's name (train, valid, test)")
    for command in (to, back):
        command.add_argument("--overwrite", action="store_true")
        command.add_argument("--quiet", action="store_true", help="warnings only")
    args = parser.parse_args(argv)
    setup_script_logging(args.quiet)
    try:
        if args.command == "to-folder":
            to_folder(args.split, args.out, args.overwrite)
        else:
            from_folder(args.data, args.out, args.split, args.overwrite)
    except UserError as error:
        fail(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
