"""Write a dataset folder in the project's format (images/ + captions.csv) from (source image, name, captions).

Images are linked rather than copied where the filesystem allows (symlink, else hard link, else copy).
Used by the COCO / Flickr30k preparation scripts and the merge step.
"""
import csv
import os
import shutil
import sys


def place_image(source, target, mode):
    """Put ``source`` at ``target`` by symlink, hard link or copy (mode "link" tries them in that order)."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.lexists(target):
        os.remove(target)
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
    """entries: [(source path, file name under images/, [captions])]. Returns (images, captions) written.

    Refuses to write into an existing dataset unless ``overwrite``; captions.csv is written last, atomically.
    """
    csv_path = os.path.join(out_dir, "captions.csv")
    if os.path.exists(csv_path) and not overwrite:
        print(f"error: {out_dir} already holds a dataset; pass --overwrite to replace it", file=sys.stderr)
        raise SystemExit(2)
    images = os.path.join(out_dir, "images")
    os.makedirs(images, exist_ok=True)
    rows = []
    for source, name, captions in entries:
        place_image(source, os.path.join(images, name), mode)
        rows += [(name, caption) for caption in captions]
    temporary = csv_path + ".tmp"
    with open(temporary, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "caption"])
        writer.writerows(rows)
    os.replace(temporary, csv_path)
    return len(entries), len(rows)


def clean_caption(text):
    return " ".join(str(text).split())
