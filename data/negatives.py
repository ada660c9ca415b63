"""Compositional negatives of a dataset folder: negatives.csv beside captions.csv, with columns
filename, caption, negative[, swap] -- for a caption of an image, the same words with two attributes or
roles exchanged ("a red circle left of a blue square" / "a blue circle left of a red square").

scripts/make_demo_dataset.py writes it for the shapes domain; any dataset may provide one.
"""
import csv
import logging
import os
from dataclasses import dataclass

from utils.errors import UserError

logger = logging.getLogger(__name__)
FILE_NAME = "negatives.csv"


@dataclass
class Negative:
    image: int      # row of the image in the CaptionTable
    caption: str
    negative: str
    # what was exchanged (color, shape, size, position/places, position/relation); "" when the file does not say
    swap: str


def read_negatives(data_dir, table):
    """The Negatives of ``data_dir``'s negatives.csv for images in ``table``; None without such a file.

    Rows naming an image the table lacks (skipped, or absent) or a caption it does not have are left out and
    counted; a file without the columns is a UserError naming it.
    """
    path = os.path.join(data_dir, FILE_NAME)
    if not os.path.isfile(path):
        return None
    rows = {record.filename: index for index, record in enumerate(table.images)}
    captions = [set(record.captions) for record in table.images]
    negatives, unmatched = [], 0
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            # as captions.csv is read: header names in any case, captions with their whitespace collapsed
            reader.fieldnames = [name.strip().lower() for name in reader.fieldnames or ()]
            missing = {"filename", "caption", "negative"} - set(reader.fieldnames)
            if missing:
                raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))} (expected filename, "
                                f"caption, negative and optionally swap)")
            for row in reader:
                image = rows.get((row["filename"] or "").strip())
                caption, negative = (" ".join((row[key] or "").split()) for key in ("caption", "negative"))
                if image is None or caption not in captions[image] or not negative:
                    unmatched += 1
                    continue
                negatives.append(Negative(image, caption, negative, (row.get("swap") or "").strip()))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: cannot be read ({error})") from None
    if unmatched:
        logger.warning(f"{path}: {unmatched} row(s) name an image or caption the dataset does not have; left out")
    return negatives
