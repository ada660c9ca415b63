"""Write a dataset folder in the project's format (images/ + captions.csv) from (source image, name, captions).

Images are linked rather than copied where the filesystem allows (symlink, else hard link, else copy).
Used by the COCO / Flickr30k preparation scripts and the merge step, which also log through this module's
setup_script_logging.
"""
import csv
import logging
import os
import shutil

from utils.atomic_file import atomic_write
from utils.logs import setup_logging

logger = logging.getLogger(__name__)
# One warning per image or row left out; --quiet silences this logger alone, never the summary.
item_logger = logging.getLogger(f"{__name__}.items")


def setup_script_logging(quiet=False):
    """Information on stdout, warnings and errors on stderr (utils.logs); ``quiet`` drops item_logger's lines."""
    setup_logging("normal")
    item_logger.setLevel(logging.ERROR if quiet else logging.NOTSET)


def fail(message):
    """Log ``error: message`` and exit with status 2."""
    logger.error(f"error: {message}")
    raise SystemExit(2)


def place_image(source, target, mode):
    """Put ``source`` at ``target`` by symlink, hard link or copy (mode "link" tries them in that order); a
    ``source`` of bytes (an image held in memory) is written there."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.lexists(target):
        os.remove(target)
    if isinstance(source, bytes):
        atomic_write(target, lambda handle: handle.write(source))
        return "write"
    if mode == "link":
        try:
            os.symlink(os.path.abspath(source), target)
            return "symlink"
        except OSError:
            try:
                os.link(source, target)
                return "hardlink"
            except OSError:
                pass
    shutil.copy2(source, target)
    return "copy"


def write_dataset(out_dir, entries, mode="link", overwrite=False):
    """entries: [(source path or image bytes, file name under images/, [captions])]. Returns (images, captions)
    written.

    Refuses to write into an existing dataset unless ``overwrite``; captions.csv is written last, atomically.
    """
    csv_path = os.path.join(out_dir, "captions.csv")
    if os.path.exists(csv_path) and not overwrite:
        fail(f"{out_dir} already holds a dataset; pass --overwrite to replace it")
    images = os.path.join(out_dir, "images")
    os.makedirs(images, exist_ok=True)
    rows = []
    for source, name, captions in entries:
        place_image(source, os.path.join(images, name), mode)
        rows += [(name, caption) for caption in captions]
    def write_rows(handle):
        writer = csv.writer(handle)
        writer.writerow(["filename", "caption"])
        writer.writerows(rows)

    atomic_write(csv_path, write_rows, binary=False)
    return len(entries), len(rows)


def write_prepared(out_dir, entries, copy, overwrite, skipped):
    """The last step of prepare_coco.py and prepare_flickr30k.py: write ``entries`` (images copied with
    ``copy``, else linked) and log the summary, ``skipped`` saying what was left out. Returns the exit code."""
    if not entries:
        logger.error("error: no usable images")
        return 2
    images, captions = write_dataset(out_dir, entries, "copy" if copy else "link", overwrite)
    logger.info(f"wrote {out_dir}: {images} images, {captions} captions; skipped {skipped}")
    return 0


def clean_caption(text):
    return " ".join(str(text).split())
