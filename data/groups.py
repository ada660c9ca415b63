"""Image groups of a dataset folder: groups.csv beside captions.csv, with columns filename, group -- images
sharing a group value are put in one batch by ``batching: groups`` (e.g. an image and its twin with two
objects' places exchanged, product photos of one model in several colours), where the loss must tell them
apart; random batches seldom hold two of them.

scripts/make_demo_dataset.py --twins writes one for the shapes domain; any dataset may provide one.
"""
import csv
import logging
import os

from utils.errors import UserError

logger = logging.getLogger(__name__)
FILE_NAME = "groups.csv"


def read_groups(data_dir, table):
    """The groups of ``data_dir``'s groups.csv as lists of image rows of ``table`` (list[list[int]], each in
    first-seen order, groups in the order their first row appears); None without such a file.

    Rows naming an image the table lacks (skipped, or absent) are left out and counted; an image named twice
    keeps its first group; a file without the columns is a UserError naming it. Images the file does not name
    belong to no group.
    """
    path = os.path.join(data_dir, FILE_NAME)
    if not os.path.isfile(path):
        return None
    rows = {record.filename: index for index, record in enumerate(table.images)}
    members, placed, unmatched, repeated = {}, set(), 0, 0
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:  # a BOM from Excel
            reader = csv.DictReader(handle)
            reader.fieldnames = [name.strip().lower() for name in reader.fieldnames or ()]
            missing = {"filename", "group"} - set(reader.fieldnames)
            if missing:
                raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))} (expected filename, "
                                f"group)")
            for row in reader:
                image, group = rows.get((row["filename"] or "").strip()), (row["group"] or "").strip()
                if image is None or not group:
                    unmatched += 1
                    continue
                if image in placed:
                    repeated += 1
                    continue
                placed.add(image)
                members.setdefault(group, []).append(image)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: cannot be read ({error})") from None
    if unmatched:
        logger.warning(f"{path}: {unmatched} row(s) name an image the dataset does not have or no group; left out")
    if repeated:
        logger.warning(f"{path}: {repeated} image(s) named again under another row; each keeps its first group")
    return list(members.values())
